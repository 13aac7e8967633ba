//! The ResourceQuota controller with admission's charges: status follows the spec, usage is
//! charged at create and given back when pods finish or go.

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

fn pod(name: &str, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}})
}

fn used(w: &World) -> Value {
    w.get("ResourceQuota", Some("default"), "compute").expect("quota")["status"]["used"].clone()
}

#[test]
fn quota_status_follows_spec_and_usage_is_given_back() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.create(json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": "default"},
            "spec": {"hard": {"pods": "2", "requests.cpu": "2", "count/configmaps": "5"}}}))
            .await;
        // Until the controller has counted, a pod cannot be checked against the quota.
        let unknown = w.server.create_as(pod("early", "100m"), "test").await.expect_err("status unknown");
        assert_eq!(unknown.code.as_u16(), 403);
        assert!(unknown.message.contains("status unknown for quota: compute"), "{}", unknown.message);

        w.settle().await;
        let quota = w.get("ResourceQuota", Some("default"), "compute").expect("quota");
        assert_eq!(quota["status"]["hard"], json!({"pods": "2", "requests.cpu": "2", "count/configmaps": "5"}));
        assert_eq!(quota["status"]["used"], json!({"pods": "0", "requests.cpu": "0", "count/configmaps": "0"}));

        // Admission charges at once, before the controller looks.
        w.create(pod("a", "500m")).await;
        w.create(pod("b", "500m")).await;
        assert_eq!(used(&w)["pods"], "2");
        assert_eq!(used(&w)["requests.cpu"], "1");
        let refused = w.server.create_as(pod("c", "500m"), "test").await.expect_err("third pod");
        assert_eq!(refused.code.as_u16(), 403);
        assert_eq!(
            refused.message,
            "pods \"c\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
        );
        w.settle().await;
        assert_eq!(used(&w)["pods"], "2", "the recount agrees with the charges");

        // A finished pod no longer counts.
        w.edit("Pod", Some("default"), "a", true, |p| p["status"]["phase"] = json!("Succeeded")).await;
        w.settle().await;
        assert_eq!(used(&w)["pods"], "1");
        assert_eq!(used(&w)["requests.cpu"], "500m");
        w.create(pod("c", "500m")).await;

        // A deleted one neither.
        skiff_control::store::Store::delete(&w.server.store, "/registry/core/pods/default/b", None)
            .await
            .expect("delete b");
        w.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"}})).await;
        w.settle().await;
        assert_eq!(used(&w), json!({"pods": "1", "requests.cpu": "500m", "count/configmaps": "1"}));

        // A raised limit reaches the status; a wrong usage (a charge whose create failed) is
        // corrected.
        w.edit("ResourceQuota", Some("default"), "compute", false, |q| q["spec"]["hard"]["pods"] = json!("5")).await;
        w.edit("ResourceQuota", Some("default"), "compute", true, |q| q["status"]["used"]["pods"] = json!("4")).await;
        w.settle().await;
        let quota = w.get("ResourceQuota", Some("default"), "compute").expect("quota");
        assert_eq!(quota["status"]["hard"]["pods"], "5");
        assert_eq!(quota["status"]["used"]["pods"], "1");
        assert_eq!(w.settle().await, 0, "nothing left to do");
    });
}

/// Two API servers over one store (each with its own in-process lock) racing pod creates: only
/// the compare-and-swap on the quota keeps them to the limit.
#[test]
fn creates_racing_through_two_api_servers_stop_at_the_limit() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut w = World::new(Config::default()).await;
        w.create(json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": "default"},
            "spec": {"hard": {"pods": "3"}}}))
            .await;
        w.settle().await;
        let other = std::sync::Arc::new(skiff_control::api::ApiServer::new(
            w.server.store.clone(),
            (std::net::Ipv4Addr::new(10, 96, 0, 0), 12),
        ));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let server = if i % 2 == 0 { w.server.clone() } else { other.clone() };
                tokio::spawn(async move { server.create_as(pod(&format!("p{i}"), "10m"), "test").await })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => admitted += 1,
                Err(e) => assert!(e.code.as_u16() == 403 || e.code.as_u16() == 409, "{}", e.message),
            }
        }
        assert_eq!(admitted, 3, "exactly the limit gets in");
        assert_eq!(w.list("Pod", Some("default")).len(), 3);
        w.settle().await;
        assert_eq!(used(&w)["pods"], "3");
    });
}

/// Service quotas: load balancers and node ports are counted at create and when an update turns
/// a Service into one.
#[test]
fn service_quotas_count_creates_and_updates() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.create(json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "lbs", "namespace": "default"},
            "spec": {"hard": {"services.loadbalancers": "1", "services.nodeports": "2"}}}))
            .await;
        w.settle().await;
        let svc = |name: &str, kind: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": kind, "selector": {"app": name}, "ports": [{"port": 80}]}})
        };
        w.create(svc("a", "LoadBalancer")).await;
        w.create(svc("b", "ClusterIP")).await;
        let refused = w.server.create_as(svc("c", "LoadBalancer"), "test").await.expect_err("second LB");
        assert_eq!(
            refused.message,
            "services \"c\" is forbidden: exceeded quota: lbs, requested: services.loadbalancers=1, used: services.loadbalancers=1, limited: services.loadbalancers=1"
        );
        let mut b = w.get("Service", Some("default"), "b").expect("b");
        b["spec"]["type"] = json!("LoadBalancer");
        let refused = w.server.replace_as(b.clone(), false, "test").await.expect_err("b turned LB");
        assert_eq!(refused.code.as_u16(), 403);
        b["spec"]["type"] = json!("NodePort");
        w.server.replace_as(b, false, "test").await.expect("a second node port fits");
        let used = w.get("ResourceQuota", Some("default"), "lbs").expect("quota")["status"]["used"].clone();
        assert_eq!(used, json!({"services.loadbalancers": "1", "services.nodeports": "2"}));
        w.settle().await;
        let used = w.get("ResourceQuota", Some("default"), "lbs").expect("quota")["status"]["used"].clone();
        assert_eq!(used, json!({"services.loadbalancers": "1", "services.nodeports": "2"}), "the recount agrees");
    });
}

/// A charged write that fails gives its charge back at once, without waiting for a recount: a
/// create whose name is taken, a Service whose node port is held, an update that lost a race.
#[test]
fn failed_writes_give_their_charge_back() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.create(json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": "default"},
            "spec": {"hard": {"pods": "5", "requests.cpu": "4", "services": "5", "services.nodeports": "5"}}}))
            .await;
        w.settle().await;
        w.create(pod("a", "500m")).await;
        let taken = w.server.create_as(pod("a", "500m"), "test").await.expect_err("name taken");
        assert_eq!(taken.code.as_u16(), 409);
        let used = |w: &World| {
            w.get("ResourceQuota", Some("default"), "compute").expect("quota")["status"]["used"].clone()
        };
        // No settle: only the refund can have put it back.
        assert_eq!(used(&w)["pods"], "1");
        assert_eq!(used(&w)["requests.cpu"], "500m");

        let svc = |name: &str, kind: &str, node_port: Option<u16>| {
            let mut port = json!({"port": 80});
            if let Some(p) = node_port {
                port["nodePort"] = json!(p);
            }
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": kind, "selector": {"app": name}, "ports": [port]}})
        };
        w.create(svc("a", "NodePort", Some(30080))).await;
        let held = w.server.create_as(svc("b", "NodePort", Some(30080)), "test").await.expect_err("port held");
        assert_eq!(held.code.as_u16(), 422, "{}", held.message);
        assert_eq!(used(&w)["services"], "2", "`kubernetes` and a");
        assert_eq!(used(&w)["services.nodeports"], "1");

        // An update from a stale read: refused as a conflict, and its added node port not kept.
        w.create(svc("c", "ClusterIP", None)).await;
        let mut stale = w.get("Service", Some("default"), "c").expect("c");
        w.edit("Service", Some("default"), "c", false, |s| s["metadata"]["labels"] = json!({"x": "y"})).await;
        stale["spec"]["type"] = json!("NodePort");
        let lost = w.server.replace_as(stale, false, "test").await.expect_err("stale");
        assert_eq!(lost.code.as_u16(), 409);
        assert_eq!(used(&w)["services.nodeports"], "1");
        w.settle().await;
        assert_eq!(used(&w)["services"], "3", "the recount agrees");
        assert_eq!(used(&w)["services.nodeports"], "1");
    });
}

/// A pod created by the loops with a finished status is still charged as it is created (its
/// recount then reads the status).
#[test]
fn a_new_pod_is_charged_whatever_its_status() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.create(json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": "default"},
            "spec": {"hard": {"pods": "1"}}}))
            .await;
        w.settle().await;
        let mut done = pod("done", "100m");
        done["status"] = json!({"phase": "Succeeded"});
        w.create(done).await;
        assert_eq!(used(&w)["pods"], "1", "charged at create");
        w.settle().await;
        assert_eq!(used(&w)["pods"], "0", "the recount reads the status");
    });
}

/// Usage no write signals (a deleted Event: Events do not prompt recounts) is corrected by the
/// periodic recount.
#[test]
fn quotas_are_recounted_periodically() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.create(json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "events", "namespace": "default"},
            "spec": {"hard": {"count/events": "10"}}}))
            .await;
        w.settle().await;
        w.create(json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "R", "message": "m"}))
            .await;
        w.settle().await;
        let count = |w: &World| {
            w.get("ResourceQuota", Some("default"), "events").expect("quota")["status"]["used"]["count/events"].clone()
        };
        assert_eq!(count(&w), "1");
        skiff_control::store::Store::delete(&w.server.store, "/registry/core/events/default/e", None)
            .await
            .expect("delete the event");
        w.settle().await;
        assert_eq!(count(&w), "1", "nothing prompted a recount");
        w.advance(std::time::Duration::from_secs(5 * 60)).await;
        assert_eq!(count(&w), "0", "the resync recounted");
    });
}

/// Amounts past what a Quantity holds are written capped, so a recount finds the status it
/// wrote and the loops settle instead of rewriting it forever.
#[test]
fn huge_usage_settles() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.create(pod("a", "1E")).await;
        w.create(pod("b", "1E")).await;
        w.create(json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": "default"},
            "spec": {"hard": {"requests.cpu": "1"}}}))
            .await;
        w.settle().await;
        assert_eq!(used(&w)["requests.cpu"], "9223372036854775807m");
        assert_eq!(w.settle().await, 0, "nothing left to do");
    });
}
