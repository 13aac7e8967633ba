//! Golden tests of the control path, no privileges needed: Service + EndpointSlice YAML in
//! `tests/golden/<case>.yaml` → the service proxy → an in-memory copy of the datapath's maps →
//! its dump, compared with `tests/golden/<case>.txt`. `SKIFF_UPDATE_GOLDEN=1` rewrites the
//! expected files (review the diff before committing).

use std::path::{Path, PathBuf};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use serde::Deserialize as _;
use skiff_agent::proxy::{LbDataplane, ProxyContext, ServiceProxy, memory::MemoryMaps};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load(case: &str) -> (Vec<Service>, Vec<EndpointSlice>) {
    let text = std::fs::read_to_string(golden_dir().join(format!("{case}.yaml"))).expect("fixture");
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc).expect("yaml");
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("Service") => services.push(serde_yaml::from_value(value).expect("Service")),
            Some("EndpointSlice") => slices.push(serde_yaml::from_value(value).expect("EndpointSlice")),
            other => panic!("{case}: unexpected kind {other:?}"),
        }
    }
    (services, slices)
}

fn render(case: &str) -> String {
    let (services, slices) = load(case);
    let ctx = ProxyContext {
        node_name: "node-a".into(),
        proxy_name: None,
        nodeport_addresses: vec![std::net::Ipv4Addr::new(192, 168, 5, 10)],
    };
    let mut proxy = ServiceProxy::new(ctx, LbDataplane::new(MemoryMaps::new(251, 64)));
    let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
    for svc in &services {
        proxy.sync_service(svc, &slice_refs).expect("sync");
    }
    let stats = proxy.stats();
    let mut out = proxy.dataplane().store().dump();
    out.push_str(&format!("unsupported-ports {}\n", stats.unsupported_ports));
    out
}

fn check(case: &str) {
    let got = render(case);
    let path = golden_dir().join(format!("{case}.txt"));
    if std::env::var_os("SKIFF_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "{case}: map dump differs from {} (SKIFF_UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}

#[test]
fn basic() {
    check("basic");
}

#[test]
fn kep1669() {
    check("kep1669");
}

#[test]
fn filters() {
    check("filters");
}

#[test]
fn policies() {
    check("policies");
}

#[test]
fn external() {
    check("external");
}
