//! ClusterIP load balancing on the host side of pod veths (tc ingress = what the pod sends).
//!
//! Per packet: a reply of a translated flow gets its source turned back into the frontend; a packet
//! to a frontend gets a backend (conntrack first, else affinity, else Maglev) and is DNATed to it;
//! a frontend without endpoints is rejected with ICMP port unreachable (as kube-proxy does); all
//! other traffic passes untouched.

pub mod ct;
mod icmp;
pub mod maps;
mod nat;
pub mod packet;
mod reject;
pub mod select;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
    programs::TcContext,
};
use skiff_common::{
    DropReason,
    lb::{
        CT_F_HAIRPIN, CtForward, CtKey, CtReverse, FragKey, FragValue, SVC_F_LOCAL, ServiceKey, ServiceValue,
        proto,
    },
};

use self::{
    maps::{SKIFF_CT, SKIFF_FRAGS, SKIFF_RNAT, SKIFF_SVC, config, count_drop, count_flow, is_vip},
    nat::End,
    packet::{Ipv4, Packet as _},
};
use crate::trace::{self, Note};

/// Why processing stopped short of a verdict.
pub enum LbError {
    /// Drop the packet, counting `reason`.
    Drop(DropReason),
    /// A packet helper failed (the packet may be half-rewritten, so it is dropped).
    Helper,
}

/// Entry point body. On error the packet is dropped and counted: a half-translated packet must
/// not leave, and the counter says why it did not.
#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let mut note = Note::new();
    let action = match try_lb(ctx, &mut note) {
        Ok(action) => action,
        Err(err) => {
            let reason = match err {
                LbError::Drop(reason) => reason,
                LbError::Helper => DropReason::InvalidPacket,
            };
            count_drop(reason);
            note.drop(reason);
            TC_ACT_SHOT
        }
    };
    // SAFETY: `skb` points at the context the kernel handed this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    trace::emit(skiff_common::trace::TraceHook::TcPod, ifindex, ctx.len(), &note);
    action
}

#[inline(always)]
fn try_lb(ctx: &TcContext, note: &mut Note) -> Result<i32, LbError> {
    let Some(ip) = packet::ipv4(ctx) else { return Ok(TC_ACT_OK) };
    if ip.is_later_fragment() {
        return later_fragment(ctx, &ip);
    }
    match ip.proto {
        proto::TCP | proto::UDP => flow(ctx, &ip, note),
        proto::ICMP => icmp::translate_error(ctx, &ip),
        _ if is_vip(ip.daddr_be) => {
            note.orig =
                CtKey { saddr_be: ip.saddr_be, daddr_be: ip.daddr_be, proto: ip.proto, ..CtKey::default() };
            reject::port_unreachable(ctx, &ip, DropReason::UnsupportedProtocol, note)
        }
        _ => Ok(TC_ACT_OK),
    }
}

/// A TCP or UDP packet (or the first fragment of a datagram).
#[inline(always)]
fn flow(ctx: &TcContext, ip: &Ipv4, note: &mut Note) -> Result<i32, LbError> {
    let Some(tuple) = packet::flow(ctx, ip) else {
        return if is_vip(ip.daddr_be) {
            Err(LbError::Drop(DropReason::InvalidPacket))
        } else {
            Ok(TC_ACT_OK)
        };
    };
    note.orig = tuple;
    let dport = tuple.dport_be;
    // SAFETY (all map reads below): plain-data values copied out of the map at once.
    let now = unsafe { bpf_ktime_get_ns() };

    if let Some(rev) = unsafe { SKIFF_RNAT.get(tuple).copied() } {
        if ct::reverse_is_current(&tuple, &rev, now) {
            return reply(ctx, ip, &tuple, rev, now, note);
        }
        // Left over from a finished flow: this packet is not a reply of it.
        let _ = SKIFF_RNAT.remove(tuple);
    }
    let Some(svc) = (unsafe { SKIFF_SVC.get(ServiceKey::new(ip.daddr_be, dport, ip.proto)).copied() }) else {
        if is_vip(ip.daddr_be) {
            return reject::port_unreachable(ctx, ip, DropReason::UnknownPort, note);
        }
        // A new TCP connection straight to an address whose replies a translated flow is still
        // waiting on (the client reused a port right after its Service connection to the same
        // backend closed): that flow's reverse-NAT entry would take this connection's replies.
        // Only SYNs look, so other traffic pays one byte's load.
        if ip.proto == proto::TCP && ctx.read::<u8>(ip.l4() + packet::TCP_FLAGS).is_some_and(ct::is_fresh_syn)
        {
            let _ = SKIFF_RNAT.remove(tuple.reversed());
        }
        return Ok(TC_ACT_OK);
    };
    let tcp_flags =
        if ip.proto == proto::TCP { packet::tcp_at(ctx, ip.l4()).map_or(0, |t| t.flags) } else { 0 };
    forward(ctx, ip, &tuple, &svc, tcp_flags, now, note)
}

/// Client → frontend: pick (or recall) the backend, DNAT, record the flow.
#[inline(always)]
fn forward(
    ctx: &TcContext,
    ip: &Ipv4,
    tuple: &CtKey,
    svc: &ServiceValue,
    tcp_flags: u8,
    now: u64,
    note: &mut Note,
) -> Result<i32, LbError> {
    note.svc_id = svc.id;
    let (backend_id, backend, mut entry, new) = match select::choose(tuple, svc, now)? {
        select::Choice::Backend { id, backend, entry, new } => (id, backend, entry, new),
        // TCP: tell the client at once.
        select::Choice::Gone => return reject::tcp_reset(ctx, ip, DropReason::BackendGone, note),
        select::Choice::NoEndpoints => return no_endpoints(ctx, ip, svc, tcp_flags, note),
    };
    if ct::is_fresh_syn(tcp_flags) {
        entry.flags = 0;
    }

    let hairpin = backend.addr_be == ip.saddr_be;
    let new_saddr = if hairpin { config().hairpin_addr_be } else { ip.saddr_be };
    nat::set_addr(ctx, ip, End::Destination, ip.daddr_be, backend.addr_be, true)?;
    nat::set_port(ctx, ip, End::Destination, tuple.dport_be, backend.port_be)?;
    nat::set_addr(ctx, ip, End::Source, ip.saddr_be, new_saddr, true)?;

    let flags = entry.flags | ct::tcp_ct_flags(tcp_flags) | if hairpin { CT_F_HAIRPIN } else { 0 };
    let refresh = new || flags != entry.flags || now.saturating_sub(entry.last_seen_ns) >= ct::REFRESH_NS;
    if refresh {
        entry = CtForward { backend_id, svc_id: svc.id, last_seen_ns: now, flags, nat_port_be: 0, _pad: 0 };
        if SKIFF_CT.insert(tuple, entry, 0).is_err() {
            count_drop(DropReason::CtInsertFailed);
        }
        // (Re)written with the forward entry, so an LRU eviction of the reverse half heals itself.
        let rkey = CtKey {
            saddr_be: backend.addr_be,
            daddr_be: new_saddr,
            sport_be: backend.port_be,
            dport_be: tuple.sport_be,
            proto: ip.proto,
            _pad: [0; 3],
        };
        let rev = CtReverse {
            vip_be: ip.daddr_be,
            vport_be: tuple.dport_be,
            cport_be: 0,
            client_be: if hairpin { ip.saddr_be } else { 0 },
            backend_id,
            last_seen_ns: now,
        };
        if SKIFF_RNAT.insert(rkey, rev, 0).is_err() {
            count_drop(DropReason::CtInsertFailed);
        }
    }
    if ip.is_fragment() {
        remember_fragment(ip, new_saddr, backend.addr_be);
    }
    count_flow(svc.id, backend_id, ctx.len(), new);
    let out = CtKey { saddr_be: new_saddr, daddr_be: backend.addr_be, dport_be: backend.port_be, ..*tuple };
    note.forward(svc.id, backend_id, new, out);
    Ok(TC_ACT_OK)
}

/// A frontend with no usable endpoint. A new connection (or a datagram) gets ICMP port
/// unreachable; a segment of an established TCP connection gets a RST, because ICMP is only a
/// soft error to an established socket and it would hang until its retransmissions run out.
#[inline(always)]
fn no_endpoints(
    ctx: &TcContext,
    ip: &Ipv4,
    svc: &ServiceValue,
    tcp_flags: u8,
    note: &mut Note,
) -> Result<i32, LbError> {
    let reason =
        if svc.flags & SVC_F_LOCAL != 0 { DropReason::NoLocalEndpoints } else { DropReason::NoEndpoints };
    if ip.proto == proto::TCP && tcp_flags & packet::TCP_SYN == 0 {
        return reject::tcp_reset(ctx, ip, reason, note);
    }
    reject::port_unreachable(ctx, ip, reason, note)
}

/// Backend → client: the source becomes the frontend again (and a hairpin flow's destination the
/// client's real address).
#[inline(always)]
fn reply(
    ctx: &TcContext,
    ip: &Ipv4,
    tuple: &CtKey,
    rev: CtReverse,
    now: u64,
    note: &mut Note,
) -> Result<i32, LbError> {
    let new_daddr = if rev.client_be != 0 { rev.client_be } else { ip.daddr_be };
    nat::set_addr(ctx, ip, End::Source, ip.saddr_be, rev.vip_be, true)?;
    nat::set_port(ctx, ip, End::Source, tuple.sport_be, rev.vport_be)?;
    nat::set_addr(ctx, ip, End::Destination, ip.daddr_be, new_daddr, true)?;
    if now.saturating_sub(rev.last_seen_ns) >= ct::REFRESH_NS {
        let fresh = CtReverse { last_seen_ns: now, ..rev };
        let _ = SKIFF_RNAT.insert(tuple, fresh, 0);
    }
    if ip.is_fragment() {
        remember_fragment(ip, rev.vip_be, new_daddr);
    }
    let out = CtKey { saddr_be: rev.vip_be, daddr_be: new_daddr, sport_be: rev.vport_be, ..*tuple };
    note.reply(rev.backend_id, out);
    Ok(TC_ACT_OK)
}

/// The first fragment's translation, for the fragments that follow (they carry no ports).
#[inline(always)]
fn remember_fragment(ip: &Ipv4, saddr_be: u32, daddr_be: u32) {
    let key =
        FragKey { saddr_be: ip.saddr_be, daddr_be: ip.daddr_be, id_be: ip.id_be, proto: ip.proto, _pad: 0 };
    let _ = SKIFF_FRAGS.insert(key, FragValue { saddr_be, daddr_be }, 0);
}

/// A fragment after the first: translated like its first fragment was, if that one was seen.
#[inline(always)]
fn later_fragment(ctx: &TcContext, ip: &Ipv4) -> Result<i32, LbError> {
    let key =
        FragKey { saddr_be: ip.saddr_be, daddr_be: ip.daddr_be, id_be: ip.id_be, proto: ip.proto, _pad: 0 };
    match unsafe { SKIFF_FRAGS.get(key).copied() } {
        Some(to) => {
            nat::set_addr(ctx, ip, End::Source, ip.saddr_be, to.saddr_be, false)?;
            nat::set_addr(ctx, ip, End::Destination, ip.daddr_be, to.daddr_be, false)?;
            Ok(TC_ACT_OK)
        }
        None if is_vip(ip.daddr_be) => Err(LbError::Drop(DropReason::FragmentNotTracked)),
        None => Ok(TC_ACT_OK),
    }
}
