//! Backend choice: a flow's conntrack entry first; for a new flow session affinity, then the
//! frontend's Maglev row, indexed by the flow hash (or by a random number for `SVC_F_RANDOM`).

use aya_ebpf::helpers::bpf_get_prandom_u32;
use skiff_common::{
    DropReason,
    lb::{
        AffinityKey, AffinityValue, Backend, CtForward, CtKey, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_RANDOM,
        ServiceValue, flow_hash, proto,
    },
};

use super::{
    LbError, ct,
    maps::{SKIFF_AFFINITY, SKIFF_BACKENDS, SKIFF_CT, SKIFF_MAGLEV, config},
};

const NS_PER_S: u64 = 1_000_000_000;

/// What conntrack and the frontend's table make of a packet's flow.
pub enum Choice {
    /// The flow's backend: from conntrack, or just chosen (`new`, with a blank entry).
    Backend { id: u32, backend: Backend, entry: CtForward, new: bool },
    /// A TCP flow whose backend was removed; its conntrack entry is gone now.
    Gone,
    /// The frontend has no usable endpoint.
    NoEndpoints,
}

/// Conntrack first (a live entry whose backend still exists), else a new choice. A UDP flow whose
/// backend went away is re-balanced, so a datagram stream never sticks to a dead endpoint (the
/// stale-UDP-conntrack bug class); a TCP one is reported [`Choice::Gone`].
#[inline(always)]
pub fn choose(tuple: &CtKey, svc: &ServiceValue, now: u64) -> Result<Choice, LbError> {
    // SAFETY: plain-data value copied out of the map at once.
    let seen = unsafe { SKIFF_CT.get(tuple).copied() }.filter(|e| ct::is_live(tuple, e, now));
    if let Some(e) = seen {
        if let Some(b) = backend(e.backend_id) {
            return Ok(Choice::Backend { id: e.backend_id, backend: b, entry: e, new: false });
        }
        if tuple.proto == proto::TCP {
            let _ = SKIFF_CT.remove(tuple);
            return Ok(Choice::Gone);
        }
    }
    if svc.backend_count == 0 {
        return Ok(Choice::NoEndpoints);
    }
    let (id, b) = select(svc, tuple, now)?;
    Ok(Choice::Backend { id, backend: b, entry: CtForward::default(), new: true })
}

#[inline(always)]
pub fn backend(id: u32) -> Option<Backend> {
    // SAFETY: plain-data value copied out of the map right away.
    unsafe { SKIFF_BACKENDS.get(id).copied() }
}

/// Picks the backend of a new flow to `svc`. The caller has checked `svc.backend_count > 0`.
#[inline(always)]
pub fn select(svc: &ServiceValue, flow: &CtKey, now: u64) -> Result<(u32, Backend), LbError> {
    let affinity = svc.flags & SVC_F_AFFINITY != 0;
    let akey = AffinityKey { svc_id: svc.id, client_be: flow.saddr_be };
    if affinity {
        // SAFETY: plain-data value copied out of the map right away.
        if let Some(a) = unsafe { SKIFF_AFFINITY.get(akey).copied() } {
            let fresh = now.saturating_sub(a.last_used_ns) < u64::from(svc.affinity_timeout_s) * NS_PER_S;
            if fresh && let Some(b) = backend(a.backend_id) {
                remember(&akey, a.backend_id, now);
                return Ok((a.backend_id, b));
            }
        }
    }
    let m = config().maglev_m;
    let pick = if svc.flags & SVC_F_RANDOM != 0 {
        // SAFETY: helper without arguments.
        unsafe { bpf_get_prandom_u32() }
    } else {
        // External frontends hash without the destination: a NodePort is a different address on
        // every node, and any node must pick the same backend for a flow.
        let daddr = if svc.flags & SVC_F_EXTERNAL != 0 { 0 } else { flow.daddr_be };
        flow_hash(flow.saddr_be, daddr, flow.sport_be, flow.dport_be, flow.proto)
    };
    // checked_rem: a zero M (a misconfigured load) must not become a panic path the verifier rejects.
    let index = pick.checked_rem(m).ok_or(LbError::Drop(DropReason::MaglevInconsistent))?;
    let slot = svc.id.wrapping_mul(m).wrapping_add(index);
    let id = *SKIFF_MAGLEV.get(slot).ok_or(LbError::Drop(DropReason::MaglevInconsistent))?;
    let b = backend(id).ok_or(LbError::Drop(DropReason::MaglevInconsistent))?;
    if affinity {
        remember(&akey, id, now);
    }
    Ok((id, b))
}

#[inline(always)]
fn remember(key: &AffinityKey, backend_id: u32, now: u64) {
    let value = AffinityValue { backend_id, _pad: 0, last_used_ns: now };
    // An LRU map never refuses for lack of space; a failure here only loses stickiness.
    let _ = SKIFF_AFFINITY.insert(key, value, 0);
}
