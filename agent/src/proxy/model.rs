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

/// A frontend: one ClusterIP, port and protocol.
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
}

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
    /// `internalTrafficPolicy: Local`: only this node's endpoints.
    pub local_only: bool,
}

impl Frontend {
    /// Every endpoint whose flows must keep working: active and draining.
    pub fn referenced(&self) -> impl Iterator<Item = &BackendAddr> {
        self.active.iter().chain(self.draining.iter())
    }
}
