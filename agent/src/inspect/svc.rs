//! `skiff svc list` and `skiff svc diff`: the frontends as the datapath holds them (the live maps:
//! frontend entries, Maglev rows, backends, traffic counters), named and completed with what the
//! agent wants programmed (its desired state, computed from the API's Services and
//! EndpointSlices, read over its status socket), and the differences between the two.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use serde::{Deserialize, Serialize};
use skiff_common::{
    lb::{
        BACKEND_F_LOCAL, Backend, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_RANDOM,
        SVC_F_SOURCE_RANGES, ServiceKey, ServiceValue,
    },
    names,
    trace::FlowStats,
};

use super::{
    output::{number, table, text},
    pins,
};
use crate::{
    datapath::lb::MaglevTable,
    proxy::{Frontend, FrontendKey, Protocol},
};

/// What the agent wants in the datapath: served at `/v1/state` of its status socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub node: String,
    /// `ebpf` or `iptables`.
    pub mode: String,
    /// The first complete listing of Services and EndpointSlices has been applied.
    pub ready: bool,
    /// Every ClusterIP (each is marked in the frontend map, so its unserved ports are rejected).
    pub cluster_ips: Vec<Ipv4Addr>,
    pub frontends: Vec<DesiredFrontend>,
    /// The node namespace's interfaces (index, name): trace events carry indexes from there,
    /// which may not be the namespace `skiff` runs in.
    #[serde(default)]
    pub interfaces: Vec<(u32, String)>,
}

/// One frontend as the agent computed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredFrontend {
    /// `VIP:port/PROTO`.
    pub frontend: String,
    /// `namespace/name`.
    pub service: String,
    pub port_name: String,
    pub external: bool,
    pub local_only: bool,
    pub affinity_timeout_s: Option<u32>,
    /// `addr/len` (loadBalancerSourceRanges).
    pub source_ranges: Vec<String>,
    /// `ip:port/PROTO` of the endpoints new flows go to.
    pub active: Vec<String>,
    /// Terminating endpoints whose open flows carry on.
    pub draining: Vec<String>,
}

impl DesiredFrontend {
    pub fn new(key: &FrontendKey, f: &Frontend) -> Self {
        Self {
            frontend: key.to_string(),
            service: f.service.to_string(),
            port_name: f.port_name.clone(),
            external: f.external,
            local_only: f.local_only,
            affinity_timeout_s: f.affinity_timeout_s,
            source_ranges: f.source_ranges.iter().map(|(a, l)| format!("{a}/{l}")).collect(),
            active: f.active.iter().map(ToString::to_string).collect(),
            draining: f.draining.iter().map(ToString::to_string).collect(),
        }
    }

    /// The `SVC_F_*` flags the datapath should carry for this frontend.
    fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.affinity_timeout_s.is_some() {
            flags |= SVC_F_AFFINITY;
        }
        if self.local_only {
            flags |= SVC_F_LOCAL;
        }
        if self.external {
            flags |= SVC_F_EXTERNAL;
        }
        if !self.source_ranges.is_empty() {
            flags |= SVC_F_SOURCE_RANGES;
        }
        flags
    }
}

/// Client → service traffic, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl From<FlowStats> for Traffic {
    fn from(s: FlowStats) -> Self {
        Self { packets: s.packets, bytes: s.bytes, new_flows: s.new_flows }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveBackend {
    pub id: u32,
    /// `ip:port/PROTO`.
    pub address: String,
    /// `active` (in the Maglev row) or `terminating` (draining: open flows only).
    pub state: &'static str,
    pub local: bool,
    /// Slots of the Maglev row that name this backend (its share of new flows).
    pub slots: u32,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveFrontend {
    /// `VIP:port/PROTO`.
    pub frontend: String,
    /// `namespace/name`, when the agent could be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `ClusterIP` or `External` (NodePort, externalIPs, load-balancer address).
    pub kind: &'static str,
    pub row: u32,
    /// Policy flags: `affinity`, `local`, `source-ranges`, `random`.
    pub flags: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_timeout_s: Option<u32>,
    pub traffic: Traffic,
    pub backends: Vec<LiveBackend>,
}

/// The datapath's frontends, backends and counters, opened from the pins.
pub struct LiveMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, u32, Backend>,
    maglev: MaglevTable,
    svc_stats: PerCpuArray<MapData, FlowStats>,
    be_stats: PerCpuArray<MapData, FlowStats>,
}

impl std::fmt::Debug for LiveMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveMaps").field("maglev", &self.maglev).finish_non_exhaustive()
    }
}

impl LiveMaps {
    pub fn open(pin_dir: &Path) -> anyhow::Result<Self> {
        let services_data = pins::open(pin_dir, names::MAP_SERVICES)?;
        let rows = services_data.info().context("SKIFF_SVC's info")?.max_entries();
        let services: HashMap<MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(Map::HashMap(services_data))
                .context("SKIFF_SVC is not a hash map of frontends")?;
        let maglev_data = pins::open(pin_dir, names::MAP_MAGLEV)?;
        let maglev_entries = maglev_data.info().context("SKIFF_MAGLEV's info")?.max_entries();
        let m = maglev_entries.checked_div(rows).filter(|m| *m > 0).context("SKIFF_MAGLEV is empty")?;
        let maglev = MaglevTable::map(maglev_data.fd(), maglev_entries, m).context("mapping SKIFF_MAGLEV")?;
        Ok(Self {
            services,
            backends: HashMap::try_from(Map::HashMap(pins::open(pin_dir, names::MAP_BACKENDS)?))
                .context("SKIFF_BACKENDS is not a hash map of backends")?,
            maglev,
            svc_stats: PerCpuArray::try_from(Map::PerCpuArray(pins::open(pin_dir, names::MAP_SVC_STATS)?))
                .context("SKIFF_SVC_STATS is not a per-CPU array")?,
            be_stats: PerCpuArray::try_from(Map::PerCpuArray(pins::open(pin_dir, names::MAP_BE_STATS)?))
                .context("SKIFF_BE_STATS is not a per-CPU array")?,
        })
    }

    /// Frontend entries and ClusterIP markers.
    pub fn services(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.services.iter().filter_map(Result::ok).collect()
    }

    pub fn backends(&self) -> BTreeMap<u32, Backend> {
        self.backends.iter().filter_map(Result::ok).collect()
    }

    /// The distinct backend ids of a frontend's Maglev row, with how many slots each has.
    pub fn row_members(&self, value: &ServiceValue) -> BTreeMap<u32, u32> {
        let mut members = BTreeMap::new();
        if value.backend_count == 0 {
            return members;
        }
        for id in self.maglev.read_row(value.id).unwrap_or_default() {
            *members.entry(id).or_insert(0) += 1;
        }
        members
    }

    /// A frontend row's slots, in order.
    pub fn maglev_row(&self, row: u32) -> Option<Vec<u32>> {
        self.maglev.read_row(row)
    }

    /// Slots per Maglev row.
    pub fn m(&self) -> u32 {
        self.maglev.m()
    }

    pub fn svc_traffic(&self, row: u32) -> Traffic {
        self.svc_stats.get(&row, 0).map(|v| FlowStats::sum(v.iter()).into()).unwrap_or_default()
    }

    pub fn backend_traffic(&self, id: u32) -> Traffic {
        self.be_stats.get(&id, 0).map(|v| FlowStats::sum(v.iter()).into()).unwrap_or_default()
    }
}

pub(super) fn ip(addr_be: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr_be.to_ne_bytes())
}

fn proto_name(n: u8) -> String {
    Protocol::from_number(n).map_or_else(|| format!("proto-{n}"), |p| p.as_str().to_owned())
}

/// `VIP:port/PROTO` of a frontend entry.
pub fn frontend_name(key: &ServiceKey) -> String {
    format!("{}:{}/{}", ip(key.addr_be), u16::from_be(key.port_be), proto_name(key.proto))
}

/// `ip:port/PROTO` of a backend entry.
pub fn backend_name(b: &Backend) -> String {
    format!("{}:{}/{}", ip(b.addr_be), u16::from_be(b.port_be), proto_name(b.proto))
}

fn flag_names(flags: u32) -> Vec<&'static str> {
    [
        (SVC_F_AFFINITY, "affinity"),
        (SVC_F_LOCAL, "local"),
        (SVC_F_SOURCE_RANGES, "source-ranges"),
        (SVC_F_RANDOM, "random"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// Every frontend in the maps (markers left out), in address order, with names and draining
/// backends from `desired` when there is one.
pub fn list(live: &LiveMaps, desired: Option<&AgentState>) -> Vec<LiveFrontend> {
    let wanted: BTreeMap<&str, &DesiredFrontend> =
        desired.map(|d| d.frontends.iter().map(|f| (f.frontend.as_str(), f)).collect()).unwrap_or_default();
    let backends = live.backends();
    let by_address: BTreeMap<String, (u32, &Backend)> =
        backends.iter().map(|(id, b)| (backend_name(b), (*id, b))).collect();
    let mut services = live.services();
    services.sort_by_key(|(k, _)| (u32::from_be(k.addr_be), u16::from_be(k.port_be), k.proto));
    services
        .iter()
        .filter(|(k, _)| *k != ServiceKey::vip_marker(k.addr_be))
        .map(|(key, value)| {
            let name = frontend_name(key);
            let want = wanted.get(name.as_str());
            let backend = |id: u32, b: &Backend, state, slots| LiveBackend {
                id,
                address: backend_name(b),
                state,
                local: b.flags & BACKEND_F_LOCAL != 0,
                slots,
                traffic: live.backend_traffic(id),
            };
            let mut rows: Vec<LiveBackend> = live
                .row_members(value)
                .into_iter()
                .map(|(id, slots)| match backends.get(&id) {
                    Some(b) => backend(id, b, "active", slots),
                    None => LiveBackend {
                        id,
                        address: "(missing)".to_owned(),
                        state: "active",
                        local: false,
                        slots,
                        traffic: live.backend_traffic(id),
                    },
                })
                .collect();
            for addr in want.map(|w| w.draining.as_slice()).unwrap_or_default() {
                if let Some((id, b)) = by_address.get(addr) {
                    rows.push(backend(*id, b, "terminating", 0));
                }
            }
            LiveFrontend {
                frontend: name.clone(),
                service: want.map(|w| w.service.clone()),
                kind: if value.flags & SVC_F_EXTERNAL != 0 { "External" } else { "ClusterIP" },
                row: value.id,
                flags: flag_names(value.flags),
                affinity_timeout_s: (value.flags & SVC_F_AFFINITY != 0).then_some(value.affinity_timeout_s),
                traffic: live.svc_traffic(value.id),
                backends: rows,
            }
        })
        .collect()
}

/// One line per backend (a frontend without backends gets one line of its own).
pub fn list_table(rows: &[LiveFrontend]) -> String {
    let columns = [
        text("FRONTEND"),
        text("SERVICE"),
        text("TYPE"),
        text("FLAGS"),
        text("BACKEND"),
        text("STATE"),
        number("SLOTS"),
        number("PACKETS"),
        number("NEW"),
    ];
    let mut cells = Vec::new();
    for f in rows {
        let head = [
            f.frontend.clone(),
            f.service.clone().unwrap_or_else(|| "-".to_owned()),
            f.kind.to_owned(),
            if f.flags.is_empty() { "-".to_owned() } else { f.flags.join(",") },
        ];
        if f.backends.is_empty() {
            let mut line = head.to_vec();
            line.extend(["(none: rejected)".to_owned(), "-".into(), "0".into(), "0".into(), "0".into()]);
            cells.push(line);
        }
        for b in &f.backends {
            let mut line = head.to_vec();
            let local = if b.local { " (local)" } else { "" };
            line.extend([
                format!("{}{local}", b.address),
                b.state.to_owned(),
                b.slots.to_string(),
                b.traffic.packets.to_string(),
                b.traffic.new_flows.to_string(),
            ]);
            cells.push(line);
        }
    }
    table(&columns, &cells)
}

/// One difference between the agent's desired state and the maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The frontend (or ClusterIP) concerned.
    pub frontend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `missing`, `unexpected`, `flags`, `backends`, `marker-missing`, `marker-unexpected`.
    pub kind: &'static str,
    pub detail: String,
}

fn set_text(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(" ")
}

/// What differs between `desired` and the maps. Empty: in sync.
pub fn diff(live: &LiveMaps, desired: &AgentState) -> Vec<Drift> {
    let backends = live.backends();
    let mut in_maps: BTreeMap<String, ServiceValue> = BTreeMap::new();
    let mut markers: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for (key, value) in live.services() {
        if key == ServiceKey::vip_marker(key.addr_be) {
            markers.insert(ip(key.addr_be));
        } else {
            in_maps.insert(frontend_name(&key), value);
        }
    }
    let mut drift = Vec::new();
    for want in &desired.frontends {
        let found = |kind, detail: String| Drift {
            frontend: want.frontend.clone(),
            service: Some(want.service.clone()),
            kind,
            detail,
        };
        let Some(value) = in_maps.remove(&want.frontend) else {
            drift.push(found("missing", "not in SKIFF_SVC".to_owned()));
            continue;
        };
        let (have_flags, want_flags) = (value.flags & !SVC_F_RANDOM, want.flags());
        if have_flags != want_flags {
            drift.push(found(
                "flags",
                format!(
                    "want [{}], maps have [{}]",
                    flag_names(want_flags).join(","),
                    flag_names(have_flags).join(",")
                ),
            ));
        }
        let members = live.row_members(&value);
        let have: BTreeSet<String> = members
            .keys()
            .map(|id| backends.get(id).map_or_else(|| format!("(missing id {id})"), backend_name))
            .collect();
        let want_set: BTreeSet<String> = want.active.iter().cloned().collect();
        if have != want_set || value.backend_count as usize != want_set.len() {
            let missing: BTreeSet<String> = want_set.difference(&have).cloned().collect();
            let extra: BTreeSet<String> = have.difference(&want_set).cloned().collect();
            drift.push(found(
                "backends",
                format!(
                    "missing [{}], unexpected [{}], backend_count {} for {} wanted",
                    set_text(&missing),
                    set_text(&extra),
                    value.backend_count,
                    want_set.len()
                ),
            ));
        }
    }
    for (name, value) in in_maps {
        drift.push(Drift {
            frontend: name,
            service: None,
            kind: "unexpected",
            detail: format!("row {} in SKIFF_SVC, no Service wants it", value.id),
        });
    }
    let wanted_markers: BTreeSet<Ipv4Addr> = desired.cluster_ips.iter().copied().collect();
    for vip in wanted_markers.difference(&markers) {
        drift.push(Drift {
            frontend: vip.to_string(),
            service: None,
            kind: "marker-missing",
            detail: "ClusterIP not marked: its unserved ports are not rejected".to_owned(),
        });
    }
    for vip in markers.difference(&wanted_markers) {
        drift.push(Drift {
            frontend: vip.to_string(),
            service: None,
            kind: "marker-unexpected",
            detail: "marked as a ClusterIP, but no Service has it".to_owned(),
        });
    }
    drift
}

pub fn diff_table(rows: &[Drift]) -> String {
    if rows.is_empty() {
        return "no drift: the maps hold what the agent wants\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|d| {
            vec![
                d.frontend.clone(),
                d.service.clone().unwrap_or_else(|| "-".to_owned()),
                d.kind.to_owned(),
                d.detail.clone(),
            ]
        })
        .collect();
    table(&[text("FRONTEND"), text("SERVICE"), text("DRIFT"), text("DETAIL")], &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<LiveFrontend> {
        let traffic = |packets, new_flows| Traffic { packets, bytes: packets * 100, new_flows };
        vec![
            LiveFrontend {
                frontend: "10.96.0.10:80/TCP".into(),
                service: Some("default/web".into()),
                kind: "ClusterIP",
                row: 0,
                flags: vec!["affinity"],
                affinity_timeout_s: Some(10800),
                traffic: traffic(30, 3),
                backends: vec![
                    LiveBackend {
                        id: 1,
                        address: "10.244.1.2:8080/TCP".into(),
                        state: "active",
                        local: true,
                        slots: 126,
                        traffic: traffic(20, 2),
                    },
                    LiveBackend {
                        id: 2,
                        address: "10.244.2.2:8080/TCP".into(),
                        state: "terminating",
                        local: false,
                        slots: 0,
                        traffic: traffic(10, 1),
                    },
                ],
            },
            LiveFrontend {
                frontend: "10.96.0.11:53/UDP".into(),
                service: None,
                kind: "ClusterIP",
                row: 1,
                flags: vec![],
                affinity_timeout_s: None,
                traffic: Traffic::default(),
                backends: vec![],
            },
        ]
    }

    /// Golden files: the formats scripts and people read. Regenerate with `SKIFF_UPDATE_GOLDEN=1`.
    fn golden(name: &str, got: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cli").join(name);
        if std::env::var_os("SKIFF_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, got).expect("write golden");
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got, want, "{} differs (SKIFF_UPDATE_GOLDEN=1 rewrites it)", path.display());
    }

    #[test]
    fn svc_list_table_json_and_yaml_match_their_golden_files() {
        let rows = sample();
        golden("svc-list.txt", &list_table(&rows));
        golden(
            "svc-list.json",
            &super::super::output::render(super::super::Format::Json, &rows, list_table).expect("json"),
        );
        golden(
            "svc-list.yaml",
            &super::super::output::render(super::super::Format::Yaml, &rows, list_table).expect("yaml"),
        );
    }

    #[test]
    fn svc_diff_table_matches_its_golden_file() {
        let rows = vec![
            Drift {
                frontend: "10.96.0.10:80/TCP".into(),
                service: Some("default/web".into()),
                kind: "backends",
                detail: "missing [10.244.1.3:8080/TCP], unexpected [], backend_count 2 for 3 wanted".into(),
            },
            Drift {
                frontend: "10.96.0.99".into(),
                service: None,
                kind: "marker-unexpected",
                detail: "marked as a ClusterIP, but no Service has it".into(),
            },
        ];
        golden("svc-diff.txt", &diff_table(&rows));
        assert_eq!(diff_table(&[]), "no drift: the maps hold what the agent wants\n");
    }

    #[test]
    fn desired_flags_follow_the_frontend() {
        let f = DesiredFrontend {
            frontend: "1.2.3.4:80/TCP".into(),
            service: "a/b".into(),
            port_name: String::new(),
            external: true,
            local_only: true,
            affinity_timeout_s: None,
            source_ranges: vec!["10.0.0.0/8".into()],
            active: vec![],
            draining: vec![],
        };
        assert_eq!(f.flags(), SVC_F_EXTERNAL | SVC_F_LOCAL | SVC_F_SOURCE_RANGES);
    }
}
