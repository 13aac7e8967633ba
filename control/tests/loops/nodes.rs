//! Node lifecycle: unreachable nodes are marked and tainted, their pods evicted on time.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

fn condition<'a>(object: &'a Value, kind: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

fn taints(node: &Value) -> Vec<String> {
    let list = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|t| format!("{}:{}", t["key"].as_str().unwrap_or(""), t["effect"].as_str().unwrap_or("")))
        .collect()
}

fn deleting(world: &World, pod: &str) -> bool {
    world.get("Pod", Some("default"), pod).is_none_or(|p| p["metadata"]["deletionTimestamp"].is_string())
}

#[test]
fn a_silent_node_goes_unknown_is_tainted_and_its_pods_are_evicted_after_their_toleration() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("a").await;
        w.pod_on("plain", "a", json!({})).await;
        w.pod_on(
            "brief",
            "a",
            json!({"tolerations": [{"key": "node.kubernetes.io/unreachable",
            "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}),
        )
        .await;
        w.pod_on("forever", "a", json!({"tolerations": [{"operator": "Exists"}]})).await;
        w.settle().await;

        // Within the 40 s grace nothing happens, as long as the agent keeps renewing.
        w.advance(Duration::from_secs(30)).await;
        w.renew("a").await;
        w.advance(Duration::from_secs(30)).await;
        let node = w.get("Node", None, "a").expect("node");
        assert_eq!(condition(&node, "Ready")["status"], "True");
        assert!(taints(&node).is_empty());

        // 41 s of silence.
        w.advance(Duration::from_secs(11)).await;
        let node = w.get("Node", None, "a").expect("node");
        assert_eq!(condition(&node, "Ready")["status"], "Unknown");
        assert_eq!(condition(&node, "Ready")["reason"], "NodeStatusUnknown");
        assert_eq!(
            taints(&node),
            ["node.kubernetes.io/unreachable:NoSchedule", "node.kubernetes.io/unreachable:NoExecute"]
        );
        assert_eq!(w.events("a", "NodeNotReady").len(), 1);
        for pod in ["plain", "brief", "forever"] {
            let pod = w.get("Pod", Some("default"), pod).expect("pod");
            assert_eq!(
                condition(&pod, "Ready")["status"],
                "False",
                "pods on an unreachable node are not ready"
            );
        }
        assert!(!deleting(&w, "brief"));

        w.advance(Duration::from_secs(10)).await;
        assert!(deleting(&w, "brief"), "evicted after its 10 s toleration");
        assert!(!deleting(&w, "plain"));
        assert_eq!(w.events("brief", "TaintManagerEviction").len(), 1);

        w.advance(Duration::from_secs(289)).await;
        assert!(!deleting(&w, "plain"), "the default toleration is 300 s");
        w.advance(Duration::from_secs(1)).await;
        assert!(deleting(&w, "plain"));
        w.advance(Duration::from_secs(3600)).await;
        assert!(!deleting(&w, "forever"), "a toleration without seconds tolerates for good");
    });
}

#[test]
fn a_node_heard_from_again_loses_its_taints() {
    runtime().block_on(async {
        let mut w =
            World::new(Config { node_monitor_grace: Duration::from_secs(5), ..Config::default() }).await;
        w.node("a").await;
        w.advance(Duration::from_secs(6)).await;
        assert_eq!(taints(&w.get("Node", None, "a").expect("node")).len(), 2);
        // The agent comes back: it renews its Lease and reports Ready.
        w.renew("a").await;
        let now = w.now();
        w.edit("Node", None, "a", true, |n| {
            n["status"]["conditions"] =
                json!([{"type": "Ready", "status": "True", "lastHeartbeatTime": now}]);
        })
        .await;
        w.settle().await;
        assert!(taints(&w.get("Node", None, "a").expect("node")).is_empty());
        // An agent reporting NotReady gets the not-ready taints.
        w.edit("Node", None, "a", true, |n| n["status"]["conditions"][0]["status"] = json!("False")).await;
        w.settle().await;
        assert_eq!(
            taints(&w.get("Node", None, "a").expect("node")),
            ["node.kubernetes.io/not-ready:NoSchedule", "node.kubernetes.io/not-ready:NoExecute"]
        );
    });
}

#[test]
fn pods_of_a_node_missing_for_the_grace_period_are_deleted() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("gone").await;
        w.pod_on("p", "gone", json!({})).await;
        w.settle().await;
        let key = "/registry/core/nodes/gone";
        skiff_control::store::Store::delete(&w.server.store, key, None).await.expect("delete node");
        w.settle().await;
        w.advance(std::time::Duration::from_secs(39)).await;
        assert!(w.get("Pod", Some("default"), "p").is_some(), "a node may be on its way back");
        w.advance(std::time::Duration::from_secs(1)).await;
        assert!(w.get("Pod", Some("default"), "p").is_none(), "deleted without grace after 40 s");
    });
}
