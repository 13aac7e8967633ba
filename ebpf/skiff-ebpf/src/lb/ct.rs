//! Conntrack: the forward entry pins a flow to its backend, the reverse entry lets replies be
//! translated back. Entries carry their last-seen time; an idle one past its lifetime counts as
//! absent.

use skiff_common::lb::{CT_F_ACK, CT_F_FIN, CT_F_RST, CT_F_SYN, CtForward, CtKey, CtReverse, proto};

use super::maps::SKIFF_CT;

use super::{maps::config, packet};

const NS_PER_S: u64 = 1_000_000_000;
/// Refresh timestamps at most this often: a map write per packet would cost more than it buys.
pub const REFRESH_NS: u64 = NS_PER_S;

/// Flags to record for a TCP flags byte.
#[inline(always)]
pub fn tcp_ct_flags(tcp_flags: u8) -> u32 {
    let mut f = 0;
    if tcp_flags & packet::TCP_SYN != 0 {
        f |= CT_F_SYN;
    }
    if tcp_flags & packet::TCP_FIN != 0 {
        f |= CT_F_FIN;
    }
    if tcp_flags & packet::TCP_RST != 0 {
        f |= CT_F_RST;
    }
    if tcp_flags & packet::TCP_ACK != 0 {
        f |= CT_F_ACK;
    }
    f
}

/// A bare SYN starts a new connection on this tuple (port reuse): forget the old one's state.
#[inline(always)]
pub fn is_fresh_syn(tcp_flags: u8) -> bool {
    tcp_flags & (packet::TCP_SYN | packet::TCP_ACK) == packet::TCP_SYN
}

/// The forward key of the flow a reverse-NAT entry was made for, given the reply's tuple.
#[inline(always)]
pub fn forward_key(reply: &CtKey, rev: &CtReverse) -> CtKey {
    let client = if rev.client_be != 0 { rev.client_be } else { reply.daddr_be };
    let cport = if rev.cport_be != 0 { rev.cport_be } else { reply.dport_be };
    CtKey {
        saddr_be: client,
        daddr_be: rev.vip_be,
        sport_be: cport,
        dport_be: rev.vport_be,
        proto: reply.proto,
        _pad: [0; 3],
    }
}

/// Whether a reverse-NAT entry still belongs to a live flow to the same backend. Entries outlive
/// their flows (they are only refreshed, never expired), so a hit alone proves nothing: a later
/// direct connection on the same tuple must not be rewritten.
#[inline(always)]
pub fn reverse_is_current(reply: &CtKey, rev: &CtReverse, now: u64) -> bool {
    let key = forward_key(reply, rev);
    // SAFETY: plain-data value copied out of the map at once.
    match unsafe { SKIFF_CT.get(key).copied() } {
        Some(f) => f.backend_id == rev.backend_id && is_live(&key, &f, now),
        None => false,
    }
}

/// Idle lifetime of a forward entry given what the flow has shown so far.
#[inline(always)]
pub fn lifetime_ns(key: &CtKey, entry: &CtForward) -> u64 {
    let c = config();
    let s = if key.proto != proto::TCP {
        c.ct_udp_s
    } else if entry.flags & (CT_F_FIN | CT_F_RST) != 0 {
        c.ct_tcp_closing_s
    } else if entry.flags & CT_F_ACK == 0 {
        // Only the SYN so far: a half-open flow does not get the established lifetime.
        c.ct_tcp_syn_s
    } else {
        c.ct_tcp_established_s
    };
    u64::from(s) * NS_PER_S
}

#[inline(always)]
pub fn is_live(key: &CtKey, entry: &CtForward, now: u64) -> bool {
    now.saturating_sub(entry.last_seen_ns) <= lifetime_ns(key, entry)
}
