//! The source port of an external flow SNATed toward another node's backend. The reply comes
//! back to `node address : port`, so that pair (with the backend's address and port) must name
//! exactly one live flow. The client's own port is tried first (most flows keep it, which keeps
//! traces readable); then ports spread over the configured range by the flow's hash.

use skiff_common::lb::{Backend, CtKey, flow_hash};

use crate::lb::{ct, maps::SKIFF_RNAT, maps::config};

/// Candidates tried before giving up (counted as `SnatPortsExhausted`).
const TRIES: u32 = 8;
/// Odd stride between candidates, so they spread over the range.
const STRIDE: u32 = 0x9e37;

/// A free SNAT port (network order) for `flow` toward `backend`, or `None` when every candidate
/// is held by another live flow.
#[inline(always)]
pub fn port(flow: &CtKey, backend: &Backend, node_be: u32, now: u64) -> Option<u16> {
    let cfg = config();
    let min = u32::from(cfg.snat_port_min);
    let span = u32::from(cfg.snat_port_max).saturating_sub(min) + 1;
    let hash = flow_hash(flow.saddr_be, flow.daddr_be, flow.sport_be, flow.dport_be, flow.proto);
    let mut i = 0;
    while i < TRIES {
        let host = if i == 0 {
            u32::from(u16::from_be(flow.sport_be))
        } else {
            min + hash.wrapping_add(i.wrapping_mul(STRIDE)).checked_rem(span).unwrap_or(0)
        };
        // Privileged client ports are not kept: a reply to a low port looks like a service's.
        if (i > 0 || host >= 1024) && host <= 0xffff {
            let candidate = (host as u16).to_be();
            if is_free(flow, backend, node_be, candidate, now) {
                return Some(candidate);
            }
        }
        i += 1;
    }
    None
}

/// Whether replies to `node:candidate` from `backend` belong to no other live flow.
#[inline(always)]
fn is_free(flow: &CtKey, backend: &Backend, node_be: u32, candidate_be: u16, now: u64) -> bool {
    let reply = CtKey {
        saddr_be: backend.addr_be,
        daddr_be: node_be,
        sport_be: backend.port_be,
        dport_be: candidate_be,
        proto: flow.proto,
        _pad: [0; 3],
    };
    // SAFETY: plain-data value copied out of the map at once.
    match unsafe { SKIFF_RNAT.get(reply).copied() } {
        None => true,
        // Ours already (the forward entry was evicted and the flow re-balanced to this backend).
        Some(rev) if ct::forward_key(&reply, &rev) == *flow => true,
        Some(rev) => !ct::reverse_is_current(&reply, &rev, now),
    }
}
