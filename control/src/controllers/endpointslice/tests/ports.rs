//! Port resolution and grouping slices by port list.

use k8s_openapi::api::discovery::v1::EndpointPort;
use serde_json::{Value, json};

use super::*;

fn port(name: &str, number: i32, protocol: &str) -> EndpointPort {
    EndpointPort {
        name: Some(name.into()),
        port: Some(number),
        protocol: Some(protocol.into()),
        app_protocol: None,
    }
}

/// A pod like [`pod`] whose spec is replaced by `spec`.
fn pod_with_spec(name: &str, ip: &str, spec: Value) -> Pod {
    let mut p = pod(name, ip, true);
    p.spec = Some(from(spec));
    p
}

fn container_ports(ports: Value) -> Value {
    json!({"containers": [{"name": "app", "image": "app", "ports": ports}]})
}

/// The port list of the slice holding `ip`.
fn ports_of(slices: &[EndpointSlice], ip: &str) -> Vec<EndpointPort> {
    let holds = |s: &&EndpointSlice| s.endpoints.iter().flatten().any(|e| e.addresses == [ip]);
    slices.iter().find(holds).and_then(|s| s.ports.clone()).expect("slice with that endpoint")
}

#[test]
fn named_target_ports_split_pods_into_slices_by_resolved_ports() {
    let svc = service_with(json!({"ports": [
        {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
        {"name": "metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"},
    ]}));
    let pods = vec![
        pod_with_spec("a", "10.1.0.1", container_ports(json!([{"name": "web", "containerPort": 8080}]))),
        pod_with_spec("b", "10.1.0.2", container_ports(json!([{"name": "web", "containerPort": 9090}]))),
        pod_with_spec("a2", "10.1.0.3", container_ports(json!([{"name": "web", "containerPort": 8080}]))),
        pod_with_spec("none", "10.1.0.4", container_ports(json!([]))),
    ];
    let mut cluster = Cluster::default();
    let plan = cluster.plan(&svc, &pods);
    assert_eq!(plan.create.len(), 3, "{plan:?}");
    let metrics = port("metrics", 9100, "TCP");
    assert_eq!(ports_of(&plan.create, "10.1.0.1"), [port("http", 8080, "TCP"), metrics.clone()]);
    assert_eq!(ports_of(&plan.create, "10.1.0.3"), [port("http", 8080, "TCP"), metrics.clone()]);
    assert_eq!(ports_of(&plan.create, "10.1.0.2"), [port("http", 9090, "TCP"), metrics.clone()]);
    assert_eq!(ports_of(&plan.create, "10.1.0.4"), [metrics], "a pod without the named port omits it");
    cluster.apply(plan);
    assert!(cluster.plan(&svc, &pods).is_empty());
}

#[test]
fn named_ports_match_protocol_and_sidecars_but_not_plain_init_containers() {
    let svc =
        service_with(json!({"ports": [{"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"}]}));
    let tcp_only =
        pod_with_spec("tcp", "10.1.0.1", container_ports(json!([{"name": "dns", "containerPort": 5353}])));
    let sidecar = pod_with_spec(
        "sidecar",
        "10.1.0.2",
        json!({"containers": [], "initContainers": [{"name": "s", "restartPolicy": "Always",
            "ports": [{"name": "dns", "containerPort": 1053, "protocol": "UDP"}]}]}),
    );
    let init = pod_with_spec(
        "init",
        "10.1.0.3",
        json!({"containers": [], "initContainers": [{"name": "i",
            "ports": [{"name": "dns", "containerPort": 2053, "protocol": "UDP"}]}]}),
    );
    let plan = plan_for(&svc, &[tcp_only, sidecar, init], &[]);
    assert_eq!(ports_of(&plan.create, "10.1.0.1"), []);
    assert_eq!(ports_of(&plan.create, "10.1.0.2"), [port("dns", 1053, "UDP")]);
    assert_eq!(ports_of(&plan.create, "10.1.0.3"), []);
}

#[test]
fn unset_target_port_is_the_service_port_and_fields_are_copied() {
    let svc = service_with(json!({"ports": [
        {"port": 443, "appProtocol": "https"},
        {"name": "zero", "port": 81, "targetPort": 0, "protocol": "SCTP"},
    ]}));
    let plan = plan_for(&svc, &pods(1), &[]);
    let https = EndpointPort { app_protocol: Some("https".into()), ..port("", 443, "TCP") };
    assert_eq!(ports_of(&plan.create, &ip(0)), [https, port("zero", 81, "SCTP")]);
}

#[test]
fn changed_service_ports_rewrite_slices_in_place() {
    let pods = pods(150);
    let mut cluster = Cluster::default();
    cluster.settle(&service(), &pods);
    let names: Vec<_> = cluster.slices.iter().map(|s| s.metadata.name.clone()).collect();

    let svc = service_with(json!({"ports": [{"name": "http", "port": 80, "targetPort": 8081}]}));
    let plan = cluster.plan(&svc, &pods);
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    assert_eq!(plan.update.len(), 2);
    cluster.apply(plan);
    assert_eq!(cluster.slices.iter().map(|s| s.metadata.name.clone()).collect::<Vec<_>>(), names);
    for slice in &cluster.slices {
        assert_eq!(slice.ports, Some(vec![port("http", 8081, "TCP")]));
    }
    assert_eq!(addresses(&cluster.slices).len(), 150);
    assert!(cluster.plan(&svc, &pods).is_empty());
}

#[test]
fn a_port_set_that_no_longer_applies_loses_its_slice() {
    let svc = service_with(json!({"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}));
    let mut pods = vec![
        pod_with_spec("a", "10.1.0.1", container_ports(json!([{"name": "web", "containerPort": 8080}]))),
        pod_with_spec("b", "10.1.0.2", container_ports(json!([{"name": "web", "containerPort": 9090}]))),
    ];
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods);
    assert_eq!(cluster.slices.len(), 2);

    let gone = cluster.slices.iter().find(|s| addresses(std::slice::from_ref(s)) == ["10.1.0.2"]);
    let gone = gone.and_then(|s| s.metadata.name.clone()).expect("slice of pod b");
    pods.pop();
    let plan = cluster.plan(&svc, &pods);
    assert_eq!((plan.create.len(), plan.update.len()), (0, 0), "{plan:?}");
    assert_eq!(plan.delete, [gone]);
}
