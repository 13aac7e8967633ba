//! The RollingUpdate strategy (upstream's `rollingUpdate`), run only when the node-level fixes
//! have nothing left to do. Pods without the current `controller-revision-hash` are old.
//!
//! Without surge, old pods are deleted (and recreated by the node-level fixes once gone) so that
//! at most maxUnavailable nodes are without an available pod: a node counts as unavailable
//! while its pod is being replaced, while its new pod is not available yet, or when its old pod
//! is not available (such a pod is replaced at once, since it serves nothing anyway). A node
//! whose only pod is being deleted (e.g. by a user) counts, so replacements never pile up.
//!
//! With surge, a new pod is started next to an available old one on at most maxSurge nodes at a
//! time (at once where the old pod is not available), and the old one is deleted as soon as the
//! new one is available, so every node keeps an available pod throughout. An old pod on a node
//! that should no longer run one goes only while more nodes have an available pod than should.

use k8s_openapi::api::core::v1::Pod;

use super::{DsPlan, View};

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// The one new and the one old pod among `here` (those not being deleted); `None` when there
/// are more of either, which the node-level fixes sort out first.
fn new_and_old<'a>(view: &View<'_>, here: &[&'a Pod]) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for pod in here.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let slot = if view.is_updated(pod) { &mut new } else { &mut old };
        if slot.replace(pod).is_some() {
            return None;
        }
    }
    Some((new, old))
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Takes the first `room` of `candidates` (none when `room` is not positive).
fn first<T: Clone>(candidates: &[T], room: i32) -> &[T] {
    let room = usize::try_from(room.max(0)).unwrap_or(usize::MAX).min(candidates.len());
    &candidates[..room]
}

pub(super) fn plan(view: &View<'_>, out: &mut DsPlan) {
    if view.settings.allows_surge() {
        surge(view, out);
    } else {
        replace(view, out);
    }
}

/// maxSurge 0: delete old pods within maxUnavailable.
fn replace(view: &View<'_>, out: &mut DsPlan) {
    let max_unavailable = view.settings.max_unavailable;
    let mut unavailable = 0;
    let mut doomed: Vec<String> = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    for here in view.pods.values() {
        let Some((new, old)) = new_and_old(view, here) else {
            unavailable += 1;
            continue;
        };
        match (new, old) {
            (None, None) | (Some(_), Some(_)) => unavailable += 1,
            (Some(new), None) => unavailable += i32::from(!view.is_available(new)),
            (None, Some(old)) if !view.is_available(old) => {
                doomed.push(name(old));
                unavailable += 1;
            }
            (None, Some(_)) if unavailable >= max_unavailable => {}
            (None, Some(old)) => candidates.push(name(old)),
        }
    }
    out.delete.extend(doomed);
    out.delete.extend_from_slice(first(&candidates, max_unavailable - unavailable));
}

/// maxSurge > 0: start new pods next to old ones, delete old ones once replaced.
fn surge(view: &View<'_>, out: &mut DsPlan) {
    let max_surge = view.settings.max_surge;
    let (mut surging, mut available) = (0, 0);
    let mut doomed: Vec<String> = Vec::new();
    let mut misplaced: Vec<String> = Vec::new();
    let mut replace_now: Vec<String> = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    for (&node, here) in &view.pods {
        let Some((new, old)) = new_and_old(view, here) else {
            surging += 1;
            continue;
        };
        if old.or(new).is_some_and(|p| view.is_available(p)) {
            available += 1;
        }
        let should_run = view.should_run(node);
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) if !view.is_available(old) => match should_run {
                true => replace_now.push(node.to_owned()),
                false => doomed.push(name(old)),
            },
            (None, Some(old)) if !should_run => misplaced.push(name(old)),
            (None, Some(_)) if surging >= max_surge => {}
            (None, Some(_)) => candidates.push(node.to_owned()),
            (Some(new), Some(_)) if !view.is_available(new) => surging += 1,
            (Some(_), Some(old)) => doomed.push(name(old)),
        }
    }
    let desired = count(view.nodes.values().filter(|p| p.may_place()).count());
    doomed.extend_from_slice(first(&misplaced, available - desired));
    out.delete.extend(doomed);
    out.create.extend(replace_now);
    out.create.extend_from_slice(first(&candidates, max_surge - surging));
}
