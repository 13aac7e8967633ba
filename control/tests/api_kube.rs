//! The API server driven by kube-rs (the client the agent uses): CRUD, selectors, optimistic
//! concurrency, watches, and the errors bad input gets.

mod common;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;

fn service(name: &str, labels: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .expect("service")
}

/// The Status code and reason of a failed call.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn services_crud_with_cluster_ips_selectors_and_conflicts() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let services: Api<Service> = Api::namespaced(server.client.clone(), "default");
        let web = services
            .create(&PostParams::default(), &service("web", json!({"app": "web"})))
            .await
            .expect("create");
        let ip = web.spec.as_ref().and_then(|s| s.cluster_ip.clone()).expect("a ClusterIP");
        assert!(ip.starts_with("10.96."), "{ip}");
        let api = services
            .create(&PostParams::default(), &service("api", json!({"app": "api"})))
            .await
            .expect("create");
        assert_ne!(
            api.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
            Some(ip.clone()),
            "two Services share a ClusterIP"
        );
        let (code, reason) =
            api_error(services.create(&PostParams::default(), &service("web", json!({}))).await);
        assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

        let only_web = services.list(&ListParams::default().labels("app=web")).await.expect("list");
        assert_eq!(only_web.items.len(), 1);
        let not_web = services.list(&ListParams::default().labels("app notin (web)")).await.expect("list");
        assert_eq!(not_web.items.iter().filter_map(|s| s.metadata.name.clone()).collect::<Vec<_>>(), ["api"]);

        // Optimistic concurrency: a write from a stale read is refused and changes nothing.
        let mut fresh = services.get("web").await.expect("get");
        let mut stale = fresh.clone();
        fresh.metadata.labels.get_or_insert_default().insert("v".into(), "2".into());
        services.replace("web", &PostParams::default(), &fresh).await.expect("replace");
        stale.metadata.labels.get_or_insert_default().insert("v".into(), "stale".into());
        let (code, reason) = api_error(services.replace("web", &PostParams::default(), &stale).await);
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
        let now = services.get("web").await.expect("get");
        assert_eq!(now.metadata.labels.as_ref().and_then(|l| l.get("v")).map(String::as_str), Some("2"));

        services.delete("web", &DeleteParams::default()).await.expect("delete");
        let (code, _) = api_error(services.get("web").await);
        assert_eq!(code, 404);
    });
}

#[test]
fn kube_runtime_watcher_sees_adds_changes_and_deletes() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let cms: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
        let mut events = watcher(cms.clone(), watcher::Config::default()).touched_objects().boxed();
        let cm = |v: &str| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"v": v}})).expect("cm")
        };
        cms.create(&PostParams::default(), &cm("1")).await.expect("create");
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("1") {
            let obj = tokio::time::timeout(std::time::Duration::from_secs(10), events.try_next())
                .await
                .expect("in time")
                .expect("ok")
                .expect("event");
            seen.push(obj.data.and_then(|d| d.get("v").cloned()).unwrap_or_default());
        }
        let mut current = cms.get("c").await.expect("get");
        current.data = Some([("v".to_owned(), "2".to_owned())].into());
        cms.replace("c", &PostParams::default(), &current).await.expect("replace");
        let obj = tokio::time::timeout(std::time::Duration::from_secs(10), events.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event");
        assert_eq!(obj.data.and_then(|d| d.get("v").cloned()).as_deref(), Some("2"));
        cms.delete("c", &DeleteParams::default()).await.expect("delete");
        let gone = tokio::time::timeout(std::time::Duration::from_secs(10), events.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event");
        assert_eq!(gone.metadata.name.as_deref(), Some("c"));
        assert!(cms.get_opt("c").await.expect("get").is_none());
    });
}

#[test]
fn a_watch_resumes_from_a_resource_version_and_too_old_ones_get_410() {
    common::runtime().block_on(async {
        let server = common::start(8).await;
        let cms: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
        let mk = |n: usize| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {"name": format!("c{n}")}})).expect("cm")
        };
        let first = cms.create(&PostParams::default(), &mk(0)).await.expect("create");
        let rv0 = first.metadata.resource_version.clone().expect("rv");
        cms.create(&PostParams::default(), &mk(1)).await.expect("create");
        // Resume right after c0: the next event is c1's creation.
        let mut stream = cms.watch(&WatchParams::default().timeout(5), &rv0).await.expect("watch").boxed();
        match stream.try_next().await.expect("ok") {
            Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("c1")),
            other => panic!("expected c1 added, got {other:?}"),
        }
        // Push c0's revision out of the 8-event history: resuming from it is a 410.
        for n in 2..12 {
            cms.create(&PostParams::default(), &mk(n)).await.expect("create");
        }
        let mut stream = cms.watch(&WatchParams::default().timeout(5), &rv0).await.expect("watch").boxed();
        match stream.try_next().await {
            Ok(Some(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
            other => panic!("expected a 410 error event, got {other:?}"),
        }
    });
}

#[test]
fn bad_requests_get_the_right_status_and_change_nothing() {
    common::runtime().block_on(async {
        let server = common::start(100).await;
        let send = |method: &str, path: &str, content_type: &str, body: Vec<u8>| {
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", content_type)
                .body(body)
                .expect("request");
            let client = server.client.clone();
            async move { api_error(client.request_text(request).await) }
        };
        let path = "/api/v1/namespaces/default/configmaps";
        assert_eq!(
            send("POST", path, "application/json", b"{not json".to_vec()).await,
            (400, "BadRequest".into())
        );
        let wrong_kind =
            serde_json::to_vec(&json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "x"}}))
                .expect("json");
        assert_eq!(send("POST", path, "application/json", wrong_kind).await.0, 400);
        let wrong_version =
            serde_json::to_vec(&json!({"kind": "ConfigMap", "apiVersion": "v2", "metadata": {"name": "x"}}))
                .expect("json");
        assert_eq!(send("POST", path, "application/json", wrong_version).await.0, 400);
        let bad_name = serde_json::to_vec(&json!({"metadata": {"name": "Not_Valid"}})).expect("json");
        assert_eq!(send("POST", path, "application/json", bad_name).await, (422, "Invalid".into()));
        let huge =
            serde_json::to_vec(&json!({"metadata": {"name": "big"}, "data": {"x": "a".repeat(4 << 20)}}))
                .expect("json");
        assert_eq!(send("POST", path, "application/json", huge).await.0, 413);
        assert_eq!(send("POST", path, "application/vnd.kubernetes.protobuf", b"x".to_vec()).await.0, 415);
        let ok = serde_json::to_vec(&json!({"metadata": {"name": "ok"}})).expect("json");
        assert_eq!(send("POST", "/api/v1/namespaces/nope/configmaps", "application/json", ok).await.0, 404);
        assert_eq!(send("GET", "/api/v1/widgets", "application/json", vec![]).await.0, 404);
        assert_eq!(
            send("PATCH", "/api/v1/namespaces/default/configmaps", "application/json", vec![]).await.0,
            405
        );

        let cms: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
        assert!(
            cms.list(&ListParams::default()).await.expect("list").items.is_empty(),
            "a rejected request wrote something"
        );
    });
}
