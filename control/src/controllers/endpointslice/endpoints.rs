//! The endpoints a Service should have, computed from its pods alone: which pods count, what
//! each endpoint says about its pod, and which port list (hence which slices) it belongs to.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    net::Ipv4Addr,
};

use k8s_openapi::api::{
    core::v1::{ObjectReference, Pod, Service},
    discovery::v1::{Endpoint, EndpointConditions, EndpointPort},
};

use super::ports::{self, PortKey};

/// The endpoints that share one port list, keyed (and so ordered) by address.
#[derive(Debug, Default)]
pub(super) struct Group {
    pub ports: Vec<EndpointPort>,
    pub endpoints: BTreeMap<Ipv4Addr, Endpoint>,
}

/// Every endpoint `service` should have, grouped by port list.
pub(super) fn desired(
    service: &Service,
    pods: &[&Pod],
    node_zone: &impl Fn(&str) -> Option<String>,
) -> BTreeMap<PortKey, Group> {
    let mut groups: BTreeMap<PortKey, Group> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selected(service, p)) {
        let Some(ip) = address(pod) else { continue };
        let ports = ports::endpoint_ports(service, pod);
        let group = groups.entry(ports::key(&ports)).or_insert_with(|| Group { ports, ..Group::default() });
        let endpoint = endpoint(service, pod, ip, node_zone);
        match group.endpoints.entry(ip) {
            Entry::Vacant(e) => {
                e.insert(endpoint);
            }
            Entry::Occupied(mut e) => {
                if rank(&endpoint) < rank(e.get()) {
                    e.insert(endpoint);
                }
            }
        }
    }
    groups
}

/// A pod in the Service's namespace, matching every selector label, not finished. Terminating
/// pods are kept (flagged) so consumers can drain connections to them gracefully.
fn selected(service: &Service, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.namespace == service.metadata.namespace
        && selector.into_iter().flatten().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The pod's IPv4 address: the first IPv4 entry of `status.podIPs`, or `status.podIP` when the
/// list is absent (older writers set only that). Parsing also normalises the text, so the same
/// address is always written the same way. A pod with none (not started, or IPv6-only) has no
/// endpoint in an IPv4 slice.
fn address(pod: &Pod) -> Option<Ipv4Addr> {
    let status = pod.status.as_ref()?;
    match status.pod_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().find_map(|p| p.ip.parse().ok()),
        _ => status.pod_ip.as_deref()?.parse().ok(),
    }
}

/// The endpoint for one pod. Conditions follow upstream: `serving` is the pod's Ready
/// condition; `ready` is serving and not terminating, or always true when the Service publishes
/// not-ready addresses (what that flag has always meant); `terminating` is a set deletion
/// timestamp.
fn endpoint(
    service: &Service,
    pod: &Pod,
    ip: Ipv4Addr,
    node_zone: &impl Fn(&str) -> Option<String>,
) -> Endpoint {
    let spec = pod.spec.as_ref();
    let serving = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let node = spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
    let hostname = spec
        .filter(|s| s.subdomain.is_some() && s.subdomain == service.metadata.name)
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(publish || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        zone: node.as_deref().and_then(node_zone).filter(|z| !z.is_empty()),
        node_name: node,
        hostname,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

/// Which of two pods sharing an address is listed (lowest wins): a live one over a terminating
/// one, a serving one over one that is not, then by name so the choice never flips between runs.
fn rank(e: &Endpoint) -> (bool, bool, Option<&str>) {
    let c = e.conditions.as_ref();
    (
        c.and_then(|c| c.terminating).unwrap_or(false),
        !c.and_then(|c| c.serving).unwrap_or(false),
        e.target_ref.as_ref().and_then(|t| t.name.as_deref()),
    )
}
