//! The scheduler loop with priorities: queue order, preemption of exactly the lower-priority
//! pods needed, the nominated node kept for the preemptor, and pods that never preempt.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

/// A PriorityClass `name` of `value` (`policy`: its preemptionPolicy, when given).
async fn class(w: &World, name: &str, value: i64, policy: Option<&str>) {
    let mut class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name}, "value": value});
    if let Some(policy) = policy {
        class["preemptionPolicy"] = json!(policy);
    }
    w.create(class).await;
}

/// A pending pod requesting `cpu`, of PriorityClass `class` (none: priority 0).
async fn pod(w: &World, name: &str, class: Option<&str>, cpu: &str) -> Value {
    let mut spec =
        json!({"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]});
    if let Some(class) = class {
        spec["priorityClassName"] = json!(class);
    }
    w.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "spec": spec}))
        .await
}

fn pod_state(w: &World, name: &str) -> Value {
    w.get("Pod", Some("default"), name).unwrap_or_else(|| panic!("pod {name} exists"))
}

fn terminating(w: &World, name: &str) -> bool {
    pod_state(w, name)["metadata"]["deletionTimestamp"].is_string()
}

fn condition(pod: &Value, kind: &str) -> Option<Value> {
    pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind).cloned()
}

#[test]
fn pods_due_together_are_decided_by_priority() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        class(&w, "high", 1000, None).await;
        w.node_with("only", "1", json!({})).await;
        pod(&w, "old-low", None, "1").await;
        pod(&w, "young-high", Some("high"), "1").await;
        pod(&w, "young-low", None, "1").await;
        w.settle().await;
        assert_eq!(w.node_of("young-high").as_deref(), Some("only"));
        assert_eq!(w.node_of("old-low"), None);
        assert_eq!(w.node_of("young-low"), None);
        assert!(!terminating(&w, "young-high"), "lower pods do not preempt");
    });
}

#[test]
fn a_high_priority_pod_preempts_just_enough_lower_pods_and_gets_their_room() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        class(&w, "mid", 500, None).await;
        class(&w, "high", 1000, None).await;
        w.node_with("n1", "3", json!({})).await;
        pod(&w, "low-a", None, "1").await;
        pod(&w, "low-b", None, "1").await;
        pod(&w, "mid", Some("mid"), "1").await;
        w.settle().await;
        w.kubelet().await;
        w.settle().await;
        for p in ["low-a", "low-b", "mid"] {
            assert_eq!(w.node_of(p).as_deref(), Some("n1"), "{p} runs");
        }

        pod(&w, "urgent", Some("high"), "1").await;
        w.settle().await;
        let urgent = pod_state(&w, "urgent");
        assert_eq!(urgent["spec"]["priority"], 1000);
        assert_eq!(urgent["status"]["nominatedNodeName"], "n1");
        assert_eq!(urgent["spec"]["nodeName"], Value::Null, "not bound while the victim leaves");
        // One pod is enough; of the two equally unimportant ones the later name goes.
        assert!(terminating(&w, "low-b"));
        assert!(!terminating(&w, "low-a") && !terminating(&w, "mid"));
        let target = condition(&pod_state(&w, "low-b"), "DisruptionTarget").expect("DisruptionTarget");
        assert_eq!(target["reason"], "PreemptionByScheduler");
        assert_eq!(target["message"], "default-scheduler: preempting to accommodate a higher priority pod");
        let preempted = w.events("low-b", "Preempted");
        assert_eq!(preempted.len(), 1);
        let uid = urgent["metadata"]["uid"].as_str().expect("uid");
        assert_eq!(preempted[0]["message"], format!("Preempted by pod {uid} on node n1"));

        // A lower-priority pod arriving meanwhile must not take the room being made.
        pod(&w, "sneaky", None, "1").await;
        w.settle().await;
        assert!(w.events("low-a", "Preempted").is_empty(), "nothing else preempted");
        // The node's agent finishes the victim; the preemptor binds there after its back-off.
        w.kubelet().await;
        w.settle().await;
        assert!(w.get("Pod", Some("default"), "low-b").is_none(), "the victim is gone");
        // Second by second, so the lower pod's shorter back-off lets it try first.
        for _ in 0..20 {
            w.advance(Duration::from_secs(1)).await;
            assert_eq!(w.node_of("sneaky"), None, "the lower pod never takes the nominated room");
            if w.node_of("urgent").is_some() {
                break;
            }
        }
        assert_eq!(w.node_of("urgent").as_deref(), Some("n1"));
        assert!(
            w.events("sneaky", "FailedScheduling")[0]["count"].as_i64() > Some(1),
            "the lower pod was tried again meanwhile"
        );
        assert!(!terminating(&w, "low-a") && !terminating(&w, "mid"), "no further victims");
    });
}

#[test]
fn equal_priority_never_preempts_and_never_policy_waits() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        class(&w, "high", 1000, None).await;
        class(&w, "polite", 2000, Some("Never")).await;
        w.node_with("n1", "1", json!({})).await;
        pod(&w, "first", Some("high"), "1").await;
        w.settle().await;
        w.kubelet().await;
        pod(&w, "peer", Some("high"), "1").await;
        pod(&w, "waiter", Some("polite"), "1").await;
        w.settle().await;
        w.advance(Duration::from_secs(5)).await;
        assert_eq!(w.node_of("first").as_deref(), Some("n1"));
        assert!(!terminating(&w, "first"), "neither an equal nor a Never pod preempts");
        for p in ["peer", "waiter"] {
            let state = pod_state(&w, p);
            assert_eq!(state["status"]["nominatedNodeName"], Value::Null, "{p}");
            assert_eq!(condition(&state, "PodScheduled").expect("condition")["reason"], "Unschedulable");
        }
        assert_eq!(pod_state(&w, "waiter")["spec"]["preemptionPolicy"], "Never");
    });
}

#[test]
fn preemption_spares_pods_a_disruption_budget_protects() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        class(&w, "mid", 500, None).await;
        class(&w, "high", 1000, None).await;
        w.node_with("n1", "1", json!({})).await;
        w.node_with("n2", "1", json!({})).await;
        pod(&w, "db", None, "1").await;
        pod(&w, "cache", Some("mid"), "1").await;
        w.settle().await;
        w.kubelet().await;
        w.settle().await;
        assert!(w.node_of("db").is_some() && w.node_of("cache").is_some());
        // Without the budget the lower-priority `db` would be the victim; with one Ready pod
        // and minAvailable 1 its eviction would break the budget, so `cache` goes instead.
        w.create(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}}))
            .await;
        pod(&w, "urgent", Some("high"), "1").await;
        w.settle().await;
        assert!(terminating(&w, "cache"), "the unprotected pod is the victim");
        assert!(!terminating(&w, "db"), "the budget's pod stays");
        let cache_node = w.node_of("cache");
        assert_eq!(pod_state(&w, "urgent")["status"]["nominatedNodeName"].as_str(), cache_node.as_deref());
    });
}
