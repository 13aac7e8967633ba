//! The service proxy's desired state: what each frontend (`VIP:port/proto`) should balance to.
//! Built from Services and EndpointSlices by [`super::desired`], applied by a [`super::Dataplane`].

use std::{collections::BTreeSet, fmt, net::Ipv4Addr};

/// L4 protocols the load balancer translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => skiff_common::lb::proto::TCP,
            Protocol::Udp => skiff_common::lb::proto::UDP,
        }
    }

    /// The protocol with this IP protocol number, if the load balancer translates it.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            skiff_common::lb::proto::TCP => Some(Protocol::Tcp),
            skiff_common::lb::proto::UDP => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// Kubernetes' spelling (`TCP`, `UDP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// `namespace/name` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A frontend: one address (a ClusterIP, or for external frontends a node address, external IP or
/// load-balancer address), port and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto.as_str())
    }
}

/// One endpoint address as the datapath sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
    /// The endpoint runs on this node (its EndpointSlice `nodeName` is ours): external traffic to
    /// it is delivered here, never SNATed on to another node.
    pub local: bool,
}

impl BackendAddr {
    /// An endpoint on another node.
    pub fn remote(ip: Ipv4Addr, port: u16, proto: Protocol) -> Self {
        Self { ip, port, proto, local: false }
    }
}

/// `ip:port/proto`: the same on every node (locality left out), which Maglev relies on.
impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.ip, self.port, self.proto.as_str())
    }
}

/// What one frontend balances to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub service: ServiceRef,
    /// The Service port's name ("" for a single unnamed port).
    pub port_name: String,
    /// Endpoints new flows go to (KEP-1669: ready ones; else serving-and-terminating ones).
    pub active: BTreeSet<BackendAddr>,
    /// Terminating endpoints still serving but not chosen for new flows: their open flows go on.
    pub draining: BTreeSet<BackendAddr>,
    /// `sessionAffinity: ClientIP` timeout, seconds.
    pub affinity_timeout_s: Option<u32>,
    /// `internalTrafficPolicy: Local` (ClusterIP frontends) or `externalTrafficPolicy: Local`
    /// (external ones): only this node's endpoints.
    pub local_only: bool,
    /// Reached from outside the cluster: a NodePort on a node address, an `externalIPs` address or
    /// a load-balancer ingress address. Served by the uplink program too; never a ClusterIP marker.
    pub external: bool,
    /// `loadBalancerSourceRanges` of a load-balancer address frontend: the only clients let in
    /// (empty: everyone).
    pub source_ranges: BTreeSet<(Ipv4Addr, u8)>,
}

impl Frontend {
    /// Every endpoint whose flows must keep working: active and draining.
    pub fn referenced(&self) -> impl Iterator<Item = &BackendAddr> {
        self.active.iter().chain(self.draining.iter())
    }
}
