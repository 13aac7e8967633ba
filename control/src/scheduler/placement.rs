//! Whether a pod's own constraints admit a node at all, room on it aside: the part of the
//! filters that depends only on the pod spec and the Node object. The DaemonSet controller asks
//! this for every node (upstream's `NodeShouldRunDaemonPod` runs the same NodeName, NodeAffinity
//! and TaintToleration checks), so it shares the scheduler's parsing and matching instead of
//! keeping a second copy that could drift from what the scheduler then does with the pod.

use k8s_openapi::api::core::v1::{Node, PodSpec};

use super::{
    affinity::Required,
    taints::{Effect, Tolerance, first_untolerated, first_untolerated_where, node_taints},
};

/// How a pod spec's constraints judge one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// `spec.nodeName` is unset or names this node (the NodeName filter).
    pub node_name: bool,
    /// `nodeSelector` and required node affinity match the node's labels and name (the
    /// NodeAffinity filter).
    pub node_affinity: bool,
    /// Every `NoSchedule` and `NoExecute` taint is tolerated (the TaintToleration filter): the
    /// pod may be placed here.
    pub schedulable_taints: bool,
    /// Every `NoExecute` taint is tolerated: a pod already here would not be evicted.
    pub execute_taints: bool,
}

impl Placement {
    /// The pod may be placed on the node (ignoring resources and ports).
    pub fn may_place(&self) -> bool {
        self.node_name && self.node_affinity && self.schedulable_taints
    }

    /// A pod already on the node may stay there.
    pub fn may_stay(&self) -> bool {
        self.node_name && self.node_affinity && self.execute_taints
    }
}

/// Judges `node` for a pod with `spec`. Cordoning (`spec.unschedulable`) is not looked at: the
/// node lifecycle marks it with the `node.kubernetes.io/unschedulable` taint, which is judged
/// like any other.
pub fn placement(spec: &PodSpec, node: &Node) -> Placement {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let no_labels = Default::default();
    let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    let taints = node_taints(node);
    let tolerations: Vec<Tolerance<'_>> = spec.tolerations.iter().flatten().map(Tolerance::parse).collect();
    Placement {
        node_name: spec.node_name.as_deref().is_none_or(|n| n.is_empty() || n == name),
        node_affinity: Required::parse(spec).matches(labels, name),
        schedulable_taints: first_untolerated(&taints, &tolerations).is_none(),
        execute_taints: first_untolerated_where(&taints, &tolerations, |e| e == Effect::NoExecute).is_none(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scheduler::testing::{node_from, pod};

    fn spec(value: serde_json::Value) -> PodSpec {
        pod("p", value).spec.expect("spec")
    }

    #[test]
    fn daemonset_placement_reads_name_selector_affinity_and_taints() {
        let node = node_from(
            "n1",
            json!({"metadata": {"labels": {"disk": "ssd"}}, "spec": {"taints": [
                {"key": "dedicated", "value": "infra", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
        );
        let plain = placement(&spec(json!({"containers": []})), &node);
        assert!(plain.node_name && plain.node_affinity);
        assert!(!plain.schedulable_taints && !plain.execute_taints);
        assert!(!plain.may_place() && !plain.may_stay());

        let stays = spec(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]}));
        let p = placement(&stays, &node);
        assert!(!p.may_place(), "the NoSchedule taint is not tolerated");
        assert!(p.may_stay(), "but no NoExecute taint evicts it");

        let everything = spec(json!({"containers": [], "tolerations": [{"operator": "Exists"}],
            "nodeSelector": {"disk": "ssd"}}));
        assert!(placement(&everything, &node).may_place());
        let wrong_disk = spec(json!({"containers": [], "tolerations": [{"operator": "Exists"}],
            "nodeSelector": {"disk": "hdd"}}));
        let p = placement(&wrong_disk, &node);
        assert!(!p.node_affinity && !p.may_place() && !p.may_stay());
        let elsewhere = spec(json!({"containers": [], "tolerations": [{"operator": "Exists"}],
            "nodeName": "n2"}));
        assert!(!placement(&elsewhere, &node).node_name);
        let affinity = spec(json!({"containers": [], "tolerations": [{"operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "disk", "operator": "DoesNotExist"}]}]}}}}));
        assert!(!placement(&affinity, &node).node_affinity);
    }
}
