//! What each endpoint says about its pod, and which pods get one.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort},
    },
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
};
use serde_json::json;

use super::*;

fn deleting() -> Option<Time> {
    Some(from(json!("2026-01-01T00:00:00Z")))
}

#[test]
fn first_plan_creates_one_complete_slice() {
    let pods = vec![pod("b", "10.1.0.2", false), pod("a", "10.1.0.1", true)];
    let plan = plan_for(&service(), &pods, &[]);
    assert!(plan.update.is_empty() && plan.delete.is_empty());
    let [slice] = plan.create.as_slice() else { panic!("one create: {plan:?}") };

    let meta = &slice.metadata;
    assert_eq!(meta.name, None);
    assert_eq!(meta.generate_name.as_deref(), Some("web-"));
    assert_eq!(meta.namespace.as_deref(), Some(NS));
    let labels: BTreeMap<String, String> = from(json!({
        "team": "a",
        "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "skiff-control",
    }));
    assert_eq!(meta.labels.as_ref(), Some(&labels));
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: "web".into(),
        uid: SVC_UID.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    assert_eq!(meta.owner_references, Some(vec![owner]));
    assert_eq!(slice.address_type, "IPv4");
    let port = EndpointPort {
        name: Some("http".into()),
        port: Some(8080),
        protocol: Some("TCP".into()),
        app_protocol: None,
    };
    assert_eq!(slice.ports, Some(vec![port]));

    let endpoints = slice.endpoints.as_deref().unwrap_or_default();
    let listed: Vec<&str> = endpoints.iter().map(|e| e.addresses[0].as_str()).collect();
    assert_eq!(listed, ["10.1.0.1", "10.1.0.2"], "sorted by address, not pod order");
    let expected = Endpoint {
        addresses: vec!["10.1.0.1".into()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        node_name: Some("node-a".into()),
        zone: Some("zone-1".into()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(NS.into()),
            name: Some("a".into()),
            uid: Some("uid-a".into()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    };
    assert_eq!(endpoints[0], expected);
    assert_eq!(conditions(&plan.create, "10.1.0.2"), (Some(false), Some(false), Some(false)));
}

#[test]
fn readiness_flip_updates_only_that_endpoint_in_place() {
    let svc = service();
    let mut pods = pods(3);
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods);
    let before = cluster.slices[0].clone();

    pods[1] = pod("p1", &ip(1), false);
    let plan = cluster.plan(&svc, &pods);
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    let [updated] = plan.update.as_slice() else { panic!("one update: {plan:?}") };
    assert_eq!(updated.metadata.name, before.metadata.name);
    assert_eq!(updated.metadata.resource_version, before.metadata.resource_version);
    let (old, new) =
        (before.endpoints.clone().unwrap_or_default(), updated.endpoints.clone().unwrap_or_default());
    assert_eq!(new.len(), 3);
    assert_eq!((&new[0], &new[2]), (&old[0], &old[2]), "the other endpoints are untouched");
    assert_eq!(conditions(&plan.update, &ip(1)), (Some(false), Some(false), Some(false)));
    cluster.apply(plan);
    assert!(cluster.plan(&svc, &pods).is_empty());
}

#[test]
fn terminating_pods_stay_listed_but_not_ready() {
    let mut ready = pod("ready", "10.1.0.1", true);
    let mut unready = pod("unready", "10.1.0.2", false);
    ready.metadata.deletion_timestamp = deleting();
    unready.metadata.deletion_timestamp = deleting();
    let plan = plan_for(&service(), &[ready, unready], &[]);
    assert_eq!(conditions(&plan.create, "10.1.0.1"), (Some(false), Some(true), Some(true)));
    assert_eq!(conditions(&plan.create, "10.1.0.2"), (Some(false), Some(false), Some(true)));
}

#[test]
fn publish_not_ready_addresses_makes_every_endpoint_ready() {
    let svc = service_with(json!({"publishNotReadyAddresses": true}));
    let mut terminating = pod("t", "10.1.0.3", true);
    terminating.metadata.deletion_timestamp = deleting();
    let pods = vec![pod("ok", "10.1.0.1", true), pod("starting", "10.1.0.2", false), terminating];
    let plan = plan_for(&svc, &pods, &[]);
    // Upstream: `ready` is forced, `serving` still reports the pod's own readiness.
    assert_eq!(conditions(&plan.create, "10.1.0.1"), (Some(true), Some(true), Some(false)));
    assert_eq!(conditions(&plan.create, "10.1.0.2"), (Some(true), Some(false), Some(false)));
    assert_eq!(conditions(&plan.create, "10.1.0.3"), (Some(true), Some(true), Some(true)));
}

#[test]
fn node_zone_and_hostname_are_filled_from_pod_and_node() {
    let on_b = from(json!({
        "metadata": {"name": "on-b", "namespace": NS, "labels": {"app": "web"}},
        "spec": {"nodeName": "node-b", "hostname": "db-0", "subdomain": "web", "containers": []},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.1.0.2"}]},
    }));
    let other_subdomain = from(json!({
        "metadata": {"name": "other", "namespace": NS, "labels": {"app": "web"}},
        "spec": {"hostname": "x", "subdomain": "elsewhere", "containers": []},
        "status": {"phase": "Running", "podIP": "10.1.0.3"},
    }));
    let pods = vec![pod("on-a", "10.1.0.1", true), on_b, other_subdomain];
    let plan = plan_for(&service(), &pods, &[]);
    let a = endpoint(&plan.create, "10.1.0.1");
    assert_eq!(
        (a.node_name.as_deref(), a.zone.as_deref(), a.hostname.as_deref()),
        (Some("node-a"), Some("zone-1"), None)
    );
    let b = endpoint(&plan.create, "10.1.0.2");
    assert_eq!(
        (b.node_name.as_deref(), b.zone.as_deref(), b.hostname.as_deref()),
        (Some("node-b"), None, Some("db-0"))
    );
    let c = endpoint(&plan.create, "10.1.0.3");
    assert_eq!((c.node_name.as_deref(), c.zone.as_deref(), c.hostname.as_deref()), (None, None, None));
}

#[test]
fn only_selected_addressed_live_ipv4_pods_count() {
    let mut pods = vec![pod("in", "10.1.0.1", true)];
    let mut finished = pod("done", "10.1.0.2", true);
    finished.status.as_mut().expect("status").phase = Some("Succeeded".into());
    let mut failed = pod("failed", "10.1.0.3", true);
    failed.status.as_mut().expect("status").phase = Some("Failed".into());
    let mut unaddressed = pod("pending", "", false);
    let status = unaddressed.status.as_mut().expect("status");
    (status.pod_ip, status.pod_ips) = (None, None);
    let v6_only = pod("v6", "fd00::4", true);
    let mut other_namespace = pod("elsewhere", "10.1.0.5", true);
    other_namespace.metadata.namespace = Some("other".into());
    let mut unlabelled = pod("unlabelled", "10.1.0.6", true);
    unlabelled.metadata.labels = Some(from(json!({"app": "api"})));
    pods.extend([finished, failed, unaddressed, v6_only, other_namespace, unlabelled]);
    let dual: Pod = from(json!({
        "metadata": {"name": "dual", "namespace": NS, "labels": {"app": "web", "extra": "x"}},
        "spec": {"containers": []},
        "status": {"phase": "Running", "podIP": "fd00::7", "podIPs": [{"ip": "fd00::7"}, {"ip": "10.1.0.7"}]},
    }));
    pods.push(dual);

    let plan = plan_for(&service(), &pods, &[]);
    assert_eq!(addresses(&plan.create), ["10.1.0.1", "10.1.0.7"]);
}

#[test]
fn pods_sharing_an_address_give_one_endpoint() {
    let mut old = pod("old", "10.1.0.1", true);
    old.metadata.deletion_timestamp = deleting();
    let pods = vec![old, pod("new", "10.1.0.1", true)];
    let plan = plan_for(&service(), &pods, &[]);
    assert_eq!(addresses(&plan.create), ["10.1.0.1"]);
    let target = endpoint(&plan.create, "10.1.0.1").target_ref.as_ref().and_then(|t| t.name.as_deref());
    assert_eq!(target, Some("new"), "the live pod wins over the terminating one");
}
