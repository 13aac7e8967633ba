//! Conntrack: the forward entry pins a flow to its backend, the reverse entry lets replies be
//! translated back. Entries carry their last-seen time; an idle one past its lifetime counts as
//! absent.

use skiff_common::lb::{CT_F_FIN, CT_F_RST, CT_F_SYN, CtForward, CtKey, proto};

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
    f
}

/// Idle lifetime of a forward entry given what the flow has shown so far.
#[inline(always)]
pub fn lifetime_ns(key: &CtKey, entry: &CtForward) -> u64 {
    let c = config();
    let s = if key.proto != proto::TCP {
        c.ct_udp_s
    } else if entry.flags & (CT_F_FIN | CT_F_RST) != 0 {
        c.ct_tcp_closing_s
    } else if entry.flags & CT_F_SYN != 0 && entry.last_seen_ns == 0 {
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
