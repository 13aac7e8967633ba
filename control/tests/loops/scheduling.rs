//! The scheduler loop: placement, spreading, unschedulable pods and their retry.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

#[test]
fn pods_of_a_workload_spread_over_fitting_nodes_and_are_bound_with_an_event() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        for n in ["a", "b", "c"] {
            w.node(n).await;
        }
        w.node_with(
            "tainted",
            "64",
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        )
        .await;
        for i in 0..6 {
            w.pending_pod(&format!("web-{i}"), json!({"app": "web"}), "100m").await;
        }
        w.settle().await;
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..6 {
            let pod = format!("web-{i}");
            *per_node.entry(w.node_of(&pod).expect("bound")).or_default() += 1;
            let bound = w.get("Pod", Some("default"), &pod).expect("pod");
            let scheduled = bound["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
                .cloned();
            assert_eq!(scheduled.expect("condition")["status"], "True");
            assert_eq!(w.events(&pod, "Scheduled").len(), 1);
        }
        assert_eq!(
            per_node,
            BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]),
            "spread, and never on the tainted node"
        );
    });
}

#[test]
fn a_pod_that_fits_nowhere_says_why_and_is_placed_once_a_node_with_room_appears() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node_with("small-1", "1", json!({})).await;
        w.node_with("small-2", "1", json!({})).await;
        w.node_with(
            "gpu",
            "16",
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        )
        .await;
        w.pending_pod("big", json!({"app": "big"}), "2").await;
        w.settle().await;
        assert_eq!(w.node_of("big"), None);
        let pod = w.get("Pod", Some("default"), "big").expect("pod");
        let cond = pod["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
            .cloned()
            .expect("condition");
        assert_eq!(cond["status"], "False");
        assert_eq!(cond["reason"], "Unschedulable");
        let message =
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu.";
        assert_eq!(cond["message"], message);
        let events = w.events("big", "FailedScheduling");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["message"], message);
        assert_eq!(events[0]["type"], "Warning");

        // Nothing changes: it waits parked (no retry storm) ...
        w.advance(Duration::from_secs(5)).await;
        assert_eq!(w.events("big", "FailedScheduling")[0]["count"], 1);
        // ... until a node with room arrives.
        w.node_with("large", "8", json!({})).await;
        w.settle().await;
        w.advance(Duration::from_secs(1)).await;
        assert_eq!(w.node_of("big").as_deref(), Some("large"));
    });
}

#[test]
fn bound_pods_use_up_a_node_and_a_finished_one_frees_its_room() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node_with("only", "1", json!({})).await;
        w.pending_pod("one", json!({"app": "a"}), "600m").await;
        w.pending_pod("two", json!({"app": "b"}), "600m").await;
        w.settle().await;
        let placed: Vec<bool> = ["one", "two"].iter().map(|p| w.node_of(p).is_some()).collect();
        assert_eq!(placed.iter().filter(|p| **p).count(), 1, "only one fits: {placed:?}");
        let (done, waiting) = if placed[0] { ("one", "two") } else { ("two", "one") };
        w.edit("Pod", Some("default"), done, true, |p| p["status"]["phase"] = json!("Succeeded")).await;
        w.settle().await;
        w.advance(Duration::from_secs(1)).await;
        assert_eq!(w.node_of(waiting).as_deref(), Some("only"));
    });
}
