//! What the scheduler takes from a Pod: what it uses on a node once placed ([`Usage`]), and,
//! for a pod being scheduled, its constraints parsed once ([`Wanted`]) so the per-node loop only
//! compares.

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use super::{
    affinity::{Preferred, Required},
    ports::{HostPort, host_ports},
    resources::{PodRequests, pod_requests},
    taints::Tolerance,
};

/// `namespace/name`: how the cluster snapshot names a pod.
pub(crate) fn pod_key(pod: &Pod) -> String {
    let meta = &pod.metadata;
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

/// The workload a pod belongs to, for spreading replicas across nodes: its controller
/// (ownerReference with `controller: true`, e.g. its ReplicaSet) by uid, or else its namespace
/// and full label set. A pod with neither is not spread.
///
/// Upstream's default topology spreading selects the pods of the Services, ReplicaSets and
/// StatefulSets that select this pod; the controller uid is the same group without a lookup.
pub(crate) fn workload_key(pod: &Pod) -> Option<String> {
    let meta = &pod.metadata;
    let owners = meta.owner_references.iter().flatten();
    if let Some(owner) = owners.into_iter().find(|o| o.controller == Some(true)) {
        return Some(format!("owner\n{}", owner.uid));
    }
    let labels = meta.labels.as_ref().filter(|l| !l.is_empty())?;
    let mut key = format!("labels\n{}", meta.namespace.as_deref().unwrap_or(""));
    for (k, v) in labels {
        key.push('\n');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    Some(key)
}

/// `spec.priority` (set by the API server's Priority admission; 0 when absent).
pub(crate) fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// What a pod takes from the node it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub requests: PodRequests,
    pub ports: Vec<HostPort>,
    /// `None` also for a terminating pod: upstream's spreading ignores those, as they are leaving.
    pub workload: Option<String>,
    /// `spec.priority`: who may preempt the pod, and whose nominations it must respect.
    pub priority: i32,
}

impl Usage {
    pub(crate) fn of(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else { return Self::default() };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        Self {
            requests: pod_requests(spec),
            ports: host_ports(spec),
            workload: if terminating { None } else { workload_key(pod) },
            priority: priority(pod),
        }
    }
}

/// FNV-1a: a small, stable hash (unlike `std`'s, which is seeded per process) for breaking
/// score ties the same way every time.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Mixes a pod's and a node's hash into the tie-breaker (splitmix64's finalizer): equal nodes
/// are ordered differently for each pod, so identical nodes share the load.
pub(crate) fn tie_breaker(pod_hash: u64, node_hash: u64) -> u64 {
    let mut z = (pod_hash ^ node_hash).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Everything one scheduling attempt needs from the pod, computed once.
#[derive(Debug)]
pub(crate) struct Wanted<'p> {
    pub usage: Usage,
    pub node_name: Option<&'p str>,
    pub tolerations: Vec<Tolerance<'p>>,
    pub required: Required<'p>,
    pub preferred: Preferred<'p>,
    pub tie_hash: u64,
    /// `namespace/name`, to tell the pod's own nomination from others'.
    pub key: String,
}

impl<'p> Wanted<'p> {
    pub(crate) fn new(pod: &'p Pod, spec: &'p PodSpec) -> Self {
        let uid = pod.metadata.uid.as_deref().filter(|u| !u.is_empty());
        let key = pod_key(pod);
        let tie_hash = match uid {
            Some(uid) => stable_hash(uid.as_bytes()),
            None => stable_hash(key.as_bytes()),
        };
        Self {
            usage: Usage {
                requests: pod_requests(spec),
                ports: host_ports(spec),
                workload: workload_key(pod),
                priority: spec.priority.unwrap_or(0),
            },
            node_name: spec.node_name.as_deref().filter(|n| !n.is_empty()),
            tolerations: spec.tolerations.iter().flatten().map(Tolerance::parse).collect(),
            required: Required::parse(spec),
            preferred: Preferred::parse(spec),
            tie_hash,
            key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::pod_from;
    use serde_json::json;

    #[test]
    fn workload_is_the_controller_else_the_labels() {
        let owned = pod_from(json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "x"},
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Thing", "name": "t", "uid": "not-controller"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true},
        ]}}));
        assert_eq!(workload_key(&owned).as_deref(), Some("owner\nrs-uid"));
        let labelled =
            pod_from(json!({"metadata": {"name": "b", "namespace": "ns", "labels": {"b": "2", "a": "1"}}}));
        assert_eq!(workload_key(&labelled).as_deref(), Some("labels\nns\na=1\nb=2"));
        let other_ns =
            pod_from(json!({"metadata": {"name": "b", "namespace": "ns2", "labels": {"b": "2", "a": "1"}}}));
        assert_ne!(workload_key(&labelled), workload_key(&other_ns));
        let bare = pod_from(json!({"metadata": {"name": "c", "namespace": "ns", "labels": {}}}));
        assert_eq!(workload_key(&bare), None);
    }

    #[test]
    fn terminating_pods_do_not_count_for_spreading() {
        let leaving = pod_from(json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "x"},
            "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"containers": []}}));
        assert_eq!(Usage::of(&leaving).workload, None);
    }

    #[test]
    fn tie_breaker_depends_on_both_sides() {
        let (a, b) = (stable_hash(b"pod-a"), stable_hash(b"pod-b"));
        let (n1, n2) = (stable_hash(b"node-1"), stable_hash(b"node-2"));
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(tie_breaker(a, n1), tie_breaker(b, n1));
        assert_ne!(tie_breaker(a, n1), tie_breaker(a, n2));
        assert_eq!(tie_breaker(a, n1), tie_breaker(a, n1));
    }
}
