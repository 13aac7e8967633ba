//! The scheduler's snapshot of the cluster: every node with the totals of the pods on it, kept
//! up to date one event at a time by the caller, so scheduling a pod never re-reads the world.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicUsize},
};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::{
    node::NodeInfo,
    nominated::Nominee,
    pod::{Usage, pod_key},
};

/// A pod the snapshot counts on a node.
#[derive(Debug)]
pub(super) struct Placed {
    pub slot: usize,
    /// Placed by [`Cluster::assume`] and not yet seen bound.
    pub assumed: bool,
    pub usage: Usage,
}

/// Every node and every pod placed on one, with the per-node totals scheduling reads.
///
/// Nodes live in slots (a vector, reused after removal) so that the per-pod loop walks a plain
/// slice and per-node data is found by index, not by name.
#[derive(Debug, Default)]
pub struct Cluster {
    pub(super) slots: Vec<Option<NodeInfo>>,
    by_name: HashMap<String, usize>,
    free: Vec<usize>,
    /// Slots whose Node object is present: the nodes a pod can go to.
    pub(super) live_nodes: usize,
    pub(super) pods: HashMap<String, Placed>,
    /// Pods waiting for room preemption makes on a node (see `nominated.rs`).
    pub(super) nominated: HashMap<String, Nominee>,
    /// Priority → how many placed pods have it: preemption is skipped at once for a pod no
    /// placed pod is less important than (the usual case of equal priorities).
    pub(super) priorities: std::collections::BTreeMap<i32, usize>,
    /// Workload key → slot → how many of its pods are there (for spreading).
    pub(super) workloads: HashMap<String, HashMap<usize, u32>>,
    /// Where the next search for feasible nodes starts (see `schedule`).
    pub(super) next_start: AtomicUsize,
    /// 0: upstream's adaptive percentage; otherwise 1..=100.
    pub(super) percentage_of_nodes_to_score: u32,
}

impl Cluster {
    pub fn new() -> Self {
        Self::default()
    }

    /// Like kube-scheduler's `percentageOfNodesToScore`: once this share of the nodes (at least
    /// 100) is found feasible, the search stops and only those are scored. 0 (the default) is
    /// upstream's adaptive `max(5, 50 - nodes/125)` percent; 100 examines every node.
    pub fn set_percentage_of_nodes_to_score(&mut self, percentage: u32) {
        self.percentage_of_nodes_to_score = percentage.min(100);
    }

    /// Adds a node or takes its new version (labels, taints, allocatable, cordon). A Node
    /// without a name is ignored: nothing could be bound to it.
    pub fn upsert_node(&mut self, node: impl Into<Arc<Node>>) {
        let node = node.into();
        let Some(name) = node.metadata.name.as_deref().filter(|n| !n.is_empty()) else { return };
        let slot = self.slot_for(name);
        let info = self.slots[slot].as_mut().expect("slot_for returns an occupied slot");
        if info.node().is_none() {
            self.live_nodes += 1;
        }
        info.set_node(node);
    }

    /// Removes a node; true if it was there. Pods still recorded on it keep counting and count
    /// again if a node of that name returns, until they are removed themselves.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(&slot) = self.by_name.get(name) else { return false };
        let Some(info) = self.slots[slot].as_mut() else { return false };
        if info.node().is_none() {
            return false;
        }
        info.clear_node();
        self.live_nodes -= 1;
        self.release_if_unused(slot);
        true
    }

    /// Records `pod` as bound to `node` (a watch showed it with `spec.nodeName`), replacing any
    /// earlier record of it: an assumption is thereby confirmed (or moved, if the pod ended up
    /// elsewhere).
    pub fn add_pod(&mut self, node: &str, pod: &Pod) {
        self.place(node, pod, false);
    }

    /// Counts `pod` on `node` before its binding is written, so the next pods see the room it
    /// takes. Undo with [`forget`](Self::forget) if the binding fails; [`add_pod`](Self::add_pod)
    /// (or [`observe_pod`](Self::observe_pod)) confirms it.
    pub fn assume(&mut self, node: &str, pod: &Pod) {
        self.place(node, pod, true);
    }

    /// Drops an assumption whose binding failed; true if one was dropped. A pod already seen
    /// bound stays: the watch has the last word.
    pub fn forget(&mut self, namespace: &str, name: &str) -> bool {
        let key = format!("{namespace}/{name}");
        if !self.pods.get(&key).is_some_and(|p| p.assumed) {
            return false;
        }
        self.remove_key(&key)
    }

    /// Stops counting a pod (deleted); true if it was counted. Removing an unknown pod is fine.
    pub fn remove_pod(&mut self, namespace: &str, name: &str) -> bool {
        self.remove_key(&format!("{namespace}/{name}"))
    }

    /// Applies one watched version of a pod: a bound pod is counted on its node; a finished one
    /// (`Succeeded`/`Failed`) no longer uses anything and is removed; a pending one changes
    /// nothing (so an assumption made for it survives the pod's own status updates).
    pub fn observe_pod(&mut self, pod: &Pod) {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            self.remove_key(&pod_key(pod));
            return;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        if let Some(node) = node {
            self.add_pod(node, pod);
        }
    }

    /// The node called `name`, also one only known from the pods on it (then without a Node).
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).and_then(|&slot| self.slots[slot].as_ref())
    }

    /// Every node that exists (has a Node object), in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.slots.iter().flatten().filter(|n| n.node().is_some())
    }

    /// How many nodes exist.
    pub fn num_nodes(&self) -> usize {
        self.live_nodes
    }

    /// The node a pod is counted on, and whether that is only assumed so far.
    pub fn pod_placement(&self, namespace: &str, name: &str) -> Option<(&str, bool)> {
        let placed = self.pods.get(&format!("{namespace}/{name}"))?;
        let info = self.slots[placed.slot].as_ref()?;
        Some((info.name(), placed.assumed))
    }

    /// How many pods are counted, assumed ones included.
    pub fn num_pods(&self) -> usize {
        self.pods.len()
    }

    /// The node at `slot` if it can take pods.
    pub(crate) fn live(&self, slot: usize) -> Option<&NodeInfo> {
        self.slots[slot].as_ref().filter(|n| n.node().is_some())
    }

    pub(crate) fn slot_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn place(&mut self, node: &str, pod: &Pod, assumed: bool) {
        let key = pod_key(pod);
        let usage = Usage::of(pod);
        // A bound pod's status changes often; when nothing the scheduler counts changed, only
        // the assumed flag may.
        if let Some(placed) = self.pods.get_mut(&key) {
            let same_node = self.slots[placed.slot].as_ref().is_some_and(|n| n.name() == node);
            if same_node && placed.usage == usage {
                placed.assumed = assumed;
                return;
            }
        }
        self.remove_key(&key);
        let slot = self.slot_for(node);
        self.slots[slot].as_mut().expect("slot_for returns an occupied slot").add(&usage);
        if let Some(workload) = &usage.workload {
            *self.workloads.entry(workload.clone()).or_default().entry(slot).or_default() += 1;
        }
        *self.priorities.entry(usage.priority).or_default() += 1;
        self.pods.insert(key, Placed { slot, assumed, usage });
    }

    fn remove_key(&mut self, key: &str) -> bool {
        let Some(placed) = self.pods.remove(key) else { return false };
        if let Some(info) = self.slots[placed.slot].as_mut() {
            info.remove(&placed.usage);
        }
        if let Some(count) = self.priorities.get_mut(&placed.usage.priority) {
            *count -= 1;
            if *count == 0 {
                self.priorities.remove(&placed.usage.priority);
            }
        }
        if let Some(workload) = &placed.usage.workload
            && let Some(per_node) = self.workloads.get_mut(workload)
        {
            if let Some(count) = per_node.get_mut(&placed.slot) {
                *count -= 1;
                if *count == 0 {
                    per_node.remove(&placed.slot);
                }
            }
            if per_node.is_empty() {
                self.workloads.remove(workload);
            }
        }
        self.release_if_unused(placed.slot);
        true
    }

    /// The slot of node `name`, made (without a Node object) if there is none.
    fn slot_for(&mut self, name: &str) -> usize {
        if let Some(&slot) = self.by_name.get(name) {
            return slot;
        }
        let info = Some(NodeInfo::new(name));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = info;
                slot
            }
            None => {
                self.slots.push(info);
                self.slots.len() - 1
            }
        };
        self.by_name.insert(name.to_string(), slot);
        slot
    }

    /// Frees a slot with neither a Node nor pods.
    fn release_if_unused(&mut self, slot: usize) {
        let unused = self.slots[slot].as_ref().is_some_and(|n| n.node().is_none() && n.pod_count() == 0);
        if unused && let Some(info) = self.slots[slot].take() {
            self.by_name.remove(info.name());
            self.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{container, node, pod, pod_from};
    use serde_json::json;

    fn web(name: &str) -> Pod {
        pod(
            name,
            json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        )
    }

    #[test]
    fn nodes_come_and_go() {
        let mut c = Cluster::new();
        c.upsert_node(node("n1"));
        c.upsert_node(node("n2"));
        c.upsert_node(node("n1"));
        assert_eq!(c.num_nodes(), 2);
        assert_eq!(c.node("n1").expect("n1").allocatable().milli_cpu, 4000);
        assert!(c.remove_node("n1"));
        assert!(!c.remove_node("n1"));
        assert!(c.node("n1").is_none());
        assert_eq!(c.nodes().map(NodeInfo::name).collect::<Vec<_>>(), ["n2"]);
        assert_eq!(c.num_nodes(), 1);
        c.upsert_node(k8s_openapi::api::core::v1::Node::default());
        assert_eq!(c.num_nodes(), 1, "a nameless node is ignored");
    }

    #[test]
    fn pods_add_up_and_remove_idempotently() {
        let mut c = Cluster::new();
        c.upsert_node(node("n1"));
        c.add_pod("n1", &web("a"));
        c.add_pod("n1", &web("b"));
        let n1 = c.node("n1").expect("n1");
        assert_eq!((n1.pod_count(), n1.requested().milli_cpu, n1.requested().memory), (2, 1000, 2 << 30));
        assert_eq!(n1.used_ports().len(), 2);
        assert!(c.remove_pod("default", "a"));
        assert!(!c.remove_pod("default", "a"));
        assert!(!c.remove_pod("default", "never"));
        let n1 = c.node("n1").expect("n1");
        assert_eq!((n1.pod_count(), n1.requested().milli_cpu, n1.used_ports().len()), (1, 500, 1));
    }

    #[test]
    fn re_adding_a_pod_replaces_it() {
        let mut c = Cluster::new();
        c.upsert_node(node("n1"));
        c.upsert_node(node("n2"));
        c.add_pod("n1", &web("a"));
        c.add_pod("n1", &web("a"));
        assert_eq!(c.node("n1").expect("n1").pod_count(), 1, "same pod twice counts once");
        c.add_pod("n2", &web("a"));
        assert_eq!(c.node("n1").expect("n1").pod_count(), 0);
        assert_eq!(c.node("n2").expect("n2").requested().milli_cpu, 500);
        let bigger = pod("a", json!({"containers": [container("2", "1Gi")]}));
        c.add_pod("n2", &bigger);
        assert_eq!(c.node("n2").expect("n2").requested().milli_cpu, 2000);
        assert_eq!(c.num_pods(), 1);
    }

    #[test]
    fn assume_then_confirm_or_forget() {
        let mut c = Cluster::new();
        c.upsert_node(node("n1"));
        c.assume("n1", &web("a"));
        assert_eq!(c.pod_placement("default", "a"), Some(("n1", true)));
        assert_eq!(c.node("n1").expect("n1").pod_count(), 1);
        assert!(c.forget("default", "a"));
        assert_eq!(c.node("n1").expect("n1").pod_count(), 0);
        assert!(!c.forget("default", "a"));

        c.assume("n1", &web("b"));
        c.add_pod("n1", &web("b"));
        assert_eq!(c.pod_placement("default", "b"), Some(("n1", false)));
        assert!(!c.forget("default", "b"), "a confirmed pod is not forgotten");
        assert_eq!(c.node("n1").expect("n1").pod_count(), 1);
    }

    #[test]
    fn observe_follows_the_pod_lifecycle() {
        let mut c = Cluster::new();
        c.upsert_node(node("n1"));
        let pending = web("a");
        c.assume("n1", &pending);
        c.observe_pod(&pending);
        assert_eq!(
            c.pod_placement("default", "a"),
            Some(("n1", true)),
            "pending updates keep the assumption"
        );
        let mut bound = web("a");
        bound.spec.as_mut().expect("spec").node_name = Some("n1".into());
        c.observe_pod(&bound);
        assert_eq!(c.pod_placement("default", "a"), Some(("n1", false)));
        let mut done = bound.clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).expect("status"));
        c.observe_pod(&done);
        assert_eq!(c.pod_placement("default", "a"), None);
        assert_eq!(c.node("n1").expect("n1").pod_count(), 0);
    }

    #[test]
    fn pods_on_unknown_or_removed_nodes_keep_counting() {
        let mut c = Cluster::new();
        c.add_pod("later", &web("a"));
        assert_eq!(c.num_nodes(), 0);
        assert_eq!(c.nodes().count(), 0);
        c.upsert_node(node("later"));
        assert_eq!(c.node("later").expect("later").pod_count(), 1);
        assert!(c.remove_node("later"));
        assert_eq!(c.node("later").expect("ghost").pod_count(), 1);
        c.upsert_node(node("later"));
        assert_eq!(c.node("later").expect("back").requested().milli_cpu, 500);
        assert!(c.remove_node("later"));
        assert!(c.remove_pod("default", "a"));
        assert!(c.node("later").is_none(), "an empty ghost is dropped");
        c.upsert_node(node("reuses-slot"));
        assert_eq!(c.slots.len(), 1);
    }

    #[test]
    fn workload_counts_follow_pods() {
        let mut c = Cluster::new();
        c.upsert_node(node("n1"));
        let replica = |name: &str| {
            pod_from(json!({"metadata": {"name": name, "namespace": "default", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": true}]},
                "spec": {"containers": []}}))
        };
        c.add_pod("n1", &replica("r1"));
        c.add_pod("n1", &replica("r2"));
        let slot = c.slot_of("n1").expect("slot");
        assert_eq!(c.workloads["owner\nrs1"][&slot], 2);
        c.remove_pod("default", "r1");
        assert_eq!(c.workloads["owner\nrs1"][&slot], 1);
        c.remove_pod("default", "r2");
        assert!(c.workloads.is_empty());
    }
}
