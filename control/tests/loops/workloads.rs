//! ReplicaSets and Deployments, with the nodes' agents played by `World::kubelet`.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

fn pods_of(w: &World, app: &str) -> Vec<Value> {
    w.list("Pod", Some("default")).into_iter().filter(|p| p["metadata"]["labels"]["app"] == app).collect()
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

async fn three_nodes() -> World {
    let w = World::new(Config::default()).await;
    for n in ["a", "b", "c"] {
        w.node(n).await;
    }
    w
}

/// Settles the loops and runs the agents until neither has anything left to do; `check` runs
/// after every step.
async fn converge(w: &mut World, mut check: impl FnMut(&World)) {
    for _ in 0..200 {
        w.settle().await;
        check(w);
        if w.kubelet().await == 0 {
            // minReadySeconds and the like run on the clock.
            w.advance(Duration::from_secs(1)).await;
            check(w);
            if w.kubelet().await == 0 {
                return;
            }
        }
    }
    panic!("the loops and agents did not converge");
}

fn replica_set(name: &str, replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
}

#[test]
fn a_replica_set_keeps_its_count_adopts_orphans_and_releases_pods_it_stops_selecting() {
    runtime().block_on(async {
        let mut w = three_nodes().await;
        w.create(replica_set("web", 3)).await;
        converge(&mut w, |_| {}).await;
        let pods = pods_of(&w, "web");
        assert_eq!(pods.len(), 3);
        assert!(pods.iter().all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" && p["metadata"]["ownerReferences"][0]["controller"] == true));
        let rs = w.get("ReplicaSet", Some("default"), "web").expect("rs");
        assert_eq!(rs["status"]["replicas"], 3);
        assert_eq!(rs["status"]["readyReplicas"], 3);
        assert_eq!(rs["status"]["availableReplicas"], 3);
        assert_eq!(w.events("web", "SuccessfulCreate").len(), 3);

        // An orphan it selects is adopted; one pod too many is then deleted.
        w.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stray", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).await;
        converge(&mut w, |_| {}).await;
        assert_eq!(pods_of(&w, "web").len(), 3);
        if let Some(stray) = w.get("Pod", Some("default"), "stray") {
            assert_eq!(stray["metadata"]["ownerReferences"][0]["name"], "web", "adopted");
        }

        // A pod relabelled out of the selector is released and replaced.
        let victim = pods_of(&w, "web")[0]["metadata"]["name"].as_str().expect("name").to_owned();
        w.edit("Pod", Some("default"), &victim, false, |p| p["metadata"]["labels"]["app"] = json!("debug")).await;
        converge(&mut w, |_| {}).await;
        assert_eq!(pods_of(&w, "web").len(), 3);
        let released = w.get("Pod", Some("default"), &victim).expect("released pod stays");
        assert!(released["metadata"]["ownerReferences"].is_null(), "released: {released}");

        w.edit("ReplicaSet", Some("default"), "web", false, |rs| rs["spec"]["replicas"] = json!(1)).await;
        converge(&mut w, |_| {}).await;
        assert_eq!(pods_of(&w, "web").len(), 1);
        assert_eq!(w.get("ReplicaSet", Some("default"), "web").expect("rs")["status"]["replicas"], 1);
    });
}

fn deployment(replicas: i32, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}})
}

fn condition(d: &Value, kind: &str) -> Value {
    d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_rolling_update_keeps_enough_pods_ready_and_surges_by_at_most_one() {
    runtime().block_on(async {
        let mut w = three_nodes().await;
        w.create(deployment(5, "app:1")).await;
        converge(&mut w, |_| {}).await;
        let d = w.get("Deployment", Some("default"), "web").expect("deployment");
        assert_eq!(
            (d["status"]["readyReplicas"].as_i64(), d["status"]["availableReplicas"].as_i64()),
            (Some(5), Some(5))
        );
        assert_eq!(condition(&d, "Available")["status"], "True");
        assert_eq!(condition(&d, "Progressing")["reason"], "NewReplicaSetAvailable");
        assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");

        w.edit("Deployment", Some("default"), "web", false, |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("app:2")
        })
        .await;
        let (mut min_ready, mut max_pods) = (usize::MAX, 0);
        converge(&mut w, |w| {
            let pods = pods_of(w, "web");
            let live = pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).count();
            min_ready = min_ready.min(pods.iter().filter(|p| is_ready(p)).count());
            max_pods = max_pods.max(live);
        })
        .await;
        assert!(min_ready >= 4, "ready pods fell to {min_ready} (replicas 5, maxUnavailable 1)");
        assert!(max_pods <= 6, "{max_pods} pods at once (replicas 5, maxSurge 1)");
        let pods = pods_of(&w, "web");
        assert_eq!(pods.len(), 5);
        assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "app:2"));
        let d = w.get("Deployment", Some("default"), "web").expect("deployment");
        assert_eq!(d["status"]["updatedReplicas"], 5);
        assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"]);
        assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
        let rss = w.list("ReplicaSet", Some("default"));
        assert_eq!(rss.len(), 2, "the old ReplicaSet stays as history");
        assert!(!w.events("web", "ScalingReplicaSet").is_empty());

        // Deleting the Deployment in the background takes its ReplicaSets and pods with it.
        w.server
            .delete_key("/registry/apps/deployments/default/web", &Default::default())
            .await
            .expect("delete");
        converge(&mut w, |_| {}).await;
        assert!(w.list("ReplicaSet", Some("default")).is_empty());
        assert!(pods_of(&w, "web").is_empty());
    });
}

#[test]
fn a_rollout_that_cannot_progress_reports_the_deadline() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        // No nodes: pods never run.
        let mut d = deployment(2, "app:1");
        d["spec"]["progressDeadlineSeconds"] = json!(30);
        w.create(d).await;
        w.settle().await;
        w.advance(Duration::from_secs(31)).await;
        let d = w.get("Deployment", Some("default"), "web").expect("deployment");
        let progressing = condition(&d, "Progressing");
        assert_eq!(progressing["status"], "False");
        assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
        assert_eq!(condition(&d, "Available")["status"], "False");
    });
}
