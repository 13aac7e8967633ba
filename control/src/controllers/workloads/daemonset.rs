//! The DaemonSet controller's decision: which nodes should run one of its pods, which pods to
//! create, delete, adopt or release, how a template change rolls across the nodes, and what its
//! status says, as upstream's daemon controller would decide in one sync.
//!
//! Nodes are judged with the scheduler's own checks ([`crate::scheduler::placement`]) on the
//! template plus the tolerations every daemon pod gets (see [`template`]):
//! - *should run* (a pod is created if none is there): node name, nodeSelector and required node
//!   affinity match, and every `NoSchedule`/`NoExecute` taint is tolerated;
//! - *may continue* (a pod already there stays): the same, but only `NoExecute` taints count. So
//!   a node that becomes unreachable (tainted `unreachable:NoSchedule` and `:NoExecute`) keeps
//!   its daemon pod yet is no longer "desired", exactly as upstream counts it.
//!
//! The caller gives [`plan`] the DaemonSet, every node, every pod in its namespace and the
//! failed-pod back-off, then applies the plan in field order (adopt, release, create, delete,
//! status); a failed write just means "plan again", since every decision is made from the
//! current objects. It plans again when the DaemonSet, one of its pods or a node's labels or
//! taints change, and at [`DsPlan::next_check`].
//!
//! Where skiff differs: the `controller-revision-hash` is [`hash::pod_template_hash`] of the
//! template, not upstream's hash, and no ControllerRevisions are kept (so no `kubectl rollout
//! undo ds`); the deprecated `pod-template-generation` label is neither written nor read.

mod manage;
mod rolling;
mod settings;
mod status;
pub mod template;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetStatus},
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};

pub use self::settings::{Settings, Strategy, settings};
pub use self::template::{CONTROLLER_REVISION_HASH_LABEL, pod_for_node};
use super::{
    hash,
    owner::{self, Claim},
    pods, selector,
};
use crate::scheduler::{Placement, placement};

/// The most pods one DaemonSet plan creates, and the most it deletes (upstream's daemon
/// controller `burstReplicas`).
pub const BURST: usize = 250;

/// A finished pod the plan deletes so that it is replaced; the caller records it as an event
/// and, for a failed one, moves the node's back-off on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub pod: String,
    pub node: String,
    /// `Failed` (else `Succeeded`).
    pub failed: bool,
}

/// What one DaemonSet should do now. Apply in field order; see the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DsPlan {
    /// Orphan pods it selects: add [`controller_ref`] (guarded by the pod's resourceVersion).
    pub adopt: Vec<String>,
    /// Pods it controls that it no longer selects: remove its ownerReference.
    pub release: Vec<String>,
    /// Nodes to create a pod for, each from [`pod_for_node`] with [`DsPlan::hash`]; at most
    /// [`BURST`]. Create in slow-start batches (1, 2, 4, …) and stop at the first failure.
    pub create: Vec<String>,
    /// Pods to delete, by name; at most [`BURST`].
    pub delete: Vec<String>,
    /// The finished pods among [`DsPlan::delete`].
    pub finished: Vec<Finished>,
    /// The current template's `controller-revision-hash`.
    pub hash: String,
    /// The status to write when it differs; `None`: leave it (a DaemonSet being deleted, or one
    /// with an empty selector, which upstream refuses to act on).
    pub status: Option<DaemonSetStatus>,
    /// When to plan again if nothing changes first: a ready pod becoming available after
    /// `minReadySeconds`, or a node's failed-pod back-off running out.
    pub next_check: Option<Timestamp>,
}

/// What the plan's parts read: the DaemonSet's settings, its hash, each node's judgement and
/// its pods by the node they are for.
#[derive(Debug)]
struct View<'a> {
    hash: String,
    settings: Settings,
    now: Timestamp,
    /// Every node, by name.
    nodes: BTreeMap<&'a str, Placement>,
    /// Target node → the DaemonSet's pods for it, scheduled first, then oldest first (finished
    /// pods already being deleted are left out: nothing remains to do with them).
    pods: BTreeMap<&'a str, Vec<&'a Pod>>,
}

impl View<'_> {
    fn should_run(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(Placement::may_place)
    }

    fn is_available(&self, pod: &Pod) -> bool {
        pods::is_available(pod, self.settings.min_ready_seconds, self.now)
    }

    fn is_updated(&self, pod: &Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        labels.and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL)).is_some_and(|h| *h == self.hash)
    }
}

/// Decides for `ds`, given every node, every pod in its namespace, and `held`: for a node, the
/// time before which its failed pods may not be deleted yet (the caller's back-off).
pub fn plan(
    ds: &DaemonSet,
    nodes: &[&Node],
    pods: &[&Pod],
    now: Timestamp,
    held: &dyn Fn(&str) -> Option<Timestamp>,
) -> DsPlan {
    let mut out = DsPlan::default();
    let Some(spec) = ds.spec.template.spec.as_ref() else { return out };
    if ds.metadata.deletion_timestamp.is_some() || selector::is_empty(&ds.spec.selector) {
        return out;
    }
    out.hash = hash::pod_template_hash(&ds.spec.template, ds.status.as_ref().and_then(|s| s.collision_count));
    // Nodes are judged for the pod as it will be: the template with the daemon tolerations.
    let mut judged = spec.clone();
    template::add_daemon_tolerations(&mut judged);
    let nodes: BTreeMap<&str, Placement> =
        nodes.iter().filter_map(|n| Some((n.metadata.name.as_deref()?, placement(&judged, n)))).collect();
    let desired = nodes.values().filter(|p| p.may_place()).count();
    let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in pods.iter().copied() {
        let name = || pod.metadata.name.clone().unwrap_or_default();
        match owner::claim(&ds.metadata, &ds.spec.selector, &pod.metadata) {
            Claim::Owned => {}
            Claim::Adopt => out.adopt.push(name()),
            Claim::Release => {
                out.release.push(name());
                continue;
            }
            Claim::Ignore => continue,
        }
        if pod.metadata.deletion_timestamp.is_some() && !pods::may_be_running(pod) {
            continue;
        }
        if let Some(node) = template::target_node(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    for list in by_node.values_mut() {
        list.sort_by(|a, b| template::oldest_first(a, b));
    }
    let view = View { hash: out.hash.clone(), settings: settings(ds, desired), now, nodes, pods: by_node };

    manage::plan(&view, held, &mut out);
    // Like upstream's expectations: the rollout moves only once the node-level fixes are done,
    // so it never counts a node whose replacement is still being created as available.
    if out.create.is_empty() && out.delete.is_empty() && view.settings.strategy == Strategy::RollingUpdate {
        rolling::plan(&view, &mut out);
    }
    out.create.truncate(BURST);
    out.delete.truncate(BURST);
    out.finished.retain(|f| out.delete.contains(&f.pod));

    out.status = Some(status::of(ds, &view));
    let min_ready = view.settings.min_ready_seconds;
    let becoming_available =
        view.pods.values().flatten().map(|p| pods::next_available_check(p, min_ready, now));
    out.next_check = becoming_available.fold(out.next_check, pods::earliest);
    out
}

/// The ownerReference a DaemonSet puts on the pods it creates or adopts.
pub fn controller_ref(ds: &DaemonSet) -> OwnerReference {
    owner::controller_ref("apps/v1", "DaemonSet", &ds.metadata)
}
