//! EndpointSlices follow the pods of their Service.

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

fn slices(w: &World, svc: &str) -> Vec<Value> {
    w.list("EndpointSlice", Some("default"))
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
        .collect()
}

/// (address, ready) of every endpoint of the Service's slices, sorted.
fn endpoints(w: &World, svc: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = slices(w, svc)
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| (e["addresses"][0].as_str().unwrap_or("").to_owned(), e["conditions"]["ready"] == true))
        .collect();
    out.sort();
    out
}

#[test]
fn slices_follow_pod_readiness_in_place_and_go_with_their_service() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("a").await;
        w.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
        .await;
        for i in 1..=3 {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("web-{i}"), "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}});
            pod["spec"]["nodeName"] = json!("a");
            w.create(pod).await;
        }
        w.settle().await;
        let placeholder = slices(&w, "web");
        assert_eq!(placeholder.len(), 1, "a Service without endpoints has one empty slice");
        assert!(placeholder[0]["endpoints"].as_array().is_none_or(Vec::is_empty));

        for i in 1..=3 {
            w.report(&format!("web-{i}"), &format!("10.244.0.{i}"), true).await;
        }
        w.settle().await;
        assert_eq!(endpoints(&w, "web"), [("10.244.0.1".into(), true), ("10.244.0.2".into(), true), ("10.244.0.3".into(), true)]);
        let slice = &slices(&w, "web")[0];
        let name = slice["metadata"]["name"].as_str().expect("name").to_owned();
        assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]), "the named port resolved");
        assert_eq!(slice["endpoints"][0]["nodeName"], "a");
        assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "skiff-control");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");

        w.report("web-2", "10.244.0.2", false).await;
        w.settle().await;
        assert_eq!(endpoints(&w, "web")[1], ("10.244.0.2".into(), false));
        assert_eq!(slices(&w, "web")[0]["metadata"]["name"], name, "updated in place");

        w.server.delete_key("/registry/core/pods/default/web-3", &Default::default()).await.expect("delete");
        w.settle().await;
        // A bound pod deleted with grace is terminating until its agent finishes.
        let terminating: Vec<Value> = slices(&w, "web")[0]["endpoints"].as_array().cloned().unwrap_or_default()
            .into_iter().filter(|e| e["conditions"]["terminating"] == true).collect();
        assert_eq!(terminating.len(), 1);
        assert_eq!(terminating[0]["conditions"]["ready"], false);

        w.server.delete_key("/registry/core/services/default/web", &Default::default()).await.expect("delete svc");
        w.settle().await;
        assert!(slices(&w, "web").is_empty(), "the garbage collector removed the slices with their owner");
    });
}
