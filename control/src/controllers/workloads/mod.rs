//! What the ReplicaSet, Deployment and DaemonSet controllers decide, as pure functions of the
//! objects they look at and the current time. Nothing here reads the store or writes to it: the
//! caller (the controller framework) lists the inputs, calls [`replicaset::plan`],
//! [`deployment::plan`] or [`daemonset::plan`], and carries out what comes back. Time is an
//! argument (`now`) so that callers and tests can use a fake clock; where waiting is involved, a
//! plan says when to look again (`next_check`).
//!
//! The decisions follow upstream kube-controller-manager closely, because kubectl relies on them:
//! `rollout status` reads the Deployment's status and conditions, `rollout history` and
//! `rollout undo` read the ReplicaSets' revision and change-cause annotations, and
//! `rollout restart` / `scale` just edit the Deployment. Where skiff differs, the item says so.

pub mod daemonset;
pub mod deployment;
pub mod hash;
pub mod owner;
pub mod pods;
pub mod replicaset;
pub mod selector;

#[cfg(test)]
mod tests;

use jiff::{SignedDuration, Timestamp};

/// Label on a Deployment's ReplicaSets (and in their selector and template) naming the template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// A ReplicaSet's place in its Deployment's rollout history; also on the Deployment (current).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet served before a rollback made it current again.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last sized; a mismatch on an active
/// ReplicaSet is how a scaling event is told apart from a rollout.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last sized; the base of proportional scaling.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// What `kubectl rollout history` shows per revision; copied from Deployment to ReplicaSet.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
/// `kubectl apply`'s record of the applied object: describes the Deployment, never copied.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Rollback request of the old extensions API: never copied to ReplicaSets.
pub const DEPRECATED_ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";

/// The most pods one ReplicaSet plan creates or deletes (upstream's `burstReplicas`), so that a
/// huge `replicas` does not turn into one enormous burst of writes.
pub const BURST_REPLICAS: u32 = 500;

/// `t` plus `seconds`, saturating at the end of time.
fn after(t: Timestamp, seconds: i32) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(seconds.into())).unwrap_or(Timestamp::MAX)
}
