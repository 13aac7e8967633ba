//! The network configuration on stdin (one plugin's entry of a conflist, as the runtime passes
//! it), with skiff's own keys:
//!
//! ```json
//! {"cniVersion": "1.1.0", "name": "skiff", "type": "skiff-cni", "mtu": 1500,
//!  "bpfPinDir": "/sys/fs/bpf/skiff", "loadBalancer": true,
//!  "ipam": {"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.2", "dataDir": "/var/lib/cni/networks"},
//!  "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]}}
//! ```

use std::{net::Ipv4Addr, ops::RangeInclusive, path::PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{
    SUPPORTED_VERSIONS,
    error::{CniError, Result, code},
};

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, len) = text.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        let cidr = Self { addr, len };
        // The address must be the network's (10.244.1.0/24, not 10.244.1.7/24).
        (cidr.network() == addr).then_some(cidr)
    }

    fn mask(&self) -> u32 {
        if self.len == 0 { 0 } else { u32::MAX << (32 - self.len) }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    subnet: Option<String>,
    range_start: Option<Ipv4Addr>,
    range_end: Option<Ipv4Addr>,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    mtu: Option<u32>,
    bpf_pin_dir: Option<PathBuf>,
    load_balancer: Option<bool>,
    ipam: Option<RawIpam>,
    #[serde(default)]
    dns: Dns,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// One attachment GC must keep.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The address pool of this node's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    pub subnet: Cidr,
    /// First and last address handed out.
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// Allocations live in `<data_dir>/<network name>/`.
    pub data_dir: PathBuf,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub mtu: u32,
    pub bpf_pin_dir: PathBuf,
    /// Attach the agent's eBPF load balancer to each pod veth (`"loadBalancer"`, default true;
    /// false when the agent runs its iptables mode, which has no eBPF datapath).
    pub load_balancer: bool,
    pub ipam: Option<Ipam>,
    pub dns: Dns,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<Attachment>>,
}

pub const DEFAULT_MTU: u32 = 1500;
/// The MTUs a pod's veth may have: from IPv4's minimum to the largest an IPv4 packet can be.
pub const MTUS: RangeInclusive<u32> = 68..=65535;
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

impl NetConf {
    /// Parses stdin; JSON errors are code 6, bad values code 7, unsupported versions code 1.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw: RawConf = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, "the network configuration is not valid JSON").details(e)
        })?;
        let cni_version = raw.cni_version.ok_or_else(|| invalid("cniVersion is required"))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {cni_version} is not supported (supported: {})",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let name = raw.name.filter(|n| !n.is_empty()).ok_or_else(|| invalid("name is required"))?;
        if name.contains('/') || name.starts_with('.') {
            return Err(invalid(format!("network name {name:?} cannot be a directory name")));
        }
        if raw.plugin_type.as_deref().is_none_or(str::is_empty) {
            return Err(invalid("type is required"));
        }
        let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
        if !MTUS.contains(&mtu) {
            return Err(invalid(format!("mtu {mtu} is outside {}..{}", MTUS.start(), MTUS.end())));
        }
        let ipam = raw.ipam.map(Ipam::check).transpose()?;
        Ok(Self {
            cni_version,
            name,
            mtu,
            bpf_pin_dir: raw.bpf_pin_dir.unwrap_or_else(|| skiff_common::names::DEFAULT_PIN_DIR.into()),
            load_balancer: raw.load_balancer.unwrap_or(true),
            ipam,
            dns: raw.dns,
            prev_result: raw.prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }

    /// The IPAM section, which ADD, CHECK, GC and STATUS need.
    pub fn ipam(&self) -> Result<&Ipam> {
        self.ipam.as_ref().ok_or_else(|| invalid("ipam.subnet is required"))
    }
}

impl Ipam {
    fn check(raw: RawIpam) -> Result<Self> {
        let text = raw.subnet.ok_or_else(|| invalid("ipam.subnet is required"))?;
        let subnet = Cidr::parse(&text).ok_or_else(|| {
            invalid(format!("ipam.subnet {text:?} is not an IPv4 network like 10.244.1.0/24"))
        })?;
        if subnet.len > 30 {
            return Err(invalid(format!("ipam.subnet {subnet} is too small for pods")));
        }
        // The network's first host address is kept for the node (the agent may use it), so pods
        // start at the second unless told otherwise.
        let first = raw.range_start.unwrap_or(Ipv4Addr::from(u32::from(subnet.network()) + 2));
        let last = raw.range_end.unwrap_or(Ipv4Addr::from(u32::from(subnet.broadcast()) - 1));
        let host = |ip: Ipv4Addr| subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast();
        if !host(first) || !host(last) || first > last {
            return Err(invalid(format!("ipam range {first}-{last} is not inside {subnet}")));
        }
        Ok(Self { subnet, first, last, data_dir: raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked() {
        let ok =
            br#"{"cniVersion":"1.1.0","name":"skiff","type":"skiff-cni","ipam":{"subnet":"10.244.1.0/24"}}"#;
        let conf = NetConf::parse(ok).expect("valid");
        let ipam = conf.ipam().expect("ipam");
        assert_eq!((ipam.first, ipam.last), (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 254)));
        assert_eq!(conf.mtu, DEFAULT_MTU);

        let code_of = |b: &[u8]| NetConf::parse(b).expect_err("invalid").code;
        assert_eq!(code_of(b"{not json"), code::DECODE);
        assert_eq!(code_of(br#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#), code::INCOMPATIBLE_VERSION);
        assert_eq!(code_of(br#"{"name":"n","type":"t"}"#), code::INVALID_CONFIG);
        assert_eq!(code_of(br#"{"cniVersion":"1.0.0","type":"t"}"#), code::INVALID_CONFIG);
        let bad_cidr = br#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"subnet":"10.244.1.7/24"}}"#;
        assert_eq!(code_of(bad_cidr), code::INVALID_CONFIG);
        let bad_range =
            br#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.1"}}"#;
        assert_eq!(code_of(bad_range), code::INVALID_CONFIG);
        assert_eq!(
            code_of(br#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":20}"#),
            code::INVALID_CONFIG
        );
    }
}
