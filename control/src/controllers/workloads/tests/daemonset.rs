//! Single DaemonSet plans: which nodes get a pod, how daemon pods look, node-level fixes,
//! claiming and status. Rollouts are in `daemonset_rolling`.

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetStatus},
        core::v1::{Node, NodeSpec, Pod, Taint, Toleration},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use super::fixtures::{
    NS, controlled_by, created, deleting, labels, node, phase, pod, ready, selector, t, template,
};
use crate::controllers::workloads::daemonset::{
    CONTROLLER_REVISION_HASH_LABEL, DsPlan, Finished, plan, pod_for_node, template::target_node,
};

pub(super) const DS_UID: &str = "uid-ds";
const AGENT: &[(&str, &str)] = &[("app", "agent")];

/// DaemonSet `agent` selecting and templating `app=agent` with `image`, default strategy.
pub(super) fn daemon_set(image: &str) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some(NS.into()),
            uid: Some(DS_UID.into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: DaemonSetSpec {
            selector: selector(AGENT),
            template: template(AGENT, image),
            ..DaemonSetSpec::default()
        },
        status: None,
    }
}

pub(super) fn taint(key: &str, effect: &str) -> Taint {
    Taint { key: key.into(), effect: effect.into(), ..Taint::default() }
}

/// Node `name` with `pairs` as labels and `taints`.
pub(super) fn node_named(name: &str, pairs: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(pairs)),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec { taints: Some(taints), ..NodeSpec::default() }),
        status: None,
    }
}

/// A running, not ready pod of the DaemonSet bound to `on`, created at `t(0)`, with `hash`.
pub(super) fn daemon_pod(name: &str, on: &str, hash: &str) -> Pod {
    let mut p = controlled_by(node(pod(name, AGENT), on), "DaemonSet", DS_UID);
    p.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.into());
    p
}

pub(super) fn hash_of(ds: &DaemonSet) -> String {
    plan(ds, &[], &[], t(0), &|_| None).hash
}

pub(super) fn plan_for(ds: &DaemonSet, nodes: &[Node], pods: &[Pod]) -> DsPlan {
    let nodes: Vec<&Node> = nodes.iter().collect();
    let pods: Vec<&Pod> = pods.iter().collect();
    plan(ds, &nodes, &pods, t(100), &|_| None)
}

fn status(p: &DsPlan) -> &DaemonSetStatus {
    p.status.as_ref().expect("a status")
}

fn tolerations_of(pod: &Pod) -> Vec<(String, String, String)> {
    let list = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let s = |v: Option<String>| v.unwrap_or_default();
    list.into_iter().map(|t| (s(t.key), s(t.operator), s(t.effect))).collect()
}

#[test]
fn daemonset_runs_where_taints_are_tolerated_and_pods_come_pinned() {
    let ds = daemon_set("agent:1");
    let nodes = [
        node_named("n1", &[], vec![]),
        node_named("n2", &[], vec![taint("node.kubernetes.io/memory-pressure", "NoSchedule")]),
        node_named("n3", &[], vec![taint("dedicated", "NoSchedule")]),
    ];
    let p = plan_for(&ds, &nodes, &[]);
    assert_eq!(p.create, ["n1", "n2"], "memory pressure is tolerated, a foreign taint is not");
    assert!(p.delete.is_empty());
    assert_eq!(status(&p).desired_number_scheduled, 2);
    assert_eq!(status(&p).current_number_scheduled, 0);
    assert_eq!(status(&p).number_unavailable, Some(2));

    let pod = pod_for_node(&ds, "n2", &p.hash);
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some(NS));
    let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("DaemonSet", DS_UID, Some(true))
    );
    let pod_labels = pod.metadata.labels.clone().expect("labels");
    assert_eq!(pod_labels.get("app").map(String::as_str), Some("agent"));
    assert_eq!(pod_labels.get(CONTROLLER_REVISION_HASH_LABEL), Some(&p.hash));
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name, None, "the scheduler binds it");
    assert_eq!(target_node(&pod), Some("n2"));
    let exists = |key: &str, effect: &str| (key.to_owned(), "Exists".to_owned(), effect.to_owned());
    assert_eq!(
        tolerations_of(&pod),
        [
            exists("node.kubernetes.io/not-ready", "NoExecute"),
            exists("node.kubernetes.io/unreachable", "NoExecute"),
            exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
            exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
            exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
            exists("node.kubernetes.io/unschedulable", "NoSchedule"),
        ]
    );
}

#[test]
fn daemonset_pods_replace_required_affinity_and_limited_tolerations() {
    let mut ds = daemon_set("agent:1");
    let spec = ds.spec.template.spec.get_or_insert_with(Default::default);
    spec.host_network = Some(true);
    spec.tolerations = Some(vec![Toleration {
        key: Some("node.kubernetes.io/not-ready".into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(300),
        ..Toleration::default()
    }]);
    spec.affinity = serde_json::from_value(serde_json::json!({"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["general"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}]}}))
    .expect("affinity");
    let pod = pod_for_node(&ds, "n1", "h");
    let spec = pod.spec.expect("spec");
    let tolerations = spec.tolerations.expect("tolerations");
    assert_eq!(tolerations.len(), 7, "six for every daemon pod, network-unavailable for host network");
    assert_eq!(tolerations[0].toleration_seconds, None, "the user's time limit on not-ready is lifted");
    assert!(tolerations.iter().any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
    let affinity = spec.affinity.and_then(|a| a.node_affinity).expect("node affinity");
    let required = affinity.required_during_scheduling_ignored_during_execution.expect("required");
    assert_eq!(required.node_selector_terms.len(), 1);
    let fields = required.node_selector_terms[0].match_fields.clone().expect("fields");
    assert_eq!(
        (fields[0].key.as_str(), fields[0].operator.as_str(), fields[0].values.clone()),
        ("metadata.name", "In", Some(vec!["n1".to_owned()]))
    );
    assert!(required.node_selector_terms[0].match_expressions.is_none(), "the template's terms are replaced");
    assert_eq!(affinity.preferred_during_scheduling_ignored_during_execution.map(|p| p.len()), Some(1));
}

#[test]
fn daemonset_node_selector_decides_and_unwanted_pods_go() {
    let mut ds = daemon_set("agent:1");
    ds.spec.template.spec.get_or_insert_with(Default::default).node_selector =
        Some(labels(&[("pool", "general")]));
    let hash = hash_of(&ds);
    let nodes = [
        node_named("n1", &[("pool", "general")], vec![]),
        node_named("n2", &[("pool", "gpu")], vec![]),
        node_named("n3", &[("pool", "general")], vec![]),
    ];
    let pods = [daemon_pod("on-gpu", "n2", &hash), daemon_pod("on-n3", "n3", &hash)];
    let p = plan_for(&ds, &nodes, &pods);
    assert_eq!(p.create, ["n1"]);
    assert_eq!(p.delete, ["on-gpu"]);
    let s = status(&p);
    assert_eq!((s.desired_number_scheduled, s.current_number_scheduled, s.number_misscheduled), (2, 1, 1));
    assert_eq!(s.updated_number_scheduled, Some(1));
}

#[test]
fn daemonset_pods_stay_on_unreachable_nodes_but_leave_foreign_no_execute() {
    let ds = daemon_set("agent:1");
    let hash = hash_of(&ds);
    let unreachable = || {
        vec![
            taint("node.kubernetes.io/unreachable", "NoSchedule"),
            taint("node.kubernetes.io/unreachable", "NoExecute"),
        ]
    };
    let nodes = [
        node_named("lost", &[], unreachable()),
        node_named("lost-empty", &[], unreachable()),
        node_named("evicting", &[], vec![taint("maintenance", "NoExecute")]),
        node_named("no-execute-only", &[], vec![taint("node.kubernetes.io/unreachable", "NoExecute")]),
        node_named("cordon-only", &[], vec![taint("dedicated", "NoSchedule")]),
    ];
    let pods = [
        daemon_pod("on-lost", "lost", &hash),
        daemon_pod("on-evicting", "evicting", &hash),
        daemon_pod("on-cordon-only", "cordon-only", &hash),
    ];
    let p = plan_for(&ds, &nodes, &pods);
    assert_eq!(p.delete, ["on-evicting"], "an untolerated NoExecute taint evicts, NoSchedule does not");
    assert_eq!(p.create, ["no-execute-only"], "the added toleration admits it");
    let s = status(&p);
    assert_eq!(s.desired_number_scheduled, 1);
    assert_eq!(s.number_misscheduled, 3, "pods where a new one would not go");
}

#[test]
fn daemonset_keeps_the_oldest_pod_and_replaces_finished_ones_with_back_off() {
    let ds = daemon_set("agent:1");
    let hash = hash_of(&ds);
    let nodes = [node_named("n1", &[], vec![]), node_named("n2", &[], vec![]), node_named("n3", &[], vec![])];
    let pods = [
        created(daemon_pod("young", "n1", &hash), t(5)),
        created(daemon_pod("old", "n1", &hash), t(1)),
        phase(daemon_pod("crashed", "n2", &hash), "Failed"),
        phase(daemon_pod("done", "n3", &hash), "Succeeded"),
    ];
    let p = plan_for(&ds, &nodes, &pods);
    assert_eq!(p.delete, ["young", "crashed", "done"]);
    assert_eq!(
        p.finished,
        [
            Finished { pod: "crashed".into(), node: "n2".into(), failed: true },
            Finished { pod: "done".into(), node: "n3".into(), failed: false },
        ]
    );

    let node_refs: Vec<&Node> = nodes.iter().collect();
    let pod_refs: Vec<&Pod> = pods.iter().collect();
    let held = |node: &str| (node == "n2").then_some(t(130));
    let p = plan(&ds, &node_refs, &pod_refs, t(100), &held);
    assert_eq!(p.delete, ["young", "done"], "n2 is backing off");
    assert_eq!(p.next_check, Some(t(130)));
    let p = plan(&ds, &node_refs, &pod_refs, t(130), &held);
    assert!(p.delete.contains(&"crashed".to_owned()), "the back-off ran out");
}

#[test]
fn daemonset_deletes_pods_waiting_for_a_missing_node_only_while_unbound() {
    let ds = daemon_set("agent:1");
    let hash = hash_of(&ds);
    let mut waiting = pod_for_node(&ds, "gone", &hash);
    waiting.metadata.name = Some("waiting".into());
    waiting.metadata.uid = Some("uid-waiting".into());
    let pods = [waiting, daemon_pod("bound", "also-gone", &hash)];
    let p = plan_for(&ds, &[node_named("n1", &[], vec![])], &pods);
    assert_eq!(p.delete, ["waiting"], "pod GC collects bound pods on missing nodes");
    assert_eq!(p.create, ["n1"]);
}

#[test]
fn daemonset_claims_orphans_and_releases_relabelled_pods() {
    let ds = daemon_set("agent:1");
    let hash = hash_of(&ds);
    let mut stray = daemon_pod("stray", "n2", &hash);
    stray.metadata.labels = Some(labels(&[("app", "debug")]));
    let pods = [
        node(pod("orphan", AGENT), "n1"),
        stray,
        controlled_by(node(pod("other", AGENT), "n2"), "DaemonSet", "x"),
    ];
    let p = plan_for(&ds, &[node_named("n1", &[], vec![]), node_named("n2", &[], vec![])], &pods);
    assert_eq!(p.adopt, ["orphan"]);
    assert_eq!(p.release, ["stray"]);
    assert_eq!(p.create, ["n2"], "the orphan counts for n1, someone else's pod for nothing");
}

#[test]
fn daemonset_status_counts_each_nodes_oldest_pod() {
    let mut ds = daemon_set("agent:1");
    ds.metadata.generation = Some(4);
    ds.spec.min_ready_seconds = Some(10);
    let hash = hash_of(&ds);
    let nodes = [
        node_named("n1", &[], vec![]),
        node_named("n2", &[], vec![]),
        node_named("n3", &[], vec![]),
        node_named("n4", &[], vec![]),
    ];
    let pods = [
        ready(daemon_pod("available", "n1", &hash), t(0)),
        ready(daemon_pod("warming-up", "n2", &hash), t(95)),
        ready(daemon_pod("old-hash", "n3", "stale"), t(0)),
        deleting(daemon_pod("leaving", "n4", &hash)),
    ];
    let p = plan_for(&ds, &nodes, &pods);
    let s = status(&p);
    assert_eq!(s.desired_number_scheduled, 4);
    assert_eq!(s.current_number_scheduled, 4, "a pod being deleted still occupies its node");
    assert_eq!(s.number_ready, 3);
    assert_eq!(s.number_available, Some(2));
    assert_eq!(s.number_unavailable, Some(2));
    assert_eq!(s.updated_number_scheduled, Some(3));
    assert_eq!(s.observed_generation, Some(4));
    assert_eq!(p.next_check, Some(t(105)), "when warming-up has been ready for minReadySeconds");
    assert!(p.create.is_empty() && p.delete.is_empty(), "n4 waits for its pod to go");
}

#[test]
fn daemonset_being_deleted_or_selecting_everything_does_nothing() {
    let nodes = [node_named("n1", &[], vec![])];
    let mut deleting_ds = daemon_set("agent:1");
    deleting_ds.metadata.deletion_timestamp = Some(Time(t(0)));
    let p = plan_for(&deleting_ds, &nodes, &[]);
    assert!(p.create.is_empty() && p.status.is_none());
    let mut everything = daemon_set("agent:1");
    everything.spec.selector = Default::default();
    let p = plan_for(&everything, &nodes, &[node(pod("any", &[]), "n1")]);
    assert!(p.create.is_empty() && p.adopt.is_empty() && p.status.is_none());
}
