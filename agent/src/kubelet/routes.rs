//! Routes to the other nodes' pod CIDRs, via their node IPs, from the Node objects: pods on
//! different nodes talk directly, without NAT or encapsulation, on a flat L2/L3 network.
//!
//! The routes carry their own routing protocol number ([`ROUTE_PROTOCOL`]), so the agent knows
//! which routes are its own: on every change it computes the whole set from the nodes it sees,
//! adds or replaces what differs, and deletes its routes for nodes that are gone.

use std::{collections::BTreeMap, net::Ipv4Addr};

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Node;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol},
};

/// The `proto` of skiff's routes (`ip route show proto 196`).
pub const ROUTE_PROTOCOL: u8 = 196;

/// (pod CIDR address, prefix length) → the node IP it is reached through.
pub type RouteSet = BTreeMap<(Ipv4Addr, u8), Ipv4Addr>;

/// The routes `nodes` call for, from the point of view of node `me`.
pub fn desired(nodes: &[Node], me: &str) -> RouteSet {
    let mut routes = RouteSet::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(me) {
            continue;
        }
        let Some(spec) = &node.spec else { continue };
        let Some(ip) = node.status.as_ref().and_then(|s| s.addresses.as_ref()).and_then(|a| {
            a.iter().find(|a| a.type_ == "InternalIP").and_then(|a| a.address.parse::<Ipv4Addr>().ok())
        }) else {
            continue;
        };
        let cidrs = spec.pod_cidrs.clone().unwrap_or_default().into_iter().chain(spec.pod_cidr.clone());
        for cidr in cidrs {
            if let Some((addr, len)) = cidr.split_once('/')
                && let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u8>())
                && len <= 32
            {
                routes.insert((addr, len), ip);
            }
        }
    }
    routes
}

/// skiff's routes now in the main table.
pub async fn current(handle: &Handle) -> Result<RouteSet, rtnetlink::Error> {
    let mut stream = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    let mut routes = RouteSet::new();
    while let Some(msg) = stream.try_next().await? {
        if msg.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
            continue;
        }
        let (mut dst, mut gw) = (None, None);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                _ => {}
            }
        }
        if let (Some(dst), Some(gw)) = (dst, gw) {
            routes.insert((dst, msg.header.destination_prefix_length), gw);
        }
    }
    Ok(routes)
}

fn route(dst: Ipv4Addr, len: u8, gw: Ipv4Addr) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, len)
        .gateway(gw)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build()
}

/// Makes skiff's routes match `want`: adds or replaces what differs, deletes the rest. A route
/// the kernel refuses (its gateway unreachable) is reported and the others still applied.
pub async fn sync(handle: &Handle, want: &RouteSet) -> Result<(), Vec<String>> {
    let have = current(handle).await.map_err(|e| vec![format!("listing routes: {e}")])?;
    let mut errors = Vec::new();
    for (&(dst, len), &gw) in want {
        if have.get(&(dst, len)) == Some(&gw) {
            continue;
        }
        if let Err(e) = handle.route().add(route(dst, len, gw)).replace().execute().await {
            errors.push(format!("route {dst}/{len} via {gw}: {e}"));
        }
    }
    for (&(dst, len), &gw) in &have {
        if !want.contains_key(&(dst, len))
            && let Err(e) = handle.route().del(route(dst, len, gw)).execute().await
        {
            errors.push(format!("deleting route {dst}/{len} via {gw}: {e}"));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        let addresses: Vec<_> =
            ip.into_iter().map(|ip| json!({"type": "InternalIP", "address": ip})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": addresses},
        }))
        .expect("node")
    }

    #[test]
    fn every_other_node_with_a_cidr_and_an_address_gets_a_route() {
        let nodes = [
            node("me", Some("10.244.1.0/24"), Some("192.168.1.1")),
            node("b", Some("10.244.2.0/24"), Some("192.168.1.2")),
            node("no-cidr", None, Some("192.168.1.3")),
            node("no-ip", Some("10.244.4.0/24"), None),
        ];
        let routes = desired(&nodes, "me");
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[&(Ipv4Addr::new(10, 244, 2, 0), 24)], Ipv4Addr::new(192, 168, 1, 2));
    }
}
