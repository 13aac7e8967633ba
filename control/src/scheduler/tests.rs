//! Whole decisions through [`Cluster::schedule`]: which node wins, and the exact error text.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{
    Cluster,
    testing::{container, node, node_from, pod, pod_from},
};

fn cluster(nodes: impl IntoIterator<Item = k8s_openapi::api::core::v1::Node>) -> Cluster {
    let mut c = Cluster::new();
    for n in nodes {
        c.upsert_node(n);
    }
    c
}

fn sized(name: &str, cpu: &str, memory: &str) -> k8s_openapi::api::core::v1::Node {
    node_from(name, json!({"status": {"allocatable": {"cpu": cpu, "memory": memory}}}))
}

fn needs(name: &str, cpu: &str, memory: &str) -> Pod {
    pod(name, json!({"containers": [container(cpu, memory)]}))
}

fn replica(name: &str, owner: &str) -> Pod {
    pod_from(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": owner, "controller": true}]},
        "spec": {"containers": [container("100m", "100Mi")]},
    }))
}

fn error(c: &Cluster, p: &Pod) -> String {
    c.schedule(p).expect_err("should not fit").to_string()
}

#[test]
fn picks_the_only_node_that_fits() {
    let c = cluster([sized("small", "1", "1Gi"), sized("big", "8", "16Gi")]);
    assert_eq!(c.schedule(&needs("p", "2", "1Gi")).expect("fits"), "big");
}

#[test]
fn error_counts_reasons_over_nodes() {
    let unreachable = node_from(
        "n3",
        json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
    );
    let c = cluster([sized("n1", "1", "8Gi"), sized("n2", "1", "8Gi"), unreachable]);
    let err = c.schedule(&needs("p", "2", "1Gi")).expect_err("no room");
    // Upstream sorts the printed "<count> <reason>" strings, so the count leads the order.
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 1 node(s) had untolerated taint \
         {node.kubernetes.io/unreachable: }, 2 Insufficient cpu."
    );
    assert_eq!(err.num_all_nodes(), 3);
    assert_eq!(err.reasons()[1], ("Insufficient cpu".to_string(), 2));
}

#[test]
fn a_node_short_of_several_resources_counts_each() {
    let c = cluster([sized("n1", "1", "1Gi"), sized("n2", "1", "8Gi")]);
    assert_eq!(
        error(&c, &needs("p", "2", "2Gi")),
        "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."
    );
}

#[test]
fn no_nodes_at_all() {
    let c = Cluster::new();
    let err = c.schedule(&needs("p", "1", "1Gi")).expect_err("no nodes");
    assert_eq!(err.to_string(), "no nodes available to schedule pods");
    assert_eq!(err.num_all_nodes(), 0);
}

#[test]
fn removed_nodes_are_not_candidates() {
    let mut c = cluster([node("n1"), node("n2")]);
    c.remove_node("n2");
    for i in 0..10 {
        assert_eq!(c.schedule(&needs(&format!("p{i}"), "1", "1Gi")).expect("fits"), "n1");
    }
}

#[test]
fn assumed_pods_take_room_until_forgotten() {
    let mut c = cluster([sized("n1", "1", "4Gi")]);
    let first = needs("first", "800m", "1Gi");
    let node = c.schedule(&first).expect("fits");
    c.assume(&node, &first);
    let second = needs("second", "800m", "1Gi");
    assert_eq!(error(&c, &second), "0/1 nodes are available: 1 Insufficient cpu.");
    assert!(c.forget("default", "first"));
    assert_eq!(c.schedule(&second).expect("room again"), "n1");
}

#[test]
fn prefers_the_least_allocated_node() {
    let mut c = cluster([node("busy"), node("idle")]);
    c.add_pod("busy", &needs("existing", "2", "4Gi"));
    assert_eq!(c.schedule(&needs("p", "500m", "512Mi")).expect("fits"), "idle");
}

#[test]
fn prefers_balanced_use() {
    // Both nodes have the same total free share after placement (LeastAllocated ties at 50),
    // but on `even` the pod leaves cpu and memory equally used.
    let mut c = cluster([node("even"), node("skewed")]);
    c.add_pod("skewed", &needs("cpu-heavy", "2", "0"));
    c.add_pod("even", &needs("mixed", "1", "2Gi"));
    assert_eq!(c.schedule(&needs("p", "1", "2Gi")).expect("fits"), "even");
}

#[test]
fn avoids_prefer_no_schedule_taints_unless_tolerated() {
    let tainted =
        node_from("tainted", json!({"spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}}));
    let c = cluster([tainted, node("clean")]);
    for i in 0..10 {
        assert_eq!(c.schedule(&needs(&format!("p{i}"), "1", "1Gi")).expect("fits"), "clean");
    }
    let chosen: BTreeSet<String> = (0..20)
        .map(|i| {
            let p = pod(
                &format!("t{i}"),
                json!({"containers": [container("1", "1Gi")],
                       "tolerations": [{"key": "spot", "operator": "Exists"}]}),
            );
            c.schedule(&p).expect("fits")
        })
        .collect();
    assert_eq!(chosen.len(), 2, "tolerated, the taint no longer matters: {chosen:?}");
}

#[test]
fn follows_preferred_node_affinity() {
    let ssd = node_from("ssd", json!({"metadata": {"labels": {"disk": "ssd"}}}));
    let mut c = cluster([ssd, node("hdd")]);
    // Even somewhat busier, the preferred node wins: 2 × 100 outweighs the resource scores.
    c.add_pod("ssd", &needs("existing", "1", "2Gi"));
    let p = pod(
        "p",
        json!({"containers": [container("500m", "1Gi")], "affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "preference": {
                "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}),
    );
    assert_eq!(c.schedule(&p).expect("fits"), "ssd");
}

#[test]
fn required_affinity_and_selector_filter() {
    let c = cluster([node_from("a1", json!({"metadata": {"labels": {"zone": "a"}}})), node("b1")]);
    let p = pod("p", json!({"containers": [], "nodeSelector": {"zone": "a"}}));
    assert_eq!(c.schedule(&p).expect("fits"), "a1");
    let p = pod("q", json!({"containers": [], "nodeSelector": {"zone": "c"}}));
    assert_eq!(
        error(&c, &p),
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn spreads_replicas_of_a_workload() {
    let mut c = cluster([node("n1"), node("n2")]);
    // Equal load on both nodes; only n1 has a replica of `web`.
    c.add_pod("n1", &replica("web-1", "web"));
    c.add_pod("n2", &replica("other-1", "other"));
    for i in 2..8 {
        assert_eq!(c.schedule(&replica(&format!("web-{i}"), "web")).expect("fits"), "n2");
    }
}

#[test]
fn spreading_fills_up_evenly_when_assuming() {
    let nodes = (0..4).map(|i| node(&format!("n{i}")));
    let mut c = cluster(nodes);
    for i in 0..40 {
        let p = replica(&format!("web-{i}"), "web");
        let node = c.schedule(&p).expect("fits");
        c.assume(&node, &p);
    }
    for n in c.nodes() {
        assert_eq!(n.pod_count(), 10, "{}", n.name());
    }
}

#[test]
fn ties_are_stable_per_pod_and_spread_across_pods() {
    let c = cluster((0..10).map(|i| node(&format!("n{i}"))));
    let p = needs("same", "1", "1Gi");
    let first = c.schedule(&p).expect("fits");
    assert_eq!(c.schedule(&p).expect("fits"), first, "same pod, same answer");
    let chosen: BTreeSet<String> =
        (0..100).map(|i| c.schedule(&needs(&format!("p{i}"), "1", "1Gi")).expect("fits")).collect();
    assert!(chosen.len() >= 8, "equal nodes share pods: {chosen:?}");
}

#[test]
fn host_ports_keep_pods_apart() {
    let mut c = cluster([node("n1"), node("n2")]);
    let web = |name: &str| {
        pod(
            name,
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
        )
    };
    for i in 0..2 {
        let p = web(&format!("w{i}"));
        let node = c.schedule(&p).expect("fits");
        c.assume(&node, &p);
    }
    assert_eq!(
        error(&c, &web("w2")),
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
    );
}

#[test]
fn cordoned_nodes_take_only_tolerating_pods() {
    let c = cluster([node_from("n1", json!({"spec": {"unschedulable": true}}))]);
    assert_eq!(error(&c, &needs("p", "1", "1Gi")), "0/1 nodes are available: 1 node(s) were unschedulable.");
    let ds = pod(
        "ds",
        json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
    );
    assert_eq!(c.schedule(&ds).expect("tolerates"), "n1");
}

fn daemon_pod(name: &str, node: &str) -> Pod {
    pod(
        name,
        json!({"containers": [container("100m", "100Mi")], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}}),
    )
}

#[test]
fn daemonset_pods_go_to_their_node() {
    let full = node_from("n2", json!({"status": {"allocatable": {"pods": "1"}}}));
    let mut c = cluster([node("n1"), full, node("n3")]);
    assert_eq!(c.schedule(&daemon_pod("ds-a", "n3")).expect("fits"), "n3");
    c.add_pod("n2", &needs("occupant", "0", "0"));
    assert_eq!(
        error(&c, &daemon_pod("ds-b", "n2")),
        "0/3 nodes are available: 1 Too many pods, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]."
    );
    assert_eq!(
        error(&c, &daemon_pod("ds-c", "gone")),
        "0/3 nodes are available: 3 node(s) didn't satisfy plugin(s) [NodeAffinity]."
    );
}

#[test]
fn conflicting_name_terms_fail_before_filtering() {
    let c = cluster([node("n1"), node("n2")]);
    let p = pod(
        "p",
        json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["n1"]},
                {"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}),
    );
    let err = c.schedule(&p).expect_err("conflict");
    assert_eq!(err.to_string(), "0/2 nodes are available: pod affinity terms conflict.");
    assert_eq!(err.reasons(), [("pod affinity terms conflict".to_string(), 2)]);
}

fn numbered(n: usize) -> Vec<k8s_openapi::api::core::v1::Node> {
    (0..n).map(|i| node(&format!("n{i:04}"))).collect()
}

fn index(name: &str) -> usize {
    name.trim_start_matches('n').parse().expect("numbered node")
}

#[test]
fn large_clusters_search_a_rotating_window() {
    // 200 nodes: upstream's 49% (98) is below the floor of 100, so each search stops after 100
    // feasible nodes, and the next one starts where it stopped.
    let c = cluster(numbered(200));
    let next_start = || c.next_start.load(std::sync::atomic::Ordering::Relaxed);
    let first = index(&c.schedule(&needs("a", "1", "1Gi")).expect("fits"));
    assert_eq!(next_start(), 100);
    let second = index(&c.schedule(&needs("b", "1", "1Gi")).expect("fits"));
    assert_eq!(next_start(), 0);
    let third = index(&c.schedule(&needs("c", "1", "1Gi")).expect("fits"));
    assert!(first < 100, "{first}");
    assert!(second >= 100, "{second}");
    assert!(third < 100, "{third}");
    // A pod that fits nowhere examines every node and leaves the start where it was.
    let _ = c.schedule(&needs("huge", "64", "1Gi")).expect_err("too big");
    assert_eq!(next_start(), 100);
}

#[test]
fn scoring_every_node_when_asked() {
    let mut c = cluster(numbered(200));
    c.set_percentage_of_nodes_to_score(100);
    // Every node but the last is busy: only a full search finds the idle one.
    for i in 0..199 {
        c.add_pod(&format!("n{i:04}"), &needs(&format!("busy{i}"), "2", "4Gi"));
    }
    for p in ["a", "b", "c"] {
        assert_eq!(c.schedule(&needs(p, "1", "1Gi")).expect("fits"), "n0199");
    }
}

#[test]
fn infeasible_pods_are_checked_against_every_node() {
    let mut nodes = numbered(300);
    nodes.push(node_from("gpu", json!({"status": {"allocatable": {"example.com/gpu": "1"}}})));
    let c = cluster(nodes);
    let p = pod(
        "p",
        json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"example.com/gpu": "2"}}}]}),
    );
    assert_eq!(error(&c, &p), "0/301 nodes are available: 301 Insufficient example.com/gpu.");
    let fits = pod(
        "q",
        json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"example.com/gpu": "1"}}}]}),
    );
    assert_eq!(c.schedule(&fits).expect("one gpu node"), "gpu");
}

#[test]
fn feasible_nodes_to_find_matches_upstream() {
    let mut c = Cluster::new();
    let cases = [(1, 1), (99, 99), (100, 100), (200, 100), (1000, 420), (5000, 500), (20_000, 1000)];
    for (nodes, want) in cases {
        assert_eq!(c.feasible_nodes_to_find(nodes), want, "{nodes} nodes");
    }
    c.set_percentage_of_nodes_to_score(30);
    assert_eq!(c.feasible_nodes_to_find(1000), 300);
    assert_eq!(c.feasible_nodes_to_find(200), 100);
}

#[test]
fn a_pod_without_spec_still_gets_an_answer() {
    let c = cluster([node("n1")]);
    let bare: Pod = pod_from(json!({"metadata": {"name": "bare", "namespace": "default"}}));
    assert_eq!(c.schedule(&bare).expect("fits"), "n1");
}

#[test]
fn the_test_helpers_build_what_they_claim() {
    let n = node("n1");
    let v: Value = serde_json::to_value(&n).expect("json");
    assert_eq!(v["status"]["allocatable"]["cpu"], "4");
    assert_eq!(v["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
}
