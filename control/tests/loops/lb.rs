//! LoadBalancer addresses from a pool.

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

fn ip(svc: &Value) -> Option<String> {
    svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str().map(str::to_owned)
}

fn lb(name: &str, extra: Value) -> Value {
    let mut spec = json!({"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

#[test]
fn load_balancers_get_pool_addresses_wait_when_it_is_dry_and_release_them() {
    runtime().block_on(async {
        let pool = vec![(Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11))];
        let mut w = World::new(Config { lb_pool: pool, ..Config::default() }).await;
        w.create(lb("one", json!({}))).await;
        w.create(lb("two", json!({"loadBalancerIP": "192.0.2.11"}))).await;
        w.settle().await;
        w.create(lb("three", json!({}))).await;
        w.create(lb("other", json!({"loadBalancerClass": "example.com/elsewhere"}))).await;
        w.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "plain", "namespace": "default"},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}))
        .await;
        w.settle().await;
        let get = |name| w.get("Service", Some("default"), name).expect("service");
        assert_eq!(ip(&get("one")).as_deref(), Some("192.0.2.10"));
        assert_eq!(ip(&get("two")).as_deref(), Some("192.0.2.11"), "the asked-for address");
        assert_eq!(ip(&get("three")), None, "the pool is dry");
        assert_eq!(w.events("three", "AllocationFailed").len(), 1);
        assert_eq!(ip(&get("other")), None, "another class's Service is left alone");
        assert_eq!(ip(&get("plain")), None);

        // Turning "one" into a ClusterIP Service frees its address for "three".
        w.edit("Service", Some("default"), "one", false, |s| {
            s["spec"]["type"] = json!("ClusterIP");
            s["spec"]["ports"][0].as_object_mut().expect("port").remove("nodePort");
        })
        .await;
        w.settle().await;
        assert_eq!(ip(&w.get("Service", Some("default"), "one").expect("one")), None);
        // "three" waits for a deletion or a change; the freed address is picked up on its next look.
        skiff_control::store::Store::delete(&w.server.store, "/registry/core/services/default/two", None)
            .await
            .expect("delete two");
        w.settle().await;
        let three = ip(&w.get("Service", Some("default"), "three").expect("three")).expect("three has an address");
        assert!(three == "192.0.2.10" || three == "192.0.2.11", "{three}");
    });
}
