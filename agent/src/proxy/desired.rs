//! From one Service and its EndpointSlices to its frontends: a pure function, so it is tested with
//! YAML fixtures and called incrementally (only the Service an event touched is recomputed).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use k8s_openapi::api::{
    core::v1::{Service, ServicePort},
    discovery::v1::{Endpoint, EndpointSlice},
};

use super::model::{BackendAddr, Frontend, FrontendKey, Protocol, ServiceRef};

/// The label naming the proxy a Service is meant for (kube-proxy skips Services labelled for
/// another proxy, and so does skiff).
pub const SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10800;

/// Who this proxy is.
#[derive(Debug, Clone, Default)]
pub struct ProxyContext {
    /// This node's name (for the `Local` traffic policies and endpoint locality).
    pub node_name: String,
    /// Our `service-proxy-name`; `None` handles only unlabelled Services.
    pub proxy_name: Option<String>,
    /// The node's addresses NodePorts are served on (kube-proxy's `--nodeport-addresses`); empty:
    /// no NodePort frontends.
    pub nodeport_addresses: Vec<Ipv4Addr>,
}

/// Why part of a Service is not programmed (reported in logs and counters, never silent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// A port whose protocol the load balancer does not translate (SCTP); the datapath rejects it.
    UnsupportedProtocol { service: ServiceRef, port: u16, protocol: String },
}

/// The frontends of one Service, plus what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFrontends {
    /// The Service's IPv4 ClusterIPs: marked as such even when no port can be programmed, so
    /// traffic to an unserved port or protocol is rejected rather than routed nowhere.
    pub vips: BTreeSet<Ipv4Addr>,
    /// ClusterIP frontends, and external ones (NodePorts, external IPs, load-balancer addresses).
    pub frontends: BTreeMap<FrontendKey, Frontend>,
    pub skipped: Vec<Skipped>,
    /// `spec.healthCheckNodePort` (LoadBalancer, `externalTrafficPolicy: Local`) and how many of
    /// the Service's ready endpoints run on this node.
    pub health: Option<(u16, usize)>,
}

/// Whether this proxy handles the Service at all.
pub fn handles(svc: &Service, ctx: &ProxyContext) -> bool {
    let label = svc.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_PROXY_NAME));
    match (label, &ctx.proxy_name) {
        (None, _) => true,
        (Some(wanted), Some(ours)) => wanted == ours,
        (Some(_), None) => false,
    }
}

/// The frontends of `svc` given its EndpointSlices (`slices` may hold other Services' slices too;
/// only those labelled for `svc` count).
pub fn service_frontends(svc: &Service, slices: &[&EndpointSlice], ctx: &ProxyContext) -> ServiceFrontends {
    let mut out = ServiceFrontends::default();
    if !handles(svc, ctx) {
        return out;
    }
    let service = ServiceRef {
        namespace: svc.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        name: svc.metadata.name.clone().unwrap_or_default(),
    };
    let Some(spec) = &svc.spec else { return out };
    if spec.type_.as_deref() == Some("ExternalName") {
        return out;
    }
    // Headless ("None") and IPv6 ClusterIPs program nothing here.
    let vips: Vec<Ipv4Addr> = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if vips.is_empty() {
        return out;
    }
    out.vips = vips.iter().copied().collect();
    out.health = health_check(svc, slices, &service, ctx);
    let affinity_timeout_s = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let own: Vec<&EndpointSlice> = slices.iter().copied().filter(|s| belongs_to(s, &service)).collect();
    let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let external_ips: Vec<Ipv4Addr> =
        spec.external_ips.iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
    let lb_ips: Vec<Ipv4Addr> = if spec.type_.as_deref() == Some("LoadBalancer") {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_ref()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };

    let source_ranges: BTreeSet<(Ipv4Addr, u8)> =
        spec.load_balancer_source_ranges.iter().flatten().filter_map(|r| parse_cidr(r)).collect();
    for port in spec.ports.iter().flatten() {
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let proto = match protocol {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            other => {
                out.skipped.push(Skipped::UnsupportedProtocol {
                    service: service.clone(),
                    port: port.port as u16,
                    protocol: other.to_owned(),
                });
                continue;
            }
        };
        let frontend = |local_only: bool, external: bool| {
            let (active, draining) =
                choose_endpoints(port, protocol, proto, &own, &ctx.node_name, local_only);
            Frontend {
                service: service.clone(),
                port_name: port.name.clone().unwrap_or_default(),
                active,
                draining,
                affinity_timeout_s,
                local_only,
                external,
                source_ranges: BTreeSet::new(),
            }
        };
        let internal = frontend(internal_local, false);
        for vip in &vips {
            out.frontends.insert(FrontendKey { vip: *vip, port: port.port as u16, proto }, internal.clone());
        }
        // External frontends: this node's addresses on the NodePort, and the external and
        // load-balancer addresses on the Service port, all with the external traffic policy.
        let node_port = port.node_port.filter(|_| node_ports).and_then(|p| u16::try_from(p).ok());
        let mut external = Vec::new();
        if let Some(node_port) = node_port {
            external.extend(ctx.nodeport_addresses.iter().map(|ip| (*ip, node_port)));
        }
        external.extend(external_ips.iter().map(|ip| (*ip, port.port as u16)));
        if !external.is_empty() || !lb_ips.is_empty() {
            let outside = frontend(external_local, true);
            for (ip, port) in external {
                out.frontends.insert(FrontendKey { vip: ip, port, proto }, outside.clone());
            }
            // loadBalancerSourceRanges apply to the load-balancer addresses (as kube-proxy does).
            let balancer = Frontend { source_ranges: source_ranges.clone(), ..outside };
            for ip in &lb_ips {
                out.frontends
                    .insert(FrontendKey { vip: *ip, port: port.port as u16, proto }, balancer.clone());
            }
        }
    }
    out
}

/// The health port and this node's ready endpoints (distinct addresses) of a LoadBalancer
/// Service with `externalTrafficPolicy: Local`.
fn health_check(
    svc: &Service,
    slices: &[&EndpointSlice],
    service: &ServiceRef,
    ctx: &ProxyContext,
) -> Option<(u16, usize)> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.external_traffic_policy.as_deref() != Some("Local")
    {
        return None;
    }
    let port = u16::try_from(spec.health_check_node_port?).ok()?;
    let local: BTreeSet<&String> = slices
        .iter()
        .filter(|s| belongs_to(s, service))
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|ep| !ctx.node_name.is_empty() && ep.node_name.as_deref() == Some(ctx.node_name.as_str()))
        .filter(|ep| conditions(ep).0)
        .flat_map(|ep| ep.addresses.iter())
        .collect();
    Some((port, local.len()))
}

/// `10.0.0.0/8` (an address alone is a /32); the network's address, host bits cleared.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.trim().split_once('/').unwrap_or((text.trim(), "32"));
    let (addr, len): (Ipv4Addr, u8) = (addr.parse().ok()?, len.parse().ok().filter(|l| *l <= 32)?);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((Ipv4Addr::from(u32::from(addr) & mask), len))
}

fn belongs_to(slice: &EndpointSlice, service: &ServiceRef) -> bool {
    slice.address_type == "IPv4"
        && slice.metadata.namespace.as_deref().unwrap_or("default") == service.namespace
        && slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&service.name)
}

/// Endpoint conditions with Kubernetes' defaults: a nil `ready` means ready, a nil `serving` means
/// "same as ready", a nil `terminating` means not terminating.
fn conditions(ep: &Endpoint) -> (bool, bool, bool) {
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    (ready, serving, terminating)
}

/// KEP-1669: new flows go to ready endpoints; with none ready, to serving-and-terminating ones;
/// with none of those either, nowhere (the datapath rejects). Serving-and-terminating endpoints
/// not chosen are "draining": their open flows continue. Endpoints on `node` are marked local;
/// with `local_only`, only those count at all.
fn choose_endpoints(
    port: &ServicePort,
    protocol: &str,
    proto: Protocol,
    slices: &[&EndpointSlice],
    node: &str,
    local_only: bool,
) -> (BTreeSet<BackendAddr>, BTreeSet<BackendAddr>) {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        // The slice port with the Service port's name carries the resolved target port for every
        // endpoint in this slice (named target ports resolve per pod, hence per slice).
        let wanted = port.name.as_deref().unwrap_or("");
        let Some(target) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == wanted && p.protocol.as_deref().unwrap_or("TCP") == protocol
        }) else {
            continue;
        };
        let Some(target_port) = target.port.and_then(|p| u16::try_from(p).ok()) else { continue };
        for ep in slice.endpoints.iter().flatten() {
            let local = !node.is_empty() && ep.node_name.as_deref() == Some(node);
            if local_only && !local {
                continue;
            }
            let (is_ready, serving, is_terminating) = conditions(ep);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<Ipv4Addr>() else { continue };
                let backend = BackendAddr { ip, port: target_port, proto, local };
                if is_ready {
                    ready.insert(backend);
                } else if serving && is_terminating {
                    terminating.insert(backend);
                }
            }
        }
    }
    if ready.is_empty() { (terminating, BTreeSet::new()) } else { (ready, terminating) }
}
