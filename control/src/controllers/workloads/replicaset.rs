//! The ReplicaSet controller's decision: which pods it owns, how many to create, which to
//! delete, and what its status says.
//!
//! The plan assumes `pods` is current. Upstream keeps "expectations" (creations and deletions it
//! issued but has not seen in its cache yet) and skips the replica count while any are
//! outstanding; a caller with a lagging cache must do the same, or it will create twice.

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{ReplicaSet, ReplicaSetStatus},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use super::{
    BURST_REPLICAS,
    owner::{self, Claim},
    pods, selector,
};

/// What one ReplicaSet should do now. Apply in field order (adopt, release, create, delete,
/// then write `status` to the status subresource); any failed write means "plan again later".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RsPlan {
    /// Active orphan pods it selects: add [`controller_ref`] to each pod's ownerReferences
    /// (guarded by the pod's resourceVersion, so a pod another controller just took is left).
    pub adopt: Vec<String>,
    /// Pods it controls that it no longer selects: remove its ownerReference (matched by uid).
    pub release: Vec<String>,
    /// The active pods it controls after adopting and releasing; `status.replicas` counts them.
    pub owned: Vec<String>,
    /// Pods to create, each from [`pod_from_template`]. At most [`BURST_REPLICAS`]. Upstream
    /// creates in slow-start batches (1, 2, 4, 8, ...) and stops at the first failure, so a
    /// broken template costs one failed request, not hundreds; the caller should do likewise.
    pub create: u32,
    /// Pods to delete, most expendable first (see [`pods::in_deletion_order`]); at most
    /// [`BURST_REPLICAS`].
    pub delete: Vec<String>,
    /// The status to write, counted from the pods as they are now (before this plan's changes).
    pub status: ReplicaSetStatus,
    /// When a ready pod will have been ready for `minReadySeconds`: plan again then, since
    /// `availableReplicas` changes with time alone.
    pub next_check: Option<Timestamp>,
}

/// Decides for `rs`, given every pod in its namespace.
///
/// Only active pods are claimed and counted; pods being deleted count neither toward replicas
/// nor for deletion (their replacements are created at once). A ReplicaSet being deleted neither
/// adopts, releases, creates nor deletes, but still reports status.
pub fn plan(rs: &ReplicaSet, pods: &[&Pod], now: Timestamp) -> RsPlan {
    let spec = &rs.spec;
    let selector = &spec.selector;
    let mut out = RsPlan::default();
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in pods.iter().copied().filter(|p| pods::is_active(p)) {
        let name = || pod.metadata.name.clone().unwrap_or_default();
        match owner::claim(&rs.metadata, selector, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                out.adopt.push(name());
                owned.push(pod);
            }
            Claim::Release => out.release.push(name()),
            Claim::Ignore => {}
        }
    }
    out.owned = owned.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();

    let desired = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let burst = BURST_REPLICAS as usize;
    if rs.metadata.deletion_timestamp.is_none() {
        if owned.len() < desired {
            out.create = u32::try_from((desired - owned.len()).min(burst)).unwrap_or(BURST_REPLICAS);
        } else if owned.len() > desired {
            let ranked = pods::in_deletion_order(&owned);
            let doomed = ranked.iter().take((owned.len() - desired).min(burst));
            out.delete = doomed.map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
        }
    }

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref());
    let template_labels = template_labels.and_then(|m| m.labels.as_ref());
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let terminating = pods.iter().filter(|p| {
        p.metadata.deletion_timestamp.is_some()
            && pods::may_be_running(p)
            && owner::is_controlled_by(&p.metadata, uid)
    });
    let count_owned = |f: &dyn Fn(&Pod) -> bool| count(owned.iter().filter(|p| f(p)).count());
    out.status = ReplicaSetStatus {
        replicas: count(owned.len()),
        fully_labeled_replicas: Some(count_owned(&|p| {
            selector::has_all(template_labels, p.metadata.labels.as_ref())
        })),
        ready_replicas: Some(count_owned(&pods::is_ready)),
        available_replicas: Some(count_owned(&|p| pods::is_available(p, min_ready, now))),
        terminating_replicas: Some(count(terminating.count())),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    out.next_check =
        owned.iter().map(|p| pods::next_available_check(p, min_ready, now)).fold(None, pods::earliest);
    out
}

/// `n` as a Kubernetes replica count.
pub(super) fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The ownerReference a ReplicaSet puts on the pods it creates or adopts.
pub fn controller_ref(rs: &ReplicaSet) -> OwnerReference {
    owner::controller_ref("apps/v1", "ReplicaSet", &rs.metadata)
}

/// A pod to create for `rs`: its template's labels, annotations, finalizers and spec, a
/// `generateName` of `<rs-name>-`, and [`controller_ref`].
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or_default())),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}
