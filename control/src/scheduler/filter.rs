//! The filters: can this pod run on this node at all? They run in upstream's default-profile
//! order, and a node is rejected for the first one that fails (only NodeResourcesFit reports
//! several reasons at once, one per short resource), exactly what upstream counts in its
//! `FitError`.

use super::{
    fit_error::{Reason, Tally},
    node::NodeInfo,
    pod::Wanted,
    ports::any_conflict,
    taints::{first_untolerated, tolerates_unschedulable},
};

/// NodeUnschedulable: a cordoned node takes only pods tolerating
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub(crate) fn node_unschedulable(node: &NodeInfo, pod: &Wanted<'_>) -> Option<Reason<'static>> {
    (node.unschedulable() && !tolerates_unschedulable(&pod.tolerations)).then_some(Reason::Unschedulable)
}

/// NodeName: a pod that names its node fits only there.
pub(crate) fn node_name(node: &NodeInfo, pod: &Wanted<'_>) -> Option<Reason<'static>> {
    pod.node_name.is_some_and(|n| n != node.name()).then_some(Reason::NodeName)
}

/// TaintToleration: every `NoSchedule`/`NoExecute` taint must be tolerated. Node conditions
/// (not-ready, unreachable, pressure) reach the scheduler only as such taints, as upstream.
pub(crate) fn taint_toleration<'n>(node: &'n NodeInfo, pod: &Wanted<'_>) -> Option<Reason<'n>> {
    first_untolerated(node.taints(), &pod.tolerations)
        .map(|t| Reason::UntoleratedTaint { key: &t.key, value: &t.value })
}

/// NodeAffinity: `nodeSelector` and required node affinity.
pub(crate) fn node_affinity(node: &NodeInfo, pod: &Wanted<'_>) -> Option<Reason<'static>> {
    let required = &pod.required;
    (required.is_some() && !required.matches(node.labels(), node.name())).then_some(Reason::NodeAffinity)
}

/// NodePorts: every wanted host port must be free.
pub(crate) fn node_ports(node: &NodeInfo, pod: &Wanted<'_>) -> Option<Reason<'static>> {
    any_conflict(&pod.usage.ports, node.used_ports()).then_some(Reason::NodePorts)
}

/// NodeResourcesFit: room for one more pod, and for each requested resource
/// `request <= allocatable - requested`. Reports every shortfall; returns whether the pod fits.
/// Resources the pod does not request never reject it, even on an overcommitted node. Reasons
/// borrow only from the pod, so `node` may be a short-lived what-if copy.
pub(crate) fn node_resources_fit<'a>(
    node: &NodeInfo,
    pod: &'a Wanted<'_>,
    mut report: impl FnMut(Reason<'a>),
) -> bool {
    let mut fits = true;
    let mut short = |reason| {
        fits = false;
        report(reason);
    };
    let pods = i64::try_from(node.pod_count()).unwrap_or(i64::MAX);
    if pods.saturating_add(1) > node.allowed_pods() {
        short(Reason::TooManyPods);
    }
    let want = &pod.usage.requests.fit;
    let (have, used) = (node.allocatable(), node.requested());
    let left = |have: i64, used: i64| have.saturating_sub(used);
    if want.milli_cpu > 0 && want.milli_cpu > left(have.milli_cpu, used.milli_cpu) {
        short(Reason::Insufficient("cpu"));
    }
    if want.memory > 0 && want.memory > left(have.memory, used.memory) {
        short(Reason::Insufficient("memory"));
    }
    if want.ephemeral_storage > 0
        && want.ephemeral_storage > left(have.ephemeral_storage, used.ephemeral_storage)
    {
        short(Reason::Insufficient("ephemeral-storage"));
    }
    for (name, amount) in &want.scalars {
        if *amount > 0 && *amount > left(have.scalar(name), used.scalar(name)) {
            short(Reason::Insufficient(name));
        }
    }
    fits
}

/// Runs every filter on one node, counting the rejection reasons; true when the pod fits.
pub(crate) fn passes<'a>(node: &'a NodeInfo, pod: &'a Wanted<'_>, tally: &mut Tally<'a>) -> bool {
    let rejection = node_unschedulable(node, pod)
        .or_else(|| node_name(node, pod))
        .or_else(|| taint_toleration(node, pod))
        .or_else(|| node_affinity(node, pod))
        .or_else(|| node_ports(node, pod));
    match rejection {
        Some(reason) => {
            tally.add(reason);
            false
        }
        None => node_resources_fit(node, pod, |reason| tally.add(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{container, node_from, node_info, pod, wanted};
    use serde_json::json;

    fn reasons(node: &NodeInfo, p: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
        let w = wanted(p);
        let mut tally = Tally::default();
        let fits = passes(node, &w, &mut tally);
        let err = tally.into_error(1);
        assert_eq!(fits, err.reasons().is_empty());
        err.reasons().iter().map(|(r, _)| r.clone()).collect()
    }

    fn plain_pod() -> k8s_openapi::api::core::v1::Pod {
        pod("p", json!({"containers": [container("100m", "100Mi")]}))
    }

    #[test]
    fn unschedulable_unless_tolerated() {
        let cordoned = node_info(node_from("n1", json!({"spec": {"unschedulable": true}})));
        assert_eq!(reasons(&cordoned, &plain_pod()), ["node(s) were unschedulable"]);
        let tolerant = pod(
            "p",
            json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert!(reasons(&cordoned, &tolerant).is_empty());
    }

    #[test]
    fn node_name_must_match() {
        let n = node_info(node_from("n1", json!({})));
        let elsewhere = pod("p", json!({"nodeName": "n2", "containers": []}));
        assert_eq!(reasons(&n, &elsewhere), ["node(s) didn't match the requested node name"]);
        let here = pod("p", json!({"nodeName": "n1", "containers": []}));
        assert!(reasons(&n, &here).is_empty());
    }

    #[test]
    fn no_schedule_and_no_execute_taints_reject() {
        let n = node_info(node_from(
            "n1",
            json!({"spec": {"taints": [
                {"key": "soft", "effect": "PreferNoSchedule"},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            ]}}),
        ));
        assert_eq!(
            reasons(&n, &plain_pod()),
            ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"]
        );
        let half = pod(
            "p",
            json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]}),
        );
        assert_eq!(reasons(&n, &half), ["node(s) had untolerated taint {dedicated: db}"]);
        let all = pod(
            "p",
            json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
            {"key": "dedicated", "value": "db"}]}),
        );
        assert!(reasons(&n, &all).is_empty(), "PreferNoSchedule never rejects");
    }

    #[test]
    fn node_selector_and_affinity() {
        let n = node_info(node_from("n1", json!({"metadata": {"labels": {"disk": "ssd"}}})));
        let hdd = pod("p", json!({"containers": [], "nodeSelector": {"disk": "hdd"}}));
        assert_eq!(reasons(&n, &hdd), ["node(s) didn't match Pod's node affinity/selector"]);
        let ssd = pod("p", json!({"containers": [], "nodeSelector": {"disk": "ssd"}}));
        assert!(reasons(&n, &ssd).is_empty());
        let affinity = pod(
            "p",
            json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]}}}}),
        );
        assert_eq!(reasons(&n, &affinity), ["node(s) didn't match Pod's node affinity/selector"]);
    }

    #[test]
    fn host_ports_must_be_free() {
        let mut n = node_info(node_from("n1", json!({})));
        let web = pod(
            "web",
            json!({"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
        );
        assert!(reasons(&n, &web).is_empty());
        n.add(&wanted(&web).usage);
        assert_eq!(reasons(&n, &web), ["node(s) didn't have free ports for the requested pod ports"]);
        let udp = pod(
            "dns",
            json!({"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": 80, "protocol": "UDP"}]}]}),
        );
        assert!(reasons(&n, &udp).is_empty());
    }

    #[test]
    fn resources_report_every_shortfall() {
        let mut n = node_info(node_from(
            "n1",
            json!({"status": {"allocatable": {
            "cpu": "1", "memory": "1Gi", "ephemeral-storage": "10Gi", "pods": "2", "example.com/foo": "1"}}}),
        ));
        let big = pod(
            "big",
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {
            "cpu": "1500m", "memory": "2Gi", "ephemeral-storage": "11Gi", "example.com/foo": "2"}}}]}),
        );
        assert_eq!(
            reasons(&n, &big),
            [
                "Insufficient cpu",
                "Insufficient ephemeral-storage",
                "Insufficient example.com/foo",
                "Insufficient memory"
            ]
        );
        let small = pod("small", json!({"containers": [container("600m", "600Mi")]}));
        assert!(reasons(&n, &small).is_empty());
        n.add(&wanted(&small).usage);
        assert_eq!(reasons(&n, &small), ["Insufficient cpu", "Insufficient memory"]);
        let empty = pod("empty", json!({"containers": [{"name": "c", "image": "i"}]}));
        assert!(reasons(&n, &empty).is_empty(), "no requests fit even a busy node");
        n.add(&wanted(&empty).usage);
        assert_eq!(reasons(&n, &empty), ["Too many pods"]);
        assert_eq!(reasons(&n, &small), ["Insufficient cpu", "Insufficient memory", "Too many pods"]);
    }

    #[test]
    fn exactly_full_still_fits() {
        let n = node_info(node_from(
            "n1",
            json!({"status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "1"}}}),
        ));
        let exact = pod("p", json!({"containers": [container("1", "1Gi")]}));
        assert!(reasons(&n, &exact).is_empty());
    }

    #[test]
    fn first_failing_filter_wins() {
        let n = node_info(node_from(
            "n1",
            json!({"spec": {"unschedulable": true,
            "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "0", "pods": "0"}}}),
        ));
        assert_eq!(reasons(&n, &plain_pod()), ["node(s) were unschedulable"]);
    }
}
