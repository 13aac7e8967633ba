//! DaemonSets: one pod per eligible node, following nodes as they come, change and go, and
//! rolling updates checked after every step, with the nodes' agents played by `World::kubelet`.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

const HASH_LABEL: &str = "controller-revision-hash";

fn daemon_set(spec_extra: Value) -> Value {
    let mut ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}}});
    if let (Some(spec), Some(extra)) = (ds["spec"].as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    ds
}

/// The DaemonSet's pods that are not being deleted.
fn live_pods(w: &World) -> Vec<Value> {
    let pods = w.list("Pod", Some("default")).into_iter();
    pods.filter(|p| p["metadata"]["labels"]["app"] == "agent" && p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn bound_nodes(w: &World) -> Vec<String> {
    let mut nodes: Vec<String> =
        live_pods(w).iter().filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned)).collect();
    nodes.sort();
    nodes
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// How many of `nodes` have no ready pod of the DaemonSet that is staying.
fn nodes_without_a_ready_pod(w: &World, nodes: &[&str]) -> usize {
    let pods = live_pods(w);
    let ready_on = |n: &str| pods.iter().any(|p| p["spec"]["nodeName"] == n && is_ready(p));
    nodes.iter().filter(|n| !ready_on(n)).count()
}

fn ds_status(w: &World) -> Value {
    w.get("DaemonSet", Some("default"), "agent").expect("daemon set")["status"].clone()
}

/// Settles the loops and runs the agents until neither has anything left to do, `check` after
/// every step; when idle the clock moves on a second, with every node in `alive` renewing its
/// Lease so no node goes unreachable meanwhile.
async fn converge(w: &mut World, alive: &[&str], mut check: impl FnMut(&World)) {
    for _ in 0..200 {
        w.settle().await;
        check(w);
        if w.kubelet().await == 0 {
            for n in alive {
                w.renew(n).await;
            }
            w.advance(Duration::from_secs(1)).await;
            check(w);
            if w.kubelet().await == 0 {
                return;
            }
        }
        check(w);
    }
    panic!("the loops and agents did not converge");
}

#[test]
fn a_daemon_set_runs_one_pinned_pod_per_eligible_node_and_follows_new_nodes() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("a").await;
        w.node("b").await;
        w.node_with("c", "4", json!({"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]}))
            .await;
        w.create(daemon_set(json!({}))).await;
        converge(&mut w, &["a", "b", "c"], |_| {}).await;

        assert_eq!(bound_nodes(&w), ["a", "b"], "one pod each, none on the untolerated taint");
        for pod in live_pods(&w) {
            let node = pod["spec"]["nodeName"].clone();
            let term = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0];
            assert_eq!((&term["key"], &term["values"][0]), (&json!("metadata.name"), &node), "pinned: {pod}");
            let owner = &pod["metadata"]["ownerReferences"][0];
            assert_eq!((&owner["kind"], &owner["controller"]), (&json!("DaemonSet"), &json!(true)));
            assert!(pod["metadata"]["labels"][HASH_LABEL].is_string());
            assert!(pod["metadata"]["generateName"].as_str().is_some_and(|g| g == "agent-"));
        }
        let ds = w.get("DaemonSet", Some("default"), "agent").expect("daemon set");
        let status = &ds["status"];
        for (field, want) in [
            ("desiredNumberScheduled", 2),
            ("currentNumberScheduled", 2),
            ("numberReady", 2),
            ("numberAvailable", 2),
            ("updatedNumberScheduled", 2),
            ("numberMisscheduled", 0),
            ("numberUnavailable", 0),
        ] {
            assert_eq!(status[field], want, "{field} in {status}");
        }
        assert_eq!(status["observedGeneration"], ds["metadata"]["generation"]);
        assert_eq!(w.events("agent", "SuccessfulCreate").len(), 2);
        // The API defaults that `kubectl rollout status ds` needs.
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );

        w.node("d").await;
        converge(&mut w, &["a", "b", "c", "d"], |_| {}).await;
        assert_eq!(bound_nodes(&w), ["a", "b", "d"]);
        assert_eq!(ds_status(&w)["desiredNumberScheduled"], 3);
        assert_eq!(ds_status(&w)["numberAvailable"], 3);
    });
}

#[test]
fn a_node_relabelled_out_of_the_node_selector_loses_its_pod() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        for n in ["a", "b"] {
            w.node(n).await;
            w.edit("Node", None, n, false, |node| node["metadata"]["labels"]["pool"] = json!("general")).await;
        }
        let selector = json!({"template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"nodeSelector": {"pool": "general"}, "containers": [{"name": "c", "image": "agent:1"}]}}});
        w.create(daemon_set(selector)).await;
        converge(&mut w, &["a", "b"], |_| {}).await;
        assert_eq!(bound_nodes(&w), ["a", "b"]);

        w.edit("Node", None, "b", false, |node| node["metadata"]["labels"]["pool"] = json!("gpu")).await;
        converge(&mut w, &["a", "b"], |_| {}).await;
        assert_eq!(bound_nodes(&w), ["a"]);
        assert_eq!(w.events("agent", "SuccessfulDelete").len(), 1);
        let status = ds_status(&w);
        assert_eq!((&status["desiredNumberScheduled"], &status["numberMisscheduled"]), (&json!(1), &json!(0)));
    });
}

#[test]
fn a_template_change_rolls_node_by_node_within_max_unavailable() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        let nodes = ["a", "b", "c", "d"];
        for n in nodes {
            w.node(n).await;
        }
        w.create(daemon_set(json!({"updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1}}})))
            .await;
        converge(&mut w, &nodes, |_| {}).await;
        let old_hash = live_pods(&w)[0]["metadata"]["labels"][HASH_LABEL].clone();
        assert_eq!(nodes_without_a_ready_pod(&w, &nodes), 0);

        w.edit("DaemonSet", Some("default"), "agent", false, |ds| {
            ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!("agent:2");
        })
        .await;
        let mut worst = 0;
        converge(&mut w, &nodes, |w| worst = worst.max(nodes_without_a_ready_pod(w, &nodes))).await;
        assert_eq!(
            worst, 1,
            "never more than maxUnavailable nodes without a ready pod, and the rollout moved"
        );

        let pods = live_pods(&w);
        assert_eq!(bound_nodes(&w), nodes);
        let new_hash = pods[0]["metadata"]["labels"][HASH_LABEL].clone();
        assert_ne!(new_hash, old_hash);
        assert!(pods.iter().all(|p| p["metadata"]["labels"][HASH_LABEL] == new_hash));
        assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "agent:2"));
        let ds = w.get("DaemonSet", Some("default"), "agent").expect("daemon set");
        let status = &ds["status"];
        // What `kubectl rollout status ds/agent` waits for.
        assert_eq!(ds["metadata"]["generation"], 2);
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["updatedNumberScheduled"], 4);
        assert_eq!(status["numberAvailable"], 4);
        assert_eq!(status["desiredNumberScheduled"], 4);
        assert_eq!(w.events("agent", "SuccessfulDelete").len(), 4);
    });
}

#[test]
fn an_unreachable_node_keeps_its_daemon_pod() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("a").await;
        w.node("b").await;
        w.create(daemon_set(json!({}))).await;
        converge(&mut w, &["a", "b"], |_| {}).await;
        assert_eq!(bound_nodes(&w), ["a", "b"]);
        let on_b = live_pods(&w).into_iter().find(|p| p["spec"]["nodeName"] == "b").expect("pod on b");
        let on_b = on_b["metadata"]["name"].as_str().expect("name").to_owned();

        // b's agent falls silent for good; a keeps renewing. Well past the grace period and the
        // default 300 s toleration of pods without their own.
        for _ in 0..40 {
            w.renew("a").await;
            w.advance(Duration::from_secs(10)).await;
        }
        let node = w.get("Node", None, "b").expect("node");
        let taints = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
        assert!(
            taints.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
        );
        let pod = w.get("Pod", Some("default"), &on_b).expect("the daemon pod stays");
        assert!(pod["metadata"]["deletionTimestamp"].is_null(), "not evicted: {pod}");
        assert_eq!(bound_nodes(&w), ["a", "b"], "and no second pod for b");
        let status = ds_status(&w);
        assert_eq!(status["desiredNumberScheduled"], 1, "an unreachable node takes no new daemon pods");
        assert_eq!(status["numberMisscheduled"], 1);
    });
}

#[test]
fn failed_daemon_pods_are_replaced_with_a_back_off() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("a").await;
        w.create(daemon_set(json!({}))).await;
        converge(&mut w, &["a"], |_| {}).await;
        let fail = |w: &World| live_pods(w)[0]["metadata"]["name"].as_str().expect("name").to_owned();
        let first = fail(&w);
        w.edit("Pod", Some("default"), &first, true, |p| p["status"]["phase"] = json!("Failed")).await;
        w.settle().await;
        let second = fail(&w);
        assert_ne!(first, second, "the failed pod is deleted and replaced at once");
        assert_eq!(w.events("agent", "FailedDaemonPod").len(), 1);

        // The replacement fails straight away (a kubelet rejecting it): the next one waits.
        w.edit("Pod", Some("default"), &second, true, |p| p["status"]["phase"] = json!("Failed")).await;
        w.settle().await;
        assert_eq!(fail(&w), second, "held back for a second");
        w.advance(Duration::from_secs(1)).await;
        assert_ne!(fail(&w), second, "then replaced");
        assert_eq!(w.events("agent", "FailedDaemonPod").len(), 2);
    });
}
