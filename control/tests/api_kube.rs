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

/// Every namespace holds the loops' `kube-root-ca.crt`; tests counting ConfigMaps leave it out.
const NOT_ROOT_CA: &str = "metadata.name!=kube-root-ca.crt";

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
        let not_web =
            services.list(&ListParams::default().labels("app,app notin (web)")).await.expect("list");
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
        // Every namespace also holds the loops' kube-root-ca.crt: watch only this test's object.
        let mut events = watcher(cms.clone(), watcher::Config::default().fields("metadata.name=c"))
            .touched_objects()
            .boxed();
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
        // The loops may publish kube-root-ca.crt meanwhile: not this test's business.
        let ours = WatchParams::default().timeout(5).fields(NOT_ROOT_CA);
        let mut stream = cms.watch(&ours, &rv0).await.expect("watch").boxed();
        // Bookmarks may come first (the control loops write other objects meanwhile); skip them.
        let first = loop {
            match stream.try_next().await.expect("ok") {
                Some(WatchEvent::Bookmark(_)) => continue,
                other => break other,
            }
        };
        match first {
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
        assert_eq!(send("POST", path, "application/vnd.kubernetes.protobuf", b"x".to_vec()).await.0, 400);
        assert_eq!(send("POST", path, "application/cbor", b"x".to_vec()).await.0, 415);
        let ok = serde_json::to_vec(&json!({"metadata": {"name": "ok"}})).expect("json");
        assert_eq!(send("POST", "/api/v1/namespaces/nope/configmaps", "application/json", ok).await.0, 404);
        assert_eq!(send("GET", "/api/v1/widgets", "application/json", vec![]).await.0, 404);
        assert_eq!(
            send("PATCH", "/api/v1/namespaces/default/configmaps", "application/json", vec![]).await.0,
            405
        );

        let cms: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
        assert!(
            cms.list(&ListParams::default().fields(NOT_ROOT_CA)).await.expect("list").items.is_empty(),
            "a rejected request wrote something"
        );
    });
}

#[test]
fn patches_merge_json_strategic_apply_and_scale() {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
    use kube::api::{Patch, PatchParams};
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "side", "image": "side:1"}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("create");
        let pp = PatchParams::default();

        let p = pods.patch("p", &pp, &Patch::Merge(json!({"metadata": {"labels": {"a": null, "b": "2"}}}))).await.expect("merge");
        assert_eq!(p.metadata.labels, Some([("b".to_owned(), "2".to_owned())].into()));

        let ops: json_patch::Patch = serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels/c", "value": "3"}])).expect("ops");
        let p = pods.patch("p", &pp, &Patch::<()>::Json(ops)).await.expect("json patch");
        assert_eq!(p.metadata.labels.as_ref().and_then(|l| l.get("c")).map(String::as_str), Some("3"));

        let p = pods
            .patch("p", &pp, &Patch::Strategic(json!({"spec": {"containers": [{"name": "app", "image": "app:2"}]}})))
            .await
            .expect("strategic");
        let images: Vec<_> = p.spec.expect("spec").containers.into_iter().map(|c| c.image.unwrap_or_default()).collect();
        assert_eq!(images, ["app:2", "side:1"], "strategic merge replaced the list instead of merging by name");

        // Server-side apply creates, then updates, and records the field manager.
        let cms: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
        let apply = PatchParams::apply("skiff-test");
        cms.patch("applied", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "1"}})))
            .await
            .expect("apply create");
        let cm = cms
            .patch("applied", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "2"}})))
            .await
            .expect("apply update");
        assert_eq!(cm.data.and_then(|d| d.get("k").cloned()).as_deref(), Some("2"));
        assert!(cm.metadata.managed_fields.unwrap_or_default().iter().any(|m| m.manager.as_deref() == Some("skiff-test")));

        // Scale, and the status subresource kept apart from the main resource.
        let deployments: Api<Deployment> = Api::namespaced(server.client.clone(), "default");
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
        }))
        .expect("deployment");
        let created = deployments.create(&PostParams::default(), &d).await.expect("create");
        assert_eq!(created.metadata.generation, Some(1));
        let scale = deployments.patch_scale("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 5}}))).await.expect("scale");
        assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
        assert_eq!(scale.status.and_then(|s| s.selector).as_deref(), Some("app=web"));
        let scaled = deployments.get("web").await.expect("get");
        assert_eq!((scaled.spec.replicas, scaled.metadata.generation), (Some(5), Some(2)));

        let status = deployments.patch_status("web", &pp, &Patch::Merge(json!({"status": {"replicas": 5}, "spec": {"replicas": 9}}))).await.expect("status");
        assert_eq!(status.spec.replicas, Some(5), "a status write changed the spec");
        let spec_write = deployments.patch("web", &pp, &Patch::Merge(json!({"status": {"replicas": 0}}))).await.expect("main patch");
        assert_eq!(spec_write.status.and_then(|s| s.replicas), Some(5), "a main-resource write changed the status");
    });
}

#[test]
fn field_validation_strict_rejects_warn_warns_and_openapi_v3_says_so() {
    common::runtime().block_on(async {
        let server = common::start(100).await;
        let body = serde_json::to_vec(&json!({"metadata": {"name": "x"}, "bogus": 1})).expect("json");
        let post = |validation: &str| {
            http::Request::builder()
                .method("POST")
                .uri(format!("/api/v1/namespaces/default/configmaps?fieldValidation={validation}"))
                .header("content-type", "application/json")
                .body(body.clone())
                .expect("request")
        };
        match server.client.request_text(post("Strict")).await {
            Err(kube::Error::Api(s)) => {
                assert!(s.code == 400 && s.message.contains("unknown field \"bogus\""), "{s:?}")
            }
            other => panic!("strict accepted an unknown field: {other:?}"),
        }
        let response =
            server.client.send(post("Warn").map(kube::client::Body::from)).await.expect("warn accepts");
        assert_eq!(response.status(), 201);
        let warning = response.headers().get("warning").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(warning.contains("unknown field"), "no warning header: {warning:?}");

        let index: serde_json::Value = serde_json::from_str(
            &server
                .client
                .request_text(http::Request::get("/openapi/v3").body(vec![]).expect("req"))
                .await
                .expect("index"),
        )
        .expect("json");
        let url =
            index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("apps/v1 listed").to_owned();
        let doc: serde_json::Value = serde_json::from_str(
            &server
                .client
                .request_text(http::Request::get(url).body(vec![]).expect("req"))
                .await
                .expect("doc"),
        )
        .expect("json");
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation")
        );
    });
}

#[test]
fn tables_for_kubectl_and_the_kubernetes_service() {
    common::runtime().block_on(async {
        let server = common::start(100).await;
        let services: Api<Service> = Api::namespaced(server.client.clone(), "default");
        let kubernetes = services.get("kubernetes").await.expect("the kubernetes Service exists");
        assert_eq!(
            kubernetes.spec.and_then(|s| s.cluster_ip).as_deref(),
            Some("10.96.0.1"),
            "it holds the first ClusterIP"
        );
        let web = services.create(&PostParams::default(), &service("web", json!({}))).await.expect("create");
        assert_ne!(web.spec.and_then(|s| s.cluster_ip).as_deref(), Some("10.96.0.1"));

        let table_get = |path: &str| {
            http::Request::get(path)
                .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
                .body(Vec::new())
                .expect("request")
        };
        let list: serde_json::Value = serde_json::from_str(
            &server
                .client
                .request_text(table_get("/api/v1/namespaces/default/services"))
                .await
                .expect("table"),
        )
        .expect("json");
        assert_eq!(list["kind"], "Table");
        let columns: Vec<&str> = list["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(columns, ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]);
        let rows = list["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");

        // A watch in Table form: every event carries a one-row Table.
        let watch = table_get("/api/v1/namespaces/default/services?watch=true&timeoutSeconds=1");
        let text = server.client.request_text(watch).await.expect("watch");
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("an event")).expect("json");
        assert_eq!(
            (first["type"].as_str(), first["object"]["kind"].as_str()),
            (Some("ADDED"), Some("Table"))
        );
    });
}

#[test]
fn lists_page_with_limit_and_continue_and_honour_resource_version_rules() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let cms: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
        for n in 0..5 {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("c{n}")}})).expect("cm");
            cms.create(&PostParams::default(), &cm).await.expect("create");
        }
        // Page through with limit 2: 2 + 2 + 1, one consistent revision.
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        let mut revisions = Vec::new();
        loop {
            let mut lp = ListParams::default().limit(2).fields(NOT_ROOT_CA);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = cms.list(&lp).await.expect("page");
            assert!(page.items.len() <= 2);
            names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
            revisions.push(page.metadata.resource_version.clone());
            token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
        assert!(revisions.windows(2).all(|w| w[0] == w[1]), "pages from different revisions: {revisions:?}");

        // Later pages come from the first page's snapshot, whatever changes meanwhile.
        let first = cms.list(&ListParams::default().limit(2).fields(NOT_ROOT_CA)).await.expect("page");
        let mut token = first.metadata.continue_.clone();
        cms.delete("c4", &DeleteParams::default()).await.expect("delete");
        let c5: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c5"}})).expect("cm");
        cms.create(&PostParams::default(), &c5).await.expect("create");
        let label = json!({"metadata": {"labels": {"changed": "yes"}}});
        cms.patch("c2", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(label))
            .await
            .expect("patch");
        let mut rest = Vec::new();
        while let Some(t) = token.filter(|t| !t.is_empty()) {
            let page = cms
                .list(&ListParams::default().limit(2).fields(NOT_ROOT_CA).continue_token(&t))
                .await
                .expect("page");
            assert_eq!(page.metadata.resource_version, first.metadata.resource_version);
            rest.extend(page.items);
            token = page.metadata.continue_.clone();
        }
        let names: Vec<_> = rest.iter().filter_map(|c| c.metadata.name.clone()).collect();
        assert_eq!(names, ["c2", "c3", "c4"], "not the snapshot of the first page");
        assert!(rest[0].metadata.labels.is_none(), "c2 as changed after the snapshot");

        // An exact resourceVersion of the past is served from the same history.
        let rv: u64 = first.metadata.resource_version.expect("rv").parse().expect("number");
        let exact_old = ListParams::default()
            .fields(NOT_ROOT_CA)
            .at(&rv.to_string())
            .matching(kube::api::VersionMatch::Exact);
        let then = cms.list(&exact_old).await.expect("an exact past list");
        assert_eq!(then.items.len(), 5);
        assert!(then.items.iter().all(|c| c.metadata.name.as_deref() != Some("c5")));
        let future = ListParams::default().at(&(rv + 1000).to_string());
        assert_eq!(api_error(cms.list(&future).await).0, 504, "a resourceVersion from the future");

        // Once the history no longer reaches back, the token expires (410), like etcd compaction.
        let small = common::start(4).await;
        let cms: Api<ConfigMap> = Api::namespaced(small.client.clone(), "default");
        for n in 0..6 {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("s{n}")}})).expect("cm");
            cms.create(&PostParams::default(), &cm).await.expect("create");
        }
        let first = cms.list(&ListParams::default().limit(1)).await.expect("page");
        let stale = first.metadata.continue_.clone().expect("more pages");
        for n in 0..6 {
            cms.delete(&format!("s{n}"), &DeleteParams::default()).await.expect("delete");
        }
        let (code, _) = api_error(cms.list(&ListParams::default().limit(1).continue_token(&stale)).await);
        assert_eq!(code, 410);
        let rv = first.metadata.resource_version.expect("rv");
        let exact_old = ListParams::default().at(&rv).matching(kube::api::VersionMatch::Exact);
        assert_eq!(api_error(cms.list(&exact_old).await).0, 410, "an exact version beyond the history");
    });
}

#[test]
fn admission_defaults_validates_and_allocates_node_ports() {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
    common::runtime().block_on(async {
        let server = common::start(100).await;
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "app:1"}]}})).expect("pod");
        let created = pods.create(&PostParams::default(), &pod).await.expect("create");
        let spec = created.spec.expect("spec");
        assert_eq!((spec.restart_policy.as_deref(), spec.dns_policy.as_deref()), (Some("Always"), Some("ClusterFirst")));
        assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("IfNotPresent"));
        let no_image: Pod = serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c"}]}})).expect("pod");
        let (code, reason) = api_error(pods.create(&PostParams::default(), &no_image).await);
        assert_eq!((code, reason.as_str()), (422, "Invalid"));

        let deployments: Api<Deployment> = Api::namespaced(server.client.clone(), "default");
        let mismatch: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})).expect("deployment");
        assert_eq!(api_error(deployments.create(&PostParams::default(), &mismatch).await).0, 422);

        let services: Api<Service> = Api::namespaced(server.client.clone(), "default");
        let node_port = |name: &str, port: Option<u16>| -> Service {
            let mut p = json!({"port": 80});
            if let Some(n) = port {
                p["nodePort"] = json!(n);
            }
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [p]}})).expect("svc")
        };
        let a = services.create(&PostParams::default(), &node_port("a", None)).await.expect("create");
        let allocated = a.spec.and_then(|s| s.ports).and_then(|p| p[0].node_port).expect("a node port");
        assert!((30000..=32767).contains(&allocated), "{allocated}");
        assert_eq!(api_error(services.create(&PostParams::default(), &node_port("b", Some(allocated as u16))).await).0, 422, "a node port given twice");
        services.delete("a", &DeleteParams::default()).await.expect("delete");
        services.create(&PostParams::default(), &node_port("b", Some(allocated as u16))).await.expect("the port is free again after the delete");
    });
}

#[test]
fn pods_are_bound_once_and_evicted() {
    use k8s_openapi::api::core::v1::Pod;
    common::runtime().block_on(async {
        let server = common::start(100).await;
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "app:1"}]}})).expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("create");
        let bind = |node: &str| {
            let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}})).expect("json");
            http::Request::post("/api/v1/namespaces/default/pods/p/binding").header("content-type", "application/json").body(body).expect("request")
        };
        server.client.request_text(bind("node-1")).await.expect("bind");
        let bound = pods.get("p").await.expect("get");
        assert_eq!(bound.spec.and_then(|s| s.node_name).as_deref(), Some("node-1"));
        assert_eq!(api_error(server.client.request_text(bind("node-2")).await).0, 409, "bound twice");

        let evict = http::Request::post("/api/v1/namespaces/default/pods/p/eviction")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}})).expect("json"))
            .expect("request");
        server.client.request_text(evict).await.expect("evict");
        // Eviction is a graceful delete: the bound pod is now terminating on its node.
        let evicted = pods.get("p").await.expect("terminating pod");
        assert!(evicted.metadata.deletion_timestamp.is_some(), "eviction did not start the deletion");
    });
}

#[test]
fn deletion_honours_finalizers_pod_grace_and_preconditions() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams, Preconditions};
    common::runtime().block_on(async {
        let server = common::start(100).await;
        let cms: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
        let kept: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "kept", "finalizers": ["example.com/hold"]}})).expect("cm");
        cms.create(&PostParams::default(), &kept).await.expect("create");
        cms.delete("kept", &DeleteParams::default()).await.expect("delete");
        let marked = cms.get("kept").await.expect("still there while a finalizer holds it");
        assert!(marked.metadata.deletion_timestamp.is_some());
        cms.patch("kept", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.expect("drop the finalizer");
        assert!(cms.get_opt("kept").await.expect("get").is_none(), "removing the last finalizer completes the deletion");

        let plain: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "plain"}})).expect("cm");
        cms.create(&PostParams::default(), &plain).await.expect("create");
        let wrong = DeleteParams { preconditions: Some(Preconditions { uid: Some("not-its-uid".into()), resource_version: None }), ..Default::default() };
        assert_eq!(api_error(cms.delete("plain", &wrong).await).0, 409);
        assert!(cms.get_opt("plain").await.expect("get").is_some(), "a failed precondition deleted the object");

        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "app:1"}]}})).expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("create");
        pods.delete("p", &DeleteParams::default()).await.expect("graceful delete");
        let terminating = pods.get("p").await.expect("a bound pod stays while its node stops it");
        assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
        pods.delete("p", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.expect("final delete");
        assert!(pods.get_opt("p").await.expect("get").is_none());
    });
}

#[test]
fn aggregated_discovery_and_openapi_v2_describe_every_resource() {
    use skiff_control::api::registry::RESOURCES;
    common::runtime().block_on(async {
        let server = common::start(100).await;
        let discovery =
            kube::Discovery::new(server.client.clone()).run_aggregated().await.expect("aggregated discovery");
        for r in RESOURCES.iter() {
            let group = discovery.get(r.group).unwrap_or_else(|| panic!("group {:?} missing", r.group));
            let (found, caps) = group
                .recommended_resources()
                .into_iter()
                .find(|(ar, _)| ar.plural == r.plural)
                .unwrap_or_else(|| panic!("{} missing from aggregated discovery", r.plural));
            assert_eq!(found.kind, r.kind);
            let scope = if r.namespaced {
                kube::discovery::Scope::Namespaced
            } else {
                kube::discovery::Scope::Cluster
            };
            assert_eq!(caps.scope, scope, "{}", r.plural);
            let subs: Vec<&str> = caps.subresources.iter().map(|(s, _)| s.plural.as_str()).collect();
            for sub in r.subresources {
                assert!(subs.iter().any(|s| s.ends_with(sub)), "{}/{sub} missing: {subs:?}", r.plural);
            }
        }
        let get = |accept: &'static str| {
            http::Request::get("/openapi/v2").header("accept", accept).body(vec![]).expect("request")
        };
        let v2: serde_json::Value = serde_json::from_str(
            &server.client.request_text(get("application/json")).await.expect("openapi v2"),
        )
        .expect("json");
        assert_eq!(v2["swagger"], "2.0");
        let patch = &v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert!(
            patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation")
        );
        assert_eq!(
            v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let proto_only = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        assert_eq!(api_error(server.client.request_text(get(proto_only)).await).0, 406);
    });
}

#[test]
fn the_garbage_collector_follows_each_propagation_policy() {
    use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let sets: Api<ReplicaSet> = Api::namespaced(server.client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let pp = PostParams::default();
        let owner = |name: &str| -> ReplicaSet {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"rs": name}}, "template": {"metadata": {"labels": {"rs": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
            }))
            .expect("replicaset")
        };
        // Owned but not controlled: the ReplicaSet loop releases a pod it controls and does not
        // select (as upstream's does) whenever it syncs the owner before the delete, and a
        // released pod is rightly never collected. The collector follows any owner reference.
        let dependent = |name: &str, rs: &ReplicaSet, finalizers: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "finalizers": finalizers, "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.metadata.name, "uid": rs.metadata.uid,
                    "blockOwnerDeletion": true}]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}
            }))
            .expect("pod")
        };
        let gone = |api: &Api<Pod>, name: &'static str| {
            let api = api.clone();
            async move { api.get_opt(name).await.expect("get").is_none().then_some(()) }
        };

        // Background (the default): the owner goes now, its dependents right after.
        let bg = sets.create(&pp, &owner("bg")).await.expect("create");
        pods.create(&pp, &dependent("bg-1", &bg, json!([]))).await.expect("create");
        pods.create(&pp, &dependent("bg-2", &bg, json!([]))).await.expect("create");
        sets.delete("bg", &DeleteParams::background()).await.expect("delete");
        assert!(sets.get_opt("bg").await.expect("get").is_none(), "a background delete waited");
        common::eventually("bg-1 collected", || gone(&pods, "bg-1")).await;
        common::eventually("bg-2 collected", || gone(&pods, "bg-2")).await;

        // Orphan: the dependent stays, released from its owner.
        let or = sets.create(&pp, &owner("or")).await.expect("create");
        pods.create(&pp, &dependent("or-1", &or, json!([]))).await.expect("create");
        sets.delete("or", &DeleteParams::orphan()).await.expect("delete");
        common::eventually("the orphaning owner gone", || {
            let sets = sets.clone();
            async move { sets.get_opt("or").await.expect("get").is_none().then_some(()) }
        })
        .await;
        let orphan = pods.get("or-1").await.expect("the orphan survives");
        assert!(orphan.metadata.owner_references.unwrap_or_default().is_empty(), "still owned");

        // Foreground: the owner waits (marked) until its dependent is gone.
        let fg = sets.create(&pp, &owner("fg")).await.expect("create");
        pods.create(&pp, &dependent("fg-1", &fg, json!(["example.com/hold"]))).await.expect("create");
        sets.delete("fg", &DeleteParams::foreground()).await.expect("delete");
        common::eventually("the dependent marked for deletion", || {
            let pods = pods.clone();
            async move { pods.get("fg-1").await.expect("get").metadata.deletion_timestamp.map(|_| ()) }
        })
        .await;
        let waiting = sets.get("fg").await.expect("the owner waits");
        assert!(waiting.metadata.finalizers.unwrap_or_default().contains(&"foregroundDeletion".to_owned()));
        pods.patch("fg-1", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .expect("release the hold");
        common::eventually("the foreground owner gone", || {
            let sets = sets.clone();
            async move { sets.get_opt("fg").await.expect("get").is_none().then_some(()) }
        })
        .await;

        // A reference to an owner that never existed is dangling from the start.
        let ghost: Pod = serde_json::from_value(json!({
            "metadata": {"name": "ghost", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "nobody", "uid": "00000000-0000-0000-0000-000000000000"}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .expect("pod");
        pods.create(&pp, &ghost).await.expect("create");
        common::eventually("the ghost's pod collected", || gone(&pods, "ghost")).await;

        let bad = http::Request::delete("/apis/apps/v1/namespaces/default/replicasets/x?propagationPolicy=Sideways")
            .body(vec![])
            .expect("request");
        assert_eq!(api_error(server.client.request_text(bad).await).0, 400);
    });
}

#[test]
fn deleting_a_namespace_empties_it_first_and_refuses_new_content() {
    use k8s_openapi::api::core::v1::Namespace;
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let namespaces: Api<Namespace> = Api::all(server.client.clone());
        let pp = PostParams::default();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns");
        namespaces.create(&pp, &ns).await.expect("create");
        let maps: Api<ConfigMap> = Api::namespaced(server.client.clone(), "doomed");
        let held: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}))
                .expect("cm");
        maps.create(&pp, &held).await.expect("create");
        namespaces.delete("doomed", &DeleteParams::default()).await.expect("delete");

        let terminating = namespaces.get("doomed").await.expect("kept while not empty");
        assert_eq!(terminating.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
        let late: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "late"}})).expect("cm");
        assert_eq!(api_error(maps.create(&pp, &late).await), (403, "Forbidden".to_owned()));
        common::eventually("the content marked", || {
            let maps = maps.clone();
            async move { maps.get("held").await.expect("get").metadata.deletion_timestamp.map(|_| ()) }
        })
        .await;
        maps.patch(
            "held",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release");
        common::eventually("the namespace gone", || {
            let namespaces = namespaces.clone();
            async move { namespaces.get_opt("doomed").await.expect("get").is_none().then_some(()) }
        })
        .await;
    });
}
