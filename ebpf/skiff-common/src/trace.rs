//! Packet-path tracing: what the load-balancing programs tell `skiff trace`, and the filter it
//! sets. The kernel side checks one word of [`TraceConfig`] per packet; only when a session is on
//! does it match the filter and write a [`TraceEvent`] into the ring buffer.
//!
//! Per-frontend and per-backend traffic counters ([`FlowStats`]) live here too: they feed
//! `skiff svc list` and the agent's metrics.

use crate::lb::CtKey;

/// Where an event was seen.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceHook {
    /// `skiff_lb`, tc ingress on the host end of a pod's veth (what the pod sends).
    TcPod = 1,
    /// `skiff_uplink`, XDP on the node's external interface.
    XdpUplink = 2,
}

impl TraceHook {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::TcPod),
            2 => Some(Self::XdpUplink),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TcPod => "tc-pod",
            Self::XdpUplink => "xdp-uplink",
        }
    }
}

/// What the program did with the packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not service traffic: left untouched.
    Pass = 1,
    /// Client → frontend: translated to a backend (and handed on).
    Forward = 2,
    /// Backend → client: reverse-translated.
    Reply = 3,
    /// Answered in place (ICMP unreachable or TCP RST back to the client); see the reason.
    Reject = 4,
    /// Dropped; see the reason.
    Drop = 5,
}

impl Verdict {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Pass),
            2 => Some(Self::Forward),
            3 => Some(Self::Reply),
            4 => Some(Self::Reject),
            5 => Some(Self::Drop),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Forward => "forward",
            Self::Reply => "reply",
            Self::Reject => "reject",
            Self::Drop => "drop",
        }
    }
}

/// The conntrack side of an event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    /// No conntrack involved (pass, or stopped before a lookup).
    None = 0,
    /// A new flow: the backend was just chosen.
    New = 1,
    /// A known flow: the backend came from conntrack.
    Established = 2,
    /// A reply, matched by the reverse-NAT entry.
    Reply = 3,
}

impl CtState {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::New,
            2 => Self::Established,
            3 => Self::Reply,
            _ => Self::None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "-",
            Self::New => "new",
            Self::Established => "established",
            Self::Reply => "reply",
        }
    }
}

/// "No frontend row" in [`TraceEvent::svc_id`].
pub const NO_ROW: u32 = u32::MAX;

/// One traced packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub ifindex: u32,
    /// Bytes of the packet as it arrived.
    pub len: u32,
    /// The chosen backend (0: none).
    pub backend_id: u32,
    /// The frontend's row ([`NO_ROW`]: none, e.g. a reply).
    pub svc_id: u32,
    /// [`TraceHook`].
    pub hook: u8,
    /// [`Verdict`].
    pub verdict: u8,
    /// `DropReason` slot for rejects and drops; 0 otherwise.
    pub reason: u8,
    /// [`CtState`].
    pub ct: u8,
    pub _pad: u32,
    /// The packet's tuple as it arrived.
    pub orig: CtKey,
    /// Its tuple as it left (equal to `orig` when untouched).
    pub xlated: CtKey,
}
const _: () = assert!(core::mem::size_of::<TraceEvent>() == 64);

/// Only drops and rejects are reported.
pub const TRACE_F_DROPS_ONLY: u32 = 1 << 0;
/// How many frontends a `--svc` filter can name (a Service's ports and NodePorts).
pub const TRACE_MAX_FRONTENDS: usize = 16;

/// A frontend in a filter: address and port as in the packet, protocol (0: any).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceFrontend {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<TraceFrontend>() == 8);

/// The trace session's switch and filter: the single entry of `SKIFF_TRACE_CFG`. Zero is "off".
///
/// A field that is zero (or a zero mask) matches everything. Addresses match either the packet's
/// tuple as it arrived or as it left, so `--dst <ClusterIP>` and `--dst <pod IP>` both find a
/// forwarded packet; a port matches either end before or after translation; a frontend list
/// matches a forwarded packet by its destination and a reply by its translated source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// Non-zero while a session is on.
    pub enabled: u32,
    /// `TRACE_F_*`.
    pub flags: u32,
    pub src_be: u32,
    pub src_mask_be: u32,
    pub dst_be: u32,
    pub dst_mask_be: u32,
    pub port_be: u16,
    pub proto: u8,
    /// Entries of `frontends` in use (0: no frontend filter).
    pub n_frontends: u8,
    /// The process that owns the session (a new session may take over a dead owner's).
    pub owner_pid: u32,
    pub frontends: [TraceFrontend; TRACE_MAX_FRONTENDS],
}
const _: () = assert!(core::mem::size_of::<TraceConfig>() == 32 + 8 * TRACE_MAX_FRONTENDS);

#[inline(always)]
fn masked(addr_be: u32, want_be: u32, mask_be: u32) -> bool {
    addr_be & mask_be == want_be & mask_be
}

#[inline(always)]
fn port_is(key: &CtKey, port_be: u16) -> bool {
    key.sport_be == port_be || key.dport_be == port_be
}

impl TraceConfig {
    /// Whether the filter lets `event` through (`enabled` is checked by the caller).
    #[inline(always)]
    pub fn matches(&self, event: &TraceEvent) -> bool {
        if self.flags & TRACE_F_DROPS_ONLY != 0
            && event.verdict != Verdict::Drop as u8
            && event.verdict != Verdict::Reject as u8
        {
            return false;
        }
        let (o, x) = (&event.orig, &event.xlated);
        if self.proto != 0 && o.proto != self.proto {
            return false;
        }
        if self.src_mask_be != 0
            && !masked(o.saddr_be, self.src_be, self.src_mask_be)
            && !masked(x.saddr_be, self.src_be, self.src_mask_be)
        {
            return false;
        }
        if self.dst_mask_be != 0
            && !masked(o.daddr_be, self.dst_be, self.dst_mask_be)
            && !masked(x.daddr_be, self.dst_be, self.dst_mask_be)
        {
            return false;
        }
        if self.port_be != 0 && !port_is(o, self.port_be) && !port_is(x, self.port_be) {
            return false;
        }
        if self.n_frontends == 0 {
            return true;
        }
        let mut i = 0;
        while i < TRACE_MAX_FRONTENDS {
            if i >= self.n_frontends as usize {
                break;
            }
            let f = &self.frontends[i];
            let proto_ok = f.proto == 0 || f.proto == o.proto;
            if proto_ok
                && ((o.daddr_be == f.addr_be && o.dport_be == f.port_be)
                    || (x.saddr_be == f.addr_be && x.sport_be == f.port_be))
            {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Traffic through one frontend or to one backend, client → service direction (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    /// Flows whose backend was chosen here (new connections, new UDP flows).
    pub new_flows: u64,
}
const _: () = assert!(core::mem::size_of::<FlowStats>() == 24);

impl FlowStats {
    #[inline(always)]
    pub fn record(&mut self, len: u64, new: bool) {
        self.packets += 1;
        self.bytes += len;
        if new {
            self.new_flows += 1;
        }
    }

    /// Sum of per-CPU values.
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a FlowStats>) -> FlowStats {
        let mut total = FlowStats::default();
        for v in values {
            total.packets += v.packets;
            total.bytes += v.bytes;
            total.new_flows += v.new_flows;
        }
        total
    }
}

/// Capacity of the trace ring buffer, bytes (a power of two, a multiple of the page size).
pub const TRACE_RING_BYTES: u32 = 1 << 20;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all repr(C), integer fields only, explicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::TraceEvent {}
    unsafe impl aya::Pod for super::TraceConfig {}
    unsafe impl aya::Pod for super::FlowStats {}
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
            proto: 6,
            _pad: [0; 3],
        }
    }

    fn forwarded() -> TraceEvent {
        TraceEvent {
            verdict: Verdict::Forward as u8,
            orig: key([10, 0, 0, 5], [10, 96, 0, 10], 40000, 80),
            xlated: key([10, 0, 0, 5], [10, 0, 1, 7], 40000, 8080),
            ..TraceEvent::default()
        }
    }

    fn mask(len: u32) -> u32 {
        (if len == 0 { 0 } else { u32::MAX << (32 - len) }).to_be()
    }

    #[test]
    fn an_empty_filter_matches_everything() {
        assert!(TraceConfig { enabled: 1, ..TraceConfig::default() }.matches(&forwarded()));
    }

    #[test]
    fn addresses_match_before_or_after_translation() {
        let dst = |ip: [u8; 4], len| TraceConfig {
            dst_be: u32::from_ne_bytes(ip),
            dst_mask_be: mask(len),
            ..TraceConfig::default()
        };
        assert!(dst([10, 96, 0, 10], 32).matches(&forwarded()), "the ClusterIP");
        assert!(dst([10, 0, 1, 0], 24).matches(&forwarded()), "the backend's subnet");
        assert!(!dst([10, 0, 2, 0], 24).matches(&forwarded()));
        let src = TraceConfig {
            src_be: u32::from_ne_bytes([10, 0, 0, 6]),
            src_mask_be: mask(32),
            ..dst([0; 4], 0)
        };
        assert!(!src.matches(&forwarded()));
    }

    #[test]
    fn ports_protocols_and_drops_only() {
        let port = |p: u16| TraceConfig { port_be: p.to_be(), ..TraceConfig::default() };
        assert!(port(80).matches(&forwarded()) && port(8080).matches(&forwarded()));
        assert!(!port(53).matches(&forwarded()));
        assert!(!TraceConfig { proto: 17, ..TraceConfig::default() }.matches(&forwarded()));
        let drops = TraceConfig { flags: TRACE_F_DROPS_ONLY, ..TraceConfig::default() };
        assert!(!drops.matches(&forwarded()));
        assert!(drops.matches(&TraceEvent { verdict: Verdict::Reject as u8, ..forwarded() }));
    }

    #[test]
    fn frontends_match_requests_by_destination_and_replies_by_source() {
        let mut cfg = TraceConfig { n_frontends: 1, ..TraceConfig::default() };
        cfg.frontends[0] = TraceFrontend {
            addr_be: u32::from_ne_bytes([10, 96, 0, 10]),
            port_be: 80u16.to_be(),
            proto: 6,
            _pad: 0,
        };
        assert!(cfg.matches(&forwarded()));
        let reply = TraceEvent {
            verdict: Verdict::Reply as u8,
            orig: key([10, 0, 1, 7], [10, 0, 0, 5], 8080, 40000),
            xlated: key([10, 96, 0, 10], [10, 0, 0, 5], 80, 40000),
            ..TraceEvent::default()
        };
        assert!(cfg.matches(&reply));
        cfg.frontends[0].port_be = 81u16.to_be();
        assert!(!cfg.matches(&forwarded()) && !cfg.matches(&reply));
    }
}
