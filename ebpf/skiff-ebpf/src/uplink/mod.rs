//! XDP on the node's uplink: north-south load balancing before the kernel allocates an skb.
//!
//! Per frame:
//! - a reply of a flow this node translated, coming back from another node's backend (an external
//!   flow's SNATed reply, or a ClusterIP reply to one of this node's pods), is reverse-translated:
//!   the SNATed kind goes straight back out toward the client (`XDP_TX`/`XDP_REDIRECT`), the
//!   ClusterIP kind is handed to the kernel, which routes it to the pod;
//! - a frame to an external frontend (NodePort on this node's address, `externalIPs`, load-balancer
//!   ingress; [`SVC_F_EXTERNAL`]) gets a backend (conntrack, affinity, else Maglev hashed without
//!   the destination address, so every node picks the same backend for a flow). A backend on this
//!   node: DNAT, then the kernel delivers it (the client's address is kept; the pod's reply is
//!   reverse-translated by `skiff_lb` on its veth). A backend on another node: DNAT and SNAT to this
//!   node's address and a free port, TTL decremented, and out again at once;
//! - everything else passes untouched.
//!
//! Frontends without endpoints: `externalTrafficPolicy: Local` ones drop (as kube-proxy does);
//! others are handed to the kernel untranslated, which answers a NodePort with a RST or ICMP port
//! unreachable since nothing listens there. IP fragments pass to the kernel (not translated).
//!
//! Checksums are updated incrementally, which needs complete checksums on arriving frames: true
//! on a wire, not for a locally generated frame crossing a veth with checksum offload on. The lab
//! and the tests emulate a wire by turning TX checksum offload off on each node's uplink and on the
//! outside client's interface (see `cargo xtask lab` and `skiff_tests::topology`).

mod fib;
mod rewrite;
mod snat;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, maps::lpm_trie::Key, programs::XdpContext};
use skiff_common::{
    DropReason,
    lb::{
        BACKEND_F_LOCAL, CT_F_SNAT, CtForward, CtKey, CtReverse, SVC_F_EXTERNAL, SVC_F_LOCAL,
        SVC_F_SOURCE_RANGES, ServiceKey, ServiceValue, SourceRange, proto,
    },
};

use crate::{
    lb::{
        LbError, ct,
        maps::{SKIFF_CT, SKIFF_RNAT, SKIFF_SRC_RANGE, SKIFF_SVC, config, count_drop, count_flow},
        packet::{self, Ipv4},
        select,
    },
    trace::{self, Note},
};

/// Entry point body. On error the frame is dropped and counted: a half-translated frame must not
/// leave, and the counter says why it did not.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let mut note = Note::new();
    let len = (ctx.data_end() - ctx.data()) as u32;
    let action = match try_uplink(ctx, &mut note) {
        Ok(action) => action,
        Err(err) => {
            let reason = match err {
                LbError::Drop(reason) => reason,
                LbError::Helper => DropReason::InvalidPacket,
            };
            count_drop(reason);
            note.drop(reason);
            xdp_action::XDP_DROP
        }
    };
    trace::emit(skiff_common::trace::TraceHook::XdpUplink, ctx.ingress_ifindex() as u32, len, &note);
    action
}

#[inline(always)]
fn try_uplink(ctx: &XdpContext, note: &mut Note) -> Result<u32, LbError> {
    let Some(ip) = packet::ipv4(ctx) else { return Ok(xdp_action::XDP_PASS) };
    if ip.is_fragment() || !matches!(ip.proto, proto::TCP | proto::UDP) {
        return Ok(xdp_action::XDP_PASS);
    }
    let Some(tuple) = packet::flow(ctx, &ip) else { return Ok(xdp_action::XDP_PASS) };
    note.orig = tuple;
    // SAFETY (all map reads below): plain-data values copied out of the map at once.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(rev) = unsafe { SKIFF_RNAT.get(tuple).copied() }
        && ct::reverse_is_current(&tuple, &rev, now)
    {
        return reply(ctx, &ip, &tuple, rev, now, note);
    }
    let Some(svc) =
        (unsafe { SKIFF_SVC.get(ServiceKey::new(ip.daddr_be, tuple.dport_be, ip.proto)).copied() })
    else {
        return Ok(xdp_action::XDP_PASS);
    };
    if svc.flags & SVC_F_EXTERNAL == 0 {
        // A ClusterIP: cluster-internal, not served from outside.
        return Ok(xdp_action::XDP_PASS);
    }
    if svc.flags & SVC_F_SOURCE_RANGES != 0 {
        let client = Key::new(
            SourceRange::prefix_len(32),
            SourceRange { svc_id_be: svc.id.to_be(), addr_be: ip.saddr_be },
        );
        if SKIFF_SRC_RANGE.get(client).is_none() {
            return Err(LbError::Drop(DropReason::SourceRangeDenied));
        }
    }
    let tcp_flags =
        if ip.proto == proto::TCP { packet::tcp_at(ctx, ip.l4()).map_or(0, |t| t.flags) } else { 0 };
    forward(ctx, &ip, &tuple, &svc, tcp_flags, now, note)
}

/// Client → external frontend.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    ip: &Ipv4,
    tuple: &CtKey,
    svc: &ServiceValue,
    tcp_flags: u8,
    now: u64,
    note: &mut Note,
) -> Result<u32, LbError> {
    note.svc_id = svc.id;
    let (backend_id, backend, mut entry, new) = match select::choose(tuple, svc, now)? {
        select::Choice::Backend { id, backend, entry, new } => (id, backend, entry, new),
        // TCP whose backend is gone: the kernel answers the untranslated segment with a RST
        // (nothing listens on a NodePort).
        select::Choice::Gone => {
            count_drop(DropReason::BackendGone);
            note.reject(DropReason::BackendGone);
            return Ok(xdp_action::XDP_PASS);
        }
        select::Choice::NoEndpoints => return no_endpoints(svc, note),
    };
    if ct::is_fresh_syn(tcp_flags) {
        entry.flags &= CT_F_SNAT;
    }
    let local = backend.flags & BACKEND_F_LOCAL != 0;
    let mut out = CtKey { daddr_be: backend.addr_be, dport_be: backend.port_be, ..*tuple };
    let mut hop = None;
    if !local {
        let node = config().node_addr_be;
        if node == 0 {
            return Err(LbError::Drop(DropReason::NoNodeAddress));
        }
        if ip.ttl <= 1 {
            return Err(LbError::Drop(DropReason::TtlExceeded));
        }
        let nat_port = if entry.flags & CT_F_SNAT != 0 && entry.nat_port_be != 0 {
            entry.nat_port_be
        } else {
            snat::port(tuple, &backend, node, now).ok_or(LbError::Drop(DropReason::SnatPortsExhausted))?
        };
        out.saddr_be = node;
        out.sport_be = nat_port;
        hop = Some(fib::lookup(ctx, &out, ip.tot_len)?);
    }
    rewrite::rewrite(ctx, ip, tuple, &out, !local)?;

    let flags = entry.flags | ct::tcp_ct_flags(tcp_flags) | if local { 0 } else { CT_F_SNAT };
    let refresh = new
        || flags != entry.flags
        || out.sport_be != entry.nat_port_be && !local
        || now.saturating_sub(entry.last_seen_ns) >= ct::REFRESH_NS;
    if refresh {
        let nat_port_be = if local { 0 } else { out.sport_be };
        entry = CtForward { backend_id, svc_id: svc.id, last_seen_ns: now, flags, nat_port_be, _pad: 0 };
        if SKIFF_CT.insert(tuple, entry, 0).is_err() {
            count_drop(DropReason::CtInsertFailed);
        }
        // The reply's tuple: from the backend to whoever the flow now comes from.
        let rkey = out.reversed();
        let rev = CtReverse {
            vip_be: tuple.daddr_be,
            vport_be: tuple.dport_be,
            cport_be: if local { 0 } else { tuple.sport_be },
            client_be: if local { 0 } else { tuple.saddr_be },
            backend_id,
            last_seen_ns: now,
        };
        if SKIFF_RNAT.insert(rkey, rev, 0).is_err() {
            count_drop(DropReason::CtInsertFailed);
        }
    }
    count_flow(svc.id, backend_id, (ctx.data_end() - ctx.data()) as u32, new);
    note.forward(svc.id, backend_id, new, out);
    match hop {
        Some(hop) => fib::send(ctx, &hop),
        None => Ok(xdp_action::XDP_PASS),
    }
}

/// An external frontend with no usable endpoint.
#[inline(always)]
fn no_endpoints(svc: &ServiceValue, note: &mut Note) -> Result<u32, LbError> {
    if svc.flags & SVC_F_LOCAL != 0 {
        // externalTrafficPolicy: Local without a local endpoint: drop, as kube-proxy does, so an
        // external load balancer's health check steers clients elsewhere.
        return Err(LbError::Drop(DropReason::NoLocalEndpoints));
    }
    count_drop(DropReason::NoEndpoints);
    note.reject(DropReason::NoEndpoints);
    Ok(xdp_action::XDP_PASS)
}

/// Backend → client, for a flow translated on this node whose backend is elsewhere.
#[inline(always)]
fn reply(
    ctx: &XdpContext,
    ip: &Ipv4,
    tuple: &CtKey,
    rev: CtReverse,
    now: u64,
    note: &mut Note,
) -> Result<u32, LbError> {
    let snat = rev.cport_be != 0;
    let out = CtKey {
        saddr_be: rev.vip_be,
        daddr_be: if rev.client_be != 0 { rev.client_be } else { tuple.daddr_be },
        sport_be: rev.vport_be,
        dport_be: if snat { rev.cport_be } else { tuple.dport_be },
        proto: ip.proto,
        _pad: [0; 3],
    };
    let mut hop = None;
    if snat {
        if ip.ttl <= 1 {
            return Err(LbError::Drop(DropReason::TtlExceeded));
        }
        hop = Some(fib::lookup(ctx, &out, ip.tot_len)?);
    }
    rewrite::rewrite(ctx, ip, tuple, &out, snat)?;
    if now.saturating_sub(rev.last_seen_ns) >= ct::REFRESH_NS {
        let _ = SKIFF_RNAT.insert(tuple, CtReverse { last_seen_ns: now, ..rev }, 0);
    }
    note.reply(rev.backend_id, out);
    match hop {
        Some(hop) => fib::send(ctx, &hop),
        None => Ok(xdp_action::XDP_PASS),
    }
}
