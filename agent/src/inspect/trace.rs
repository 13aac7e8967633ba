//! `skiff trace`: a trace session on the datapath. Starting one writes the filter into the pinned
//! `SKIFF_TRACE_CFG` (the programs apply it in the kernel, so unmatched packets cost no ring-buffer
//! space and no wake-up); events are read from the `SKIFF_TRACE` ring buffer; ending it (drop,
//! Ctrl-C) switches tracing off again, leaving the packet path with its single check.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    os::fd::AsFd as _,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use aya::maps::{Array, Map, MapData, RingBuf};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;
use skiff_common::{
    DropReason,
    lb::{CtKey, ServiceKey, proto},
    names,
    trace::{
        CtState, NO_ROW, TRACE_F_DROPS_ONLY, TRACE_MAX_FRONTENDS, TraceConfig, TraceEvent, TraceFrontend,
        TraceHook, Verdict,
    },
};

use super::pins;

/// What a session lets through; unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Source network (before or after translation).
    pub src: Option<(Ipv4Addr, u8)>,
    /// Destination network (before or after translation).
    pub dst: Option<(Ipv4Addr, u8)>,
    /// A port at either end, before or after translation.
    pub port: Option<u16>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Frontends `(VIP, port, protocol)` (a Service's, from `--svc`).
    pub frontends: Vec<(Ipv4Addr, u16, u8)>,
    pub drops_only: bool,
}

fn mask_be(len: u8) -> u32 {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
    mask.to_be()
}

impl Filter {
    /// The kernel's form of this filter, owned by `pid`.
    pub fn to_config(&self, pid: u32) -> anyhow::Result<TraceConfig> {
        if self.frontends.len() > TRACE_MAX_FRONTENDS {
            bail!(
                "a trace can follow at most {TRACE_MAX_FRONTENDS} frontends, {} asked",
                self.frontends.len()
            );
        }
        let net = |n: Option<(Ipv4Addr, u8)>| match n {
            // A /0 still has to match: an all-zero mask would mean "no filter", which it is.
            Some((addr, len)) => (u32::from_ne_bytes(addr.octets()), mask_be(len)),
            None => (0, 0),
        };
        let (src_be, src_mask_be) = net(self.src);
        let (dst_be, dst_mask_be) = net(self.dst);
        let mut cfg = TraceConfig {
            enabled: 1,
            flags: if self.drops_only { TRACE_F_DROPS_ONLY } else { 0 },
            src_be,
            src_mask_be,
            dst_be,
            dst_mask_be,
            port_be: self.port.unwrap_or(0).to_be(),
            proto: self.proto.unwrap_or(0),
            n_frontends: self.frontends.len() as u8,
            owner_pid: pid,
            ..TraceConfig::default()
        };
        for (slot, (addr, port, proto)) in cfg.frontends.iter_mut().zip(&self.frontends) {
            *slot = TraceFrontend {
                addr_be: u32::from_ne_bytes(addr.octets()),
                port_be: port.to_be(),
                proto: *proto,
                _pad: 0,
            };
        }
        Ok(cfg)
    }
}

/// A running trace session; dropping it switches tracing off.
pub struct Session {
    config: Array<MapData, TraceConfig>,
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

fn alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

impl Session {
    /// Starts tracing with `filter`. One session at a time per datapath: a live session of
    /// another process is an error; one left by a process that died is taken over.
    pub fn start(pin_dir: &Path, filter: &Filter) -> anyhow::Result<Self> {
        let mut config: Array<MapData, TraceConfig> =
            Array::try_from(Map::Array(pins::open(pin_dir, names::MAP_TRACE_CFG)?))
                .context("SKIFF_TRACE_CFG is not the trace switch")?;
        let ring = RingBuf::try_from(Map::RingBuf(pins::open(pin_dir, names::MAP_TRACE)?))
            .context("SKIFF_TRACE is not a ring buffer")?;
        let current = config.get(&0, 0).context("reading SKIFF_TRACE_CFG")?;
        let me = std::process::id();
        if current.enabled != 0 && current.owner_pid != me && alive(current.owner_pid) {
            bail!("another trace session is running (pid {}); one at a time per node", current.owner_pid);
        }
        config.set(0, filter.to_config(me)?, 0).context("switching tracing on")?;
        let mut session = Self { config, ring };
        // Events left over from an earlier session are not this one's.
        while session.ring.next().is_some() {}
        Ok(session)
    }

    /// The next event, waiting up to `timeout`.
    pub fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<TraceEvent>> {
        if let Some(event) = self.take() {
            return Ok(Some(event));
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.ring.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(self.take()),
            Err(e) => Err(e).context("waiting on the trace ring buffer"),
        }
    }

    fn take(&mut self) -> Option<TraceEvent> {
        let item = self.ring.next()?;
        (item.len() >= size_of::<TraceEvent>()).then(|| {
            // SAFETY: the buffer holds a whole TraceEvent written by the datapath (length checked);
            // read_unaligned copes with any alignment.
            unsafe { item.as_ptr().cast::<TraceEvent>().read_unaligned() }
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(e) = self.config.set(0, TraceConfig::default(), 0) {
            eprintln!("skiff: could not switch tracing off ({e}); `skiff trace --count 1` takes it over");
        }
    }
}

/// An event in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceLine {
    /// Wall-clock time, RFC 3339 with microseconds.
    pub time: String,
    pub hook: &'static str,
    pub ifindex: u32,
    pub interface: String,
    pub proto: &'static str,
    /// `src:port -> dst:port` as it arrived.
    pub original: String,
    /// As it left (the same when untouched).
    pub translated: String,
    pub verdict: &'static str,
    pub ct: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_detail: Option<&'static str>,
    pub bytes: u32,
}

fn tuple(k: &CtKey) -> String {
    let ip = |a: u32| Ipv4Addr::from(a.to_ne_bytes());
    if k.sport_be == 0 && k.dport_be == 0 {
        return format!("{} -> {}", ip(k.saddr_be), ip(k.daddr_be));
    }
    format!(
        "{}:{} -> {}:{}",
        ip(k.saddr_be),
        u16::from_be(k.sport_be),
        ip(k.daddr_be),
        u16::from_be(k.dport_be)
    )
}

/// Names for ids in events: frontend rows, backends, services, interfaces.
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// Row → (`VIP:port/PROTO`, `namespace/name` if known).
    pub rows: BTreeMap<u32, (String, Option<String>)>,
    /// Backend id → `ip:port/PROTO`.
    pub backends: BTreeMap<u32, String>,
    pub interfaces: BTreeMap<u32, String>,
}

impl Names {
    /// Reads the frontends and backends from the pins (and the Service names from `desired`).
    pub fn read(pin_dir: &Path, desired: Option<&super::svc::AgentState>) -> anyhow::Result<Self> {
        let live = super::svc::LiveMaps::open(pin_dir)?;
        let services: BTreeMap<&str, &str> = desired
            .map(|d| d.frontends.iter().map(|f| (f.frontend.as_str(), f.service.as_str())).collect())
            .unwrap_or_default();
        let mut names = Names::default();
        // ClusterIP markers carry no row (their value is all zeros): leave them out.
        for (key, value) in
            live.services().into_iter().filter(|(k, _)| *k != ServiceKey::vip_marker(k.addr_be))
        {
            let name = super::svc::frontend_name(&key);
            let service = services.get(name.as_str()).map(|s| (*s).to_owned());
            names.rows.insert(value.id, (name, service));
        }
        for (id, b) in live.backends() {
            names.backends.insert(id, super::svc::backend_name(&b));
        }
        // Indexes are the node namespace's; the agent knows its names.
        if let Some(state) = desired {
            names.interfaces.extend(state.interfaces.iter().cloned());
        }
        Ok(names)
    }

    fn interface(&mut self, ifindex: u32) -> String {
        self.interfaces
            .entry(ifindex)
            .or_insert_with(|| {
                nix::net::if_::if_indextoname(ifindex)
                    .ok()
                    .and_then(|n| n.into_string().ok())
                    .unwrap_or_else(|| format!("if{ifindex}"))
            })
            .clone()
    }
}

/// Converts the datapath's monotonic timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock time at monotonic zero, ns since the epoch.
    epoch_offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
            .unwrap_or(0);
        let wall =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        Self { epoch_offset_ns: wall - mono }
    }

    /// A fixed clock (tests).
    pub fn fixed(epoch_offset_ns: i128) -> Self {
        Self { epoch_offset_ns }
    }

    fn format(&self, ts_ns: u64) -> String {
        let ns = self.epoch_offset_ns + i128::from(ts_ns);
        jiff::Timestamp::from_nanosecond(ns)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            .unwrap_or_else(|_| ts_ns.to_string())
    }
}

/// An event in words.
pub fn describe(event: &TraceEvent, names: &mut Names, clock: &Clock) -> TraceLine {
    let verdict = Verdict::from_u8(event.verdict).unwrap_or(Verdict::Pass);
    let reason = DropReason::from_slot(u32::from(event.reason));
    let row = (event.svc_id != NO_ROW).then(|| names.rows.get(&event.svc_id).cloned()).flatten();
    TraceLine {
        time: clock.format(event.ts_ns),
        hook: TraceHook::from_u8(event.hook).map_or("?", TraceHook::as_str),
        ifindex: event.ifindex,
        interface: names.interface(event.ifindex),
        proto: match event.orig.proto {
            proto::TCP => "TCP",
            proto::UDP => "UDP",
            proto::ICMP => "ICMP",
            proto::SCTP => "SCTP",
            _ => "other",
        },
        original: tuple(&event.orig),
        translated: tuple(&event.xlated),
        verdict: verdict.as_str(),
        ct: CtState::from_u8(event.ct).as_str(),
        backend: (event.backend_id != 0).then(|| {
            names.backends.get(&event.backend_id).cloned().unwrap_or_else(|| format!("#{}", event.backend_id))
        }),
        frontend: row.as_ref().map(|(f, _)| f.clone()),
        service: row.and_then(|(_, s)| s),
        reason: reason.map(|r| r.name()),
        reason_detail: reason.map(|r| r.as_str()),
        bytes: event.len,
    }
}

/// One line of text per event.
pub fn line_text(l: &TraceLine) -> String {
    let mut out = format!("{} {} {} {} {}", l.time, l.hook, l.interface, l.proto, l.original);
    if l.translated != l.original {
        out.push_str(&format!(" => {}", l.translated));
    }
    out.push_str(&format!(" {}", l.verdict.to_uppercase()));
    if l.ct != "-" {
        out.push_str(&format!(" ct={}", l.ct));
    }
    if let Some(s) = l.service.as_ref().or(l.frontend.as_ref()) {
        out.push_str(&format!(" svc={s}"));
    }
    if let Some(b) = &l.backend {
        out.push_str(&format!(" backend={b}"));
    }
    if let (Some(r), Some(d)) = (l.reason, l.reason_detail) {
        out.push_str(&format!(" reason={r} ({d})"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: [u8; 4], d: [u8; 4], sp: u16, dp: u16) -> CtKey {
        CtKey {
            saddr_be: u32::from_ne_bytes(s),
            daddr_be: u32::from_ne_bytes(d),
            sport_be: sp.to_be(),
            dport_be: dp.to_be(),
            proto: proto::TCP,
            _pad: [0; 3],
        }
    }

    fn names() -> Names {
        Names {
            rows: [(0, ("10.96.0.10:80/TCP".to_owned(), Some("default/web".to_owned())))].into(),
            backends: [(3, "10.244.1.2:8080/TCP".to_owned())].into(),
            interfaces: [(7, "lxc1".to_owned())].into(),
        }
    }

    #[test]
    fn a_forwarded_and_a_rejected_packet_read_well() {
        let clock = Clock::fixed(1_796_601_600_000_000_000);
        let forward = TraceEvent {
            ts_ns: 1_500_000,
            ifindex: 7,
            len: 74,
            backend_id: 3,
            svc_id: 0,
            hook: TraceHook::TcPod as u8,
            verdict: Verdict::Forward as u8,
            ct: CtState::New as u8,
            orig: key([10, 244, 0, 5], [10, 96, 0, 10], 40000, 80),
            xlated: key([10, 244, 0, 5], [10, 244, 1, 2], 40000, 8080),
            ..TraceEvent::default()
        };
        let line = describe(&forward, &mut names(), &clock);
        assert_eq!(
            line_text(&line),
            "2026-12-07T00:00:00.001500Z tc-pod lxc1 TCP 10.244.0.5:40000 -> 10.96.0.10:80 => \
             10.244.0.5:40000 -> 10.244.1.2:8080 FORWARD ct=new svc=default/web backend=10.244.1.2:8080/TCP"
        );
        let reject = TraceEvent {
            verdict: Verdict::Reject as u8,
            reason: DropReason::NoEndpoints.slot() as u8,
            backend_id: 0,
            ct: 0,
            xlated: forward.orig,
            ..forward
        };
        let line = describe(&reject, &mut names(), &clock);
        assert!(
            line_text(&line)
                .ends_with("REJECT svc=default/web reason=NoEndpoints (service has no endpoints (rejected))"),
            "{}",
            line_text(&line)
        );
        let json = serde_json::to_value(&line).expect("json");
        assert_eq!(json["reason"], "NoEndpoints");
        assert_eq!(json["verdict"], "reject");
    }

    #[test]
    fn filters_become_masks_in_network_order() {
        let f = Filter {
            src: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
            port: Some(80),
            frontends: vec![(Ipv4Addr::new(10, 96, 0, 10), 80, proto::TCP)],
            drops_only: true,
            ..Filter::default()
        };
        let cfg = f.to_config(42).expect("config");
        assert_eq!(cfg.src_mask_be.to_ne_bytes(), [255, 255, 0, 0]);
        assert_eq!(cfg.dst_mask_be, 0);
        assert_eq!(u16::from_be(cfg.port_be), 80);
        assert_eq!((cfg.n_frontends, cfg.flags, cfg.owner_pid, cfg.enabled), (1, TRACE_F_DROPS_ONLY, 42, 1));
        let too_many = Filter { frontends: vec![(Ipv4Addr::LOCALHOST, 1, 6); TRACE_MAX_FRONTENDS + 1], ..f };
        assert!(too_many.to_config(1).is_err());
    }
}
