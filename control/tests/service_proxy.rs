//! skiff-agent's service proxy against this API server over kube-rs watches: Services and
//! EndpointSlices created, changed and deleted through the API reach the proxy's maps. (The maps are
//! the in-memory store; the eBPF maps behind the same interface are tested in tests/.)

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use skiff_agent::proxy::{
    Dataplane, DataplaneError, Frontend, FrontendKey, LbDataplane, ProxyContext, ServiceProxy,
    memory::MemoryMaps, watch,
};

/// The proxy's dataplane, shared so the test can read the maps while the watch loop runs.
#[derive(Clone)]
struct Shared(Arc<Mutex<LbDataplane<MemoryMaps>>>);

impl Shared {
    fn dump(&self) -> String {
        self.0.lock().expect("lock").store().dump()
    }
}

impl Dataplane for Shared {
    fn upsert(&mut self, key: FrontendKey, frontend: &Frontend) -> Result<(), DataplaneError> {
        self.0.lock().expect("lock").upsert(key, frontend)
    }
    fn remove(&mut self, key: &FrontendKey) -> Result<(), DataplaneError> {
        self.0.lock().expect("lock").remove(key)
    }
    fn add_clusterip(&mut self, vip: std::net::Ipv4Addr) -> Result<(), DataplaneError> {
        self.0.lock().expect("lock").add_clusterip(vip)
    }
    fn remove_clusterip(&mut self, vip: std::net::Ipv4Addr) -> Result<(), DataplaneError> {
        self.0.lock().expect("lock").remove_clusterip(vip)
    }
    fn sweep_unclaimed(&mut self) -> Result<(), DataplaneError> {
        self.0.lock().expect("lock").sweep_unclaimed()
    }
}

/// Polls the maps until `check` holds, with a deadline.
async fn eventually(maps: &Shared, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = maps.dump();
        if check(&dump) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; maps:\n{dump}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn slice(ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> =
        ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("slice")
}

#[test]
fn services_and_slices_through_the_api_reach_the_proxy() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let maps = Shared(Arc::new(Mutex::new(LbDataplane::new(MemoryMaps::new(251, 64)))));
        let mut feeder = watch::Feeder::new(ServiceProxy::new(ProxyContext::default(), maps.clone()));
        let client = server.client.clone();
        let proxy = tokio::spawn(async move { watch::run(client, &mut feeder).await });

        let services: Api<Service> = Api::namespaced(server.client.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(server.client.clone(), "default");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"clusterIP": "10.96.7.7", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .expect("service");
        services.create(&PostParams::default(), &svc).await.expect("create service");
        slices
            .create(&PostParams::default(), &slice(&["10.244.1.1", "10.244.2.2"]))
            .await
            .expect("create slice");
        eventually(&maps, "two backends", |d| d.contains("frontend 10.96.7.7:80/TCP backends=2")).await;

        let mut current = slices.get("web-1").await.expect("get slice");
        current.endpoints = slice(&["10.244.1.1", "10.244.2.2", "10.244.3.3"]).endpoints;
        slices.replace("web-1", &PostParams::default(), &current).await.expect("replace slice");
        eventually(&maps, "a third backend", |d| d.contains("backends=3") && d.contains("10.244.3.3:8080"))
            .await;

        services.delete("web", &DeleteParams::default()).await.expect("delete service");
        eventually(&maps, "the frontend gone", |d| !d.contains("10.96.7.7")).await;
        proxy.abort();
    });
}
