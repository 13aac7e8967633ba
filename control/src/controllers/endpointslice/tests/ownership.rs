//! Which slices are ours to change, and which Services get slices at all.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::controllers::endpointslice::{LABEL_HEADLESS, LABEL_MANAGED_BY, LABEL_SERVICE_NAME};

/// A slice for `web` listing `ip`, managed by `manager` and owned by the Service with `owner_uid`.
fn slice(name: &str, manager: Option<&str>, owner_uid: &str, ip: &str) -> EndpointSlice {
    let mut labels = json!({"kubernetes.io/service-name": "web"});
    if let Some(m) = manager {
        labels["endpointslice.kubernetes.io/managed-by"] = json!(m);
    }
    from(json!({
        "metadata": {
            "name": name, "namespace": NS, "resourceVersion": "7", "labels": labels,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": owner_uid}],
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
    }))
}

fn foreign() -> Vec<EndpointSlice> {
    vec![
        slice("manual", None, SVC_UID, "10.1.0.1"),
        slice("mesh", Some("mesh-controller"), SVC_UID, "10.1.0.1"),
    ]
}

#[test]
fn services_without_selector_only_lose_our_slices() {
    let mut existing = foreign();
    existing.push(slice("ours", Some("skiff-control"), SVC_UID, "10.1.0.1"));
    for svc in [
        service_with(json!({"selector": null})),
        service_with(json!({"selector": {}})),
        service_with(json!({"type": "ExternalName", "externalName": "example.com"})),
    ] {
        let plan = plan_for(&svc, &pods(2), &existing);
        assert_eq!(plan, Plan { delete: vec!["ours".into()], ..Plan::default() });
        assert!(plan_for(&svc, &pods(2), &foreign()).is_empty());
    }
}

#[test]
fn the_api_servers_own_slice_for_a_selectorless_service_stays() {
    // As bootstrap writes it for `kubernetes`: our managed-by label, no owner reference.
    let mut bootstrap = slice("web", Some("skiff-control"), SVC_UID, "192.168.1.10");
    bootstrap.metadata.owner_references = None;
    let svc = service_with(json!({"selector": null}));
    assert!(plan_for(&svc, &[], &[bootstrap]).is_empty());
}

#[test]
fn foreign_slices_are_never_touched() {
    let svc = service();
    let mut cluster = Cluster { slices: foreign(), ..Cluster::default() };
    let plan = cluster.plan(&svc, &pods(1));
    assert_eq!((plan.create.len(), plan.update.len(), plan.delete.len()), (1, 0, 0), "{plan:?}");
    cluster.settle(&svc, &pods(1));
    assert_eq!(cluster.slices.len(), 3);
    assert_eq!(cluster.slices[..2], foreign()[..]);
    // Even when there are no endpoints the placeholder is ours; theirs stay.
    cluster.settle(&svc, &[]);
    assert_eq!(cluster.slices[..2], foreign()[..]);
}

#[test]
fn slices_of_an_earlier_service_or_other_address_type_are_replaced_not_reused() {
    let svc = service();
    let mut v6 = slice("ours-v6", Some("skiff-control"), SVC_UID, "fd00::1");
    v6.address_type = "IPv6".into();
    let stale = slice("stale", Some("skiff-control"), "earlier-uid", &ip(0));
    let plan = plan_for(&svc, &pods(1), &[stale, v6]);
    assert_eq!(plan.delete, ["ours-v6", "stale"]);
    assert!(plan.update.is_empty());
    assert_eq!(plan.create.len(), 1);
}

#[test]
fn slices_being_deleted_are_left_alone() {
    let svc = service();
    let mut dying = slice("dying", Some("skiff-control"), SVC_UID, &ip(0));
    dying.metadata.deletion_timestamp = Some(from(json!("2026-01-01T00:00:00Z")));
    let plan = plan_for(&svc, &pods(1), &[dying]);
    assert!(plan.update.is_empty() && plan.delete.is_empty(), "{plan:?}");
    assert_eq!(addresses(&plan.create), [ip(0)], "its endpoint gets a new home");
}

#[test]
fn labels_follow_the_service_but_reserved_keys_stay_ours() {
    let mut svc = service_with(json!({"clusterIP": "None"}));
    svc.metadata.labels = Some(from(json!({
        "team": "a",
        "kubernetes.io/service-name": "spoofed",
        "endpointslice.kubernetes.io/managed-by": "spoofed",
        "service.kubernetes.io/headless": "spoofed",
    })));
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods(2));
    let expected: BTreeMap<String, String> = [
        ("team", "a"),
        (LABEL_SERVICE_NAME, "web"),
        (LABEL_MANAGED_BY, "skiff-control"),
        (LABEL_HEADLESS, ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(cluster.slices[0].metadata.labels.as_ref(), Some(&expected));

    // A label change on the Service rewrites the slice's labels and nothing else.
    svc.metadata.labels = Some(from(json!({"team": "b"})));
    let before = cluster.slices[0].clone();
    let plan = cluster.plan(&svc, &pods(2));
    let [updated] = plan.update.as_slice() else { panic!("one update: {plan:?}") };
    assert_eq!((&updated.endpoints, &updated.ports), (&before.endpoints, &before.ports));
    let team = updated.metadata.labels.as_ref().and_then(|l| l.get("team"));
    assert_eq!(team.map(String::as_str), Some("b"));
    cluster.apply(plan);
    assert!(cluster.plan(&svc, &pods(2)).is_empty());
}
