//! The disruption loop keeps PodDisruptionBudget status current between evictions: healthy and
//! expected counts follow readiness and deletion, `disruptedPods` entries expire after two
//! minutes, and the `DisruptionAllowed` condition follows `disruptionsAllowed`.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

async fn web_pod(w: &World, name: &str) {
    w.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))
        .await;
}

/// Moves the clock on with the node's agent alive (its Lease renewed), then settles.
async fn later(w: &mut World, seconds: u64) {
    w.clock.advance(Duration::from_secs(seconds));
    w.renew("n1").await;
    w.settle().await;
}

fn status(w: &World) -> Value {
    w.get("PodDisruptionBudget", Some("default"), "web").expect("budget")["status"].clone()
}

fn counts(w: &World) -> [i64; 4] {
    let s = status(w);
    ["expectedPods", "currentHealthy", "desiredHealthy", "disruptionsAllowed"]
        .map(|f| s[f].as_i64().unwrap_or(-1))
}

#[test]
fn budget_status_follows_readiness_deletion_and_expiring_disruptions() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        for name in ["web-0", "web-1", "web-2"] {
            web_pod(&w, name).await;
        }
        w.create(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}))
            .await;
        w.settle().await;
        assert_eq!(counts(&w), [3, 3, 2, 1]);
        assert_eq!(status(&w)["conditions"][0]["status"], "True");
        assert_eq!(status(&w)["conditions"][0]["reason"], "SufficientPods");

        w.report("web-1", "10.244.0.2", false).await;
        w.settle().await;
        assert_eq!(counts(&w), [3, 2, 2, 0], "an unready pod is not healthy");
        assert_eq!(status(&w)["conditions"][0]["reason"], "InsufficientPods");
        w.report("web-1", "10.244.0.2", true).await;

        // An eviction's record keeps its pod out of the count for two minutes at most.
        let now = w.now();
        w.edit("PodDisruptionBudget", Some("default"), "web", true, |b| {
            b["status"]["disruptedPods"] = json!({"web-2": now});
        })
        .await;
        w.settle().await;
        assert_eq!(counts(&w), [3, 2, 2, 0]);
        later(&mut w, 119).await;
        assert_eq!(counts(&w), [3, 2, 2, 0]);
        later(&mut w, 1).await;
        assert_eq!(counts(&w), [3, 3, 2, 1], "expired: healthy again");
        assert!(status(&w)["disruptedPods"].is_null());

        // A terminating pod is still expected (its replacement may not exist) but not healthy.
        w.server.delete_key("/registry/core/pods/default/web-0", &Default::default()).await.expect("delete");
        w.settle().await;
        assert_eq!(counts(&w), [3, 2, 2, 0]);
    });
}
