//! `skiff ct list` and `skiff ct flush`: the load balancer's conntrack (client → frontend entries,
//! each pinning a flow to its backend) and reverse-NAT entries (keyed by the reply's tuple), read
//! from and deleted in the pinned maps.

use std::{collections::BTreeSet, net::Ipv4Addr, path::Path};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use serde::Serialize;
use skiff_common::{
    lb::{
        Backend, CT_F_ACK, CT_F_FIN, CT_F_HAIRPIN, CT_F_RST, CT_F_SNAT, CT_F_SYN, CtForward, CtKey,
        CtReverse, proto,
    },
    names,
};

use super::{
    output::{number, table, text},
    pins,
    svc::{backend_name, ip},
};

/// Which entries a command is about; every set condition must hold.
#[derive(Debug, Clone, Default)]
pub struct CtFilter {
    /// Frontends `VIP:port/PROTO` (a Service's, from `--svc`).
    pub frontends: Option<BTreeSet<String>>,
    /// A pod's address: the client, or the backend.
    pub pod: Option<Ipv4Addr>,
    /// Any address of the flow: client, frontend, backend.
    pub ip: Option<Ipv4Addr>,
}

fn proto_name(n: u8) -> &'static str {
    match n {
        proto::TCP => "TCP",
        proto::UDP => "UDP",
        _ => "?",
    }
}

fn endpoint(addr_be: u32, port_be: u16) -> String {
    format!("{}:{}", ip(addr_be), u16::from_be(port_be))
}

impl CtFilter {
    fn wants(&self, frontend: &str, pods: &[u32], all: &[u32]) -> bool {
        self.frontends.as_ref().is_none_or(|f| f.contains(frontend))
            && self.pod.is_none_or(|p| pods.iter().any(|a| ip(*a) == p))
            && self.ip.is_none_or(|p| all.iter().any(|a| ip(*a) == p))
    }
}

/// One flow as conntrack holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CtEntry {
    pub proto: &'static str,
    /// `ip:port` of the client as the packet came.
    pub client: String,
    /// `VIP:port` it asked for.
    pub frontend: String,
    /// `ip:port/PROTO` of its backend, or `(gone id N)`.
    pub backend: String,
    pub backend_id: u32,
    /// The frontend's Maglev row.
    pub row: u32,
    /// `syn-sent`, `established`, `closing` (TCP) or `active` (UDP).
    pub state: &'static str,
    /// `hairpin`, `snat:<port>`.
    pub flags: Vec<String>,
    /// Seconds since the last packet refreshed it.
    pub idle_s: u64,
}

/// The monotonic clock the datapath stamps entries with (`bpf_ktime_get_ns`).
fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn tcp_state(flags: u32) -> &'static str {
    if flags & (CT_F_FIN | CT_F_RST) != 0 {
        "closing"
    } else if flags & CT_F_ACK != 0 {
        "established"
    } else if flags & CT_F_SYN != 0 {
        "syn-sent"
    } else {
        "established"
    }
}

struct CtMaps {
    ct: HashMap<MapData, CtKey, CtForward>,
    rnat: HashMap<MapData, CtKey, CtReverse>,
    backends: HashMap<MapData, u32, Backend>,
}

impl CtMaps {
    fn open(pin_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            ct: HashMap::try_from(Map::LruHashMap(pins::open(pin_dir, names::MAP_CT)?))
                .context("SKIFF_CT is not a conntrack map")?,
            rnat: HashMap::try_from(Map::LruHashMap(pins::open(pin_dir, names::MAP_RNAT)?))
                .context("SKIFF_RNAT is not a reverse-NAT map")?,
            backends: HashMap::try_from(Map::HashMap(pins::open(pin_dir, names::MAP_BACKENDS)?))
                .context("SKIFF_BACKENDS is not a hash map of backends")?,
        })
    }

    fn backend(&self, id: u32) -> Option<Backend> {
        self.backends.get(&id, 0).ok()
    }

    fn forward_matches(&self, filter: &CtFilter, k: &CtKey, v: &CtForward) -> bool {
        let frontend = format!("{}/{}", endpoint(k.daddr_be, k.dport_be), proto_name(k.proto));
        let backend = self.backend(v.backend_id).map_or(0, |b| b.addr_be);
        filter.wants(&frontend, &[k.saddr_be, backend], &[k.saddr_be, k.daddr_be, backend])
    }

    fn reverse_matches(filter: &CtFilter, k: &CtKey, v: &CtReverse) -> bool {
        let frontend = format!("{}/{}", endpoint(v.vip_be, v.vport_be), proto_name(k.proto));
        let client = if v.client_be != 0 { v.client_be } else { k.daddr_be };
        filter.wants(&frontend, &[k.saddr_be, client], &[k.saddr_be, client, v.vip_be])
    }
}

/// Flows matching `filter`, oldest activity last.
pub fn list(pin_dir: &Path, filter: &CtFilter) -> anyhow::Result<Vec<CtEntry>> {
    let maps = CtMaps::open(pin_dir)?;
    let now = now_ns();
    let mut rows: Vec<CtEntry> = maps
        .ct
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| maps.forward_matches(filter, k, v))
        .map(|(k, v)| {
            let mut flags = Vec::new();
            if v.flags & CT_F_HAIRPIN != 0 {
                flags.push("hairpin".to_owned());
            }
            if v.flags & CT_F_SNAT != 0 {
                flags.push(format!("snat:{}", u16::from_be(v.nat_port_be)));
            }
            CtEntry {
                proto: proto_name(k.proto),
                client: endpoint(k.saddr_be, k.sport_be),
                frontend: endpoint(k.daddr_be, k.dport_be),
                backend: maps
                    .backend(v.backend_id)
                    .map_or_else(|| format!("(gone id {})", v.backend_id), |b| backend_name(&b)),
                backend_id: v.backend_id,
                row: v.svc_id,
                state: if k.proto == proto::TCP { tcp_state(v.flags) } else { "active" },
                flags,
                idle_s: now.saturating_sub(v.last_seen_ns) / 1_000_000_000,
            }
        })
        .collect();
    rows.sort_by(|a, b| (a.idle_s, &a.frontend, &a.client).cmp(&(b.idle_s, &b.frontend, &b.client)));
    Ok(rows)
}

/// What a flush removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Flushed {
    pub conntrack: usize,
    pub reverse_nat: usize,
}

/// Deletes the flows matching `filter` in both directions. Their next packet is balanced anew
/// (TCP to a different backend gets a RST from it; that is what a flush is for).
pub fn flush(pin_dir: &Path, filter: &CtFilter) -> anyhow::Result<Flushed> {
    let mut maps = CtMaps::open(pin_dir)?;
    let forward: Vec<CtKey> = maps
        .ct
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| maps.forward_matches(filter, k, v))
        .map(|(k, _)| k)
        .collect();
    let reverse: Vec<CtKey> = maps
        .rnat
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| CtMaps::reverse_matches(filter, k, v))
        .map(|(k, _)| k)
        .collect();
    let mut done = Flushed::default();
    for k in &forward {
        // Gone already (expired, or the datapath removed it): nothing to do.
        if maps.ct.remove(k).is_ok() {
            done.conntrack += 1;
        }
    }
    for k in &reverse {
        if maps.rnat.remove(k).is_ok() {
            done.reverse_nat += 1;
        }
    }
    Ok(done)
}

pub fn list_table(rows: &[CtEntry]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|e| {
            vec![
                e.proto.to_owned(),
                e.client.clone(),
                e.frontend.clone(),
                e.backend.clone(),
                e.state.to_owned(),
                if e.flags.is_empty() { "-".to_owned() } else { e.flags.join(",") },
                e.idle_s.to_string(),
            ]
        })
        .collect();
    table(
        &[
            text("PROTO"),
            text("CLIENT"),
            text("FRONTEND"),
            text("BACKEND"),
            text("STATE"),
            text("FLAGS"),
            number("IDLE(s)"),
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_states_follow_the_flags_seen() {
        assert_eq!(tcp_state(CT_F_SYN), "syn-sent");
        assert_eq!(tcp_state(CT_F_SYN | CT_F_ACK), "established");
        assert_eq!(tcp_state(CT_F_ACK | CT_F_FIN), "closing");
    }

    #[test]
    fn a_filter_needs_every_condition() {
        let a = u32::from_ne_bytes([10, 0, 0, 5]);
        let b = u32::from_ne_bytes([10, 244, 1, 2]);
        let f = CtFilter {
            frontends: Some(["10.96.0.10:80/TCP".to_owned()].into()),
            pod: Some(Ipv4Addr::new(10, 244, 1, 2)),
            ip: None,
        };
        assert!(f.wants("10.96.0.10:80/TCP", &[a, b], &[a, b]));
        assert!(!f.wants("10.96.0.10:81/TCP", &[a, b], &[a, b]));
        assert!(!f.wants("10.96.0.10:80/TCP", &[a], &[a, b]));
        assert!(CtFilter::default().wants("x", &[], &[]));
    }

    #[test]
    fn the_ct_table_matches_its_golden_layout() {
        let rows = vec![CtEntry {
            proto: "TCP",
            client: "10.244.0.5:40000".into(),
            frontend: "10.96.0.10:80".into(),
            backend: "10.244.1.2:8080/TCP".into(),
            backend_id: 1,
            row: 0,
            state: "established",
            flags: vec![],
            idle_s: 3,
        }];
        assert_eq!(
            list_table(&rows),
            concat!(
                "PROTO  CLIENT            FRONTEND       BACKEND              STATE        FLAGS  IDLE(s)\n",
                "TCP    10.244.0.5:40000  10.96.0.10:80  10.244.1.2:8080/TCP  established  -            3\n",
            )
        );
    }
}
