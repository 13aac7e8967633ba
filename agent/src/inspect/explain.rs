//! `skiff explain <source> <destination>`: a dry run of the datapath for one packet, from the
//! live maps. Which program would see it, which frontend entry matches, what conntrack, session
//! affinity or the Maglev row make of its flow, which backend it gets, and the route from there.
//! Nothing is sent and nothing is written.

use std::{net::Ipv4Addr, path::Path, process::Command};

use anyhow::Context as _;
use aya::maps::{HashMap, LpmTrie, Map, MapData, lpm_trie::Key};
use serde::Serialize;
use skiff_common::{
    DropReason,
    lb::{
        AffinityKey, AffinityValue, CtForward, CtKey, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_LOCAL,
        SVC_F_RANDOM, SVC_F_SOURCE_RANGES, ServiceKey, SourceRange, flow_hash,
    },
    names,
};

use super::{
    output::{table, text},
    pins,
    svc::{AgentState, LiveMaps, backend_name, frontend_name},
};
use crate::proxy::Protocol;

/// Where the packet comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A process of the node itself (socket-level load balancing).
    Host(Ipv4Addr),
    /// A pod or an outside client with this address.
    Addr(Ipv4Addr),
}

/// The question.
#[derive(Debug, Clone)]
pub struct Question {
    pub source: Source,
    pub dst: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
    /// The client's source port (it decides the Maglev slot).
    pub sport: u16,
    /// Network namespace (under /run/netns) to look routes up in; `None`: this process's.
    pub netns: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub finding: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub steps: Vec<Step>,
    /// `forward to <backend>`, `reject (<reason>)`, `drop (<reason>)` or `pass untouched`.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn ip_cmd(netns: Option<&str>, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_owned())
}

/// The interface `addr` is routed through (in `netns`).
fn route_dev(netns: Option<&str>, addr: Ipv4Addr) -> Option<String> {
    let line = ip_cmd(netns, &["route", "get", &addr.to_string()])?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "dev")?;
    words.next().map(str::to_owned)
}

/// Which skiff program sees the packet first.
fn program(pin_dir: &Path, q: &Question, external: bool) -> (String, bool) {
    let links = pin_dir.join(names::PIN_LINKS_DIR);
    match q.source {
        Source::Host(_) => (
            "skiff_connect4 / skiff_sendmsg4 (cgroup socket hooks): the node's own socket is pointed at the \
             backend at connect() or sendmsg(), before a packet exists"
                .to_owned(),
            true,
        ),
        Source::Addr(src) => {
            let dev = route_dev(q.netns.as_deref(), src);
            if let Some(dev) = &dev
                && links.join(format!("{}{dev}", names::LINK_LB_PREFIX)).exists()
            {
                return (format!("skiff_lb at tc ingress of {dev} (the host end of the pod's veth)"), true);
            }
            let uplinks: Vec<String> = std::fs::read_dir(&links)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name().to_str()?.strip_prefix(names::LINK_UPLINK_PREFIX).map(str::to_owned)
                })
                .collect();
            match (uplinks.first(), external) {
                (Some(up), _) => {
                    (format!("skiff_uplink (XDP on {up}): {src} is not a pod of this node"), true)
                }
                (None, _) => (
                    format!(
                        "none: {src} is not a pod of this node (route via {}) and no uplink program is attached",
                        dev.as_deref().unwrap_or("?")
                    ),
                    false,
                ),
            }
        }
    }
}

/// Runs the dry run against the maps pinned at `pin_dir`.
pub fn explain(pin_dir: &Path, q: &Question, desired: Option<&AgentState>) -> anyhow::Result<Explanation> {
    let live = LiveMaps::open(pin_dir)?;
    let mut steps = Vec::new();
    macro_rules! step {
        ($step:expr, $finding:expr $(,)?) => {
            steps.push(Step { step: $step, finding: $finding })
        };
    }
    let src_ip = match q.source {
        Source::Host(a) | Source::Addr(a) => a,
    };
    let key = ServiceKey::new(be(q.dst), q.port.to_be(), q.proto.number());
    let svc = live.services().into_iter().find(|(k, _)| *k == key).map(|(_, v)| v);
    let external = svc.is_some_and(|v| v.flags & SVC_F_EXTERNAL != 0);
    let (prog, seen) = program(pin_dir, q, external);
    step!("program", prog);
    let done =
        |steps: Vec<Step>, verdict: String, backend: Option<String>| Explanation { steps, verdict, backend };
    if !seen {
        return Ok(done(steps, "pass untouched (no skiff program on the path)".into(), None));
    }
    let uplink = matches!(q.source, Source::Addr(_)) && steps[0].finding.starts_with("skiff_uplink");
    let Some(svc) = svc else {
        let marker = live.services().iter().any(|(k, _)| *k == ServiceKey::vip_marker(be(q.dst)));
        if marker && !uplink {
            step!(
                "frontend",
                format!("{} is a ClusterIP that does not serve {}/{}", q.dst, q.port, q.proto.as_str())
            );
            let r = DropReason::UnknownPort;
            return Ok(done(steps, format!("reject ({}: {})", r.name(), r.as_str()), None));
        }
        step!("frontend", format!("{}:{}/{} is not a frontend", q.dst, q.port, q.proto.as_str()));
        return Ok(done(steps, "pass untouched".into(), None));
    };
    let name = frontend_name(&key);
    let service = desired
        .and_then(|d| d.frontends.iter().find(|f| f.frontend == name))
        .map_or_else(|| "service unknown: agent not asked".to_owned(), |f| format!("service {}", f.service));
    step!(
        "frontend",
        format!(
            "{name} ({service}), row {}, {} backend(s){}{}{}",
            svc.id,
            svc.backend_count,
            if external { ", external" } else { ", ClusterIP" },
            if svc.flags & SVC_F_LOCAL != 0 { ", traffic policy Local" } else { "" },
            if svc.flags & SVC_F_AFFINITY != 0 { ", ClientIP affinity" } else { "" },
        ),
    );
    if uplink && !external {
        step!("uplink", "a ClusterIP is not served from outside the cluster".into());
        return Ok(done(steps, "pass untouched".into(), None));
    }
    if uplink && svc.flags & SVC_F_SOURCE_RANGES != 0 {
        let trie: LpmTrie<MapData, SourceRange, u8> =
            LpmTrie::try_from(Map::LpmTrie(pins::open(pin_dir, names::MAP_SRC_RANGES)?))
                .context("SKIFF_SRC_RANGE is not an LPM trie")?;
        let probe = Key::new(
            SourceRange::prefix_len(32),
            SourceRange { svc_id_be: svc.id.to_be(), addr_be: be(src_ip) },
        );
        if trie.get(&probe, 0).is_err() {
            step!("source ranges", format!("{src_ip} is outside the frontend's loadBalancerSourceRanges"));
            let r = DropReason::SourceRangeDenied;
            return Ok(done(steps, format!("drop ({}: {})", r.name(), r.as_str()), None));
        }
        step!("source ranges", format!("{src_ip} is inside the frontend's loadBalancerSourceRanges"));
    }
    let backends = live.backends();
    let flow = CtKey {
        saddr_be: be(src_ip),
        daddr_be: be(q.dst),
        sport_be: q.sport.to_be(),
        dport_be: q.port.to_be(),
        proto: q.proto.number(),
        _pad: [0; 3],
    };
    let ct: HashMap<MapData, CtKey, CtForward> =
        HashMap::try_from(Map::LruHashMap(pins::open(pin_dir, names::MAP_CT)?)).context("SKIFF_CT")?;
    let host = matches!(q.source, Source::Host(_));
    if !host
        && let Ok(entry) = ct.get(&flow, 0)
        && let Some(b) = backends.get(&entry.backend_id)
    {
        let b = backend_name(b);
        step!("conntrack", format!("flow from port {} is known: it stays on {b}", q.sport));
        return Ok(done(steps, format!("forward to {b}"), Some(b)));
    }
    if !host {
        step!("conntrack", format!("no entry for a flow from port {}: a new flow", q.sport));
    }
    if svc.backend_count == 0 {
        let r =
            if svc.flags & SVC_F_LOCAL != 0 { DropReason::NoLocalEndpoints } else { DropReason::NoEndpoints };
        let how = if uplink && r == DropReason::NoLocalEndpoints { "drop" } else { "reject" };
        return Ok(done(steps, format!("{how} ({}: {})", r.name(), r.as_str()), None));
    }
    if let Source::Host(_) = q.source {
        let members: Vec<String> =
            live.row_members(&svc).keys().filter_map(|id| backends.get(id).map(backend_name)).collect();
        step!(
            "selection",
            format!(
                "per socket: the Maglev slot comes from the socket's cookie, so any of [{}]",
                members.join(" ")
            )
        );
        return Ok(done(
            steps,
            format!("forward to one of {} backend(s), chosen per socket", members.len()),
            None,
        ));
    }
    if svc.flags & SVC_F_AFFINITY != 0 {
        let affinity: HashMap<MapData, AffinityKey, AffinityValue> =
            HashMap::try_from(Map::LruHashMap(pins::open(pin_dir, names::MAP_AFFINITY)?))
                .context("SKIFF_AFFINITY")?;
        if let Ok(a) = affinity.get(&AffinityKey { svc_id: svc.id, client_be: be(src_ip) }, 0)
            && let Some(b) = backends.get(&a.backend_id)
        {
            let b = backend_name(b);
            step!(
                "affinity",
                format!("{src_ip} was last sent to {b} (kept while within the affinity timeout)")
            );
            return Ok(done(steps, format!("forward to {b}"), Some(b)));
        }
        step!("affinity", format!("{src_ip} has no recent backend"));
    }
    if svc.flags & SVC_F_RANDOM != 0 {
        step!("selection", "random: any backend of the row".into());
        return Ok(done(steps, "forward to a random backend".into(), None));
    }
    let m = live.m();
    let daddr = if external { 0 } else { flow.daddr_be };
    let hash = flow_hash(flow.saddr_be, daddr, flow.sport_be, flow.dport_be, flow.proto);
    let slot = hash.checked_rem(m).unwrap_or(0);
    let table_row = live.maglev_row(svc.id).unwrap_or_default();
    let Some(id) = table_row.get(slot as usize).copied() else {
        let r = DropReason::MaglevInconsistent;
        return Ok(done(steps, format!("drop ({}: {})", r.name(), r.as_str()), None));
    };
    let Some(b) = backends.get(&id) else {
        step!("maglev", format!("slot {slot} of {m} names backend #{id}, which is not in SKIFF_BACKENDS"));
        let r = DropReason::MaglevInconsistent;
        return Ok(done(steps, format!("drop ({}: {})", r.name(), r.as_str()), None));
    };
    let b_name = backend_name(b);
    step!(
        "maglev",
        format!(
            "flow hash {hash:#010x} (destination {}) → slot {slot} of {m} → backend #{id} {b_name}",
            if external { "left out: the same on every node" } else { "included" }
        ),
    );
    let backend_ip = Ipv4Addr::from(b.addr_be.to_ne_bytes());
    if let Some(route) = ip_cmd(q.netns.as_deref(), &["route", "get", &backend_ip.to_string()]) {
        step!("route", route);
    }
    Ok(done(steps, format!("forward to {b_name}"), Some(b_name)))
}

pub fn as_table(e: &[Explanation]) -> String {
    let mut out = String::new();
    for e in e {
        let mut cells: Vec<Vec<String>> =
            e.steps.iter().map(|s| vec![s.step.to_owned(), s.finding.clone()]).collect();
        cells.push(vec!["verdict".to_owned(), e.verdict.clone()]);
        out.push_str(&table(&[text("STEP"), text("FINDING")], &cells));
    }
    out
}
