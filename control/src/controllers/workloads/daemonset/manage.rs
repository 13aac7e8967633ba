//! Node-level fixes (upstream's `manage` / `podsShouldBeOnNode`): a pod for every node that
//! should run one and has none, no pods where they may not continue, finished pods deleted so
//! they are replaced, at most one pod per node (two, old and new, while surging), and pods
//! still waiting for a node that no longer exists deleted (no one else would: pod GC only
//! collects pods bound to missing nodes).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::{DsPlan, Finished, View};
use crate::controllers::workloads::pods;

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

/// Adds the node-level creations and deletions to `out`. `held` gives, per node, the time before
/// which its failed pods may not be deleted (the back-off against a kubelet that keeps
/// rejecting them); a held pod sets [`DsPlan::next_check`].
pub(super) fn plan(view: &View<'_>, held: &dyn Fn(&str) -> Option<Timestamp>, out: &mut DsPlan) {
    for (&node, placement) in &view.nodes {
        let here = view.pods.get(node).map(Vec::as_slice);
        match here {
            None if placement.may_place() => out.create.push(node.to_owned()),
            None => {}
            Some(here) if placement.may_stay() => {
                fix_node(view, node, placement.may_place(), here, held, out)
            }
            Some(here) => {
                let live = here.iter().filter(|p| p.metadata.deletion_timestamp.is_none());
                out.delete.extend(live.map(|p| name(p)));
            }
        }
    }
    let unbound_elsewhere = view
        .pods
        .iter()
        .filter(|(node, _)| !view.nodes.contains_key(**node))
        .flat_map(|(_, here)| here.iter())
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty));
    out.delete.extend(unbound_elsewhere.map(|p| name(p)));
}

/// A node whose pods may stay: deletes finished pods and the extras. `here` is oldest first.
fn fix_node(
    view: &View<'_>,
    node: &str,
    should_run: bool,
    here: &[&Pod],
    held: &dyn Fn(&str) -> Option<Timestamp>,
    out: &mut DsPlan,
) {
    let mut running: Vec<&Pod> = Vec::new();
    for pod in here.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        match phase(pod) {
            "Failed" => match held(node).filter(|until| *until > view.now) {
                Some(until) => out.next_check = pods::earliest(out.next_check, Some(until)),
                None => finish(pod, node, true, out),
            },
            "Succeeded" => finish(pod, node, false, out),
            _ => running.push(pod),
        }
    }
    if !view.settings.allows_surge() {
        out.delete.extend(running.iter().skip(1).map(|p| name(p)));
        return;
    }
    if running.is_empty() {
        if should_run {
            out.create.push(node.to_owned());
        }
        return;
    }
    // Surging: keep the oldest new pod and the oldest old one; the old one goes once it is not
    // ready any more or the new one is available.
    let (mut oldest_new, mut oldest_old) = (None, None);
    for pod in running {
        let slot = if view.is_updated(pod) { &mut oldest_new } else { &mut oldest_old };
        match slot {
            None => *slot = Some(pod),
            Some(_) => out.delete.push(name(pod)),
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old)
        && (!pods::is_ready(old) || view.is_available(new))
    {
        out.delete.push(name(old));
    }
}

fn finish(pod: &Pod, node: &str, failed: bool, out: &mut DsPlan) {
    out.delete.push(name(pod));
    out.finished.push(Finished { pod: name(pod), node: node.to_owned(), failed });
}
