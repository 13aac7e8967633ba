//! Sending a translated frame on from XDP: the kernel's FIB (routes and neighbours) names the
//! next hop and the interface, the frame gets that hop's MAC addresses, and goes out with
//! `XDP_TX` (same interface) or `XDP_REDIRECT` (another one) without ever becoming an skb.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, xdp_action},
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use skiff_common::{DropReason, lb::CtKey};

use crate::lb::{LbError, packet::Packet};

const AF_INET: u8 = 2;

/// Where a frame goes next.
pub struct Hop {
    /// Destination then source MAC, as they sit at the start of the frame.
    macs: [u8; 12],
    ifindex: u32,
}

/// Looks up the route of `flow` (as it will leave: addresses and ports after translation).
/// Fails with `NoRoute` when the destination is unroutable or its neighbour is not resolved yet
/// (the agent keeps its peers' entries resolved, so that is a transient state).
#[inline(always)]
pub fn lookup(ctx: &XdpContext, flow: &CtKey, tot_len: u16) -> Result<Hop, LbError> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid (empty) request.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = flow.proto;
    params.sport = flow.sport_be;
    params.dport = flow.dport_be;
    params.__bindgen_anon_1.tot_len = tot_len;
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_3.ipv4_src = flow.saddr_be;
    params.__bindgen_anon_4.ipv4_dst = flow.daddr_be;
    // SAFETY: `params` is a live, correctly sized request the helper fills in.
    let ret = unsafe { fib_lookup(ctx.as_ptr(), &mut params, size_of::<bpf_fib_lookup>() as i32, 0) };
    if ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Err(LbError::Drop(DropReason::NoRoute));
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&params.dmac);
    macs[6..].copy_from_slice(&params.smac);
    Ok(Hop { macs, ifindex: params.ifindex })
}

/// Gives the frame the hop's MAC addresses and returns the verdict that sends it there.
#[inline(always)]
pub fn send(ctx: &XdpContext, hop: &Hop) -> Result<u32, LbError> {
    ctx.write(0, &hop.macs).map_err(|_| LbError::Helper)?;
    if hop.ifindex == ctx.ingress_ifindex() as u32 {
        return Ok(xdp_action::XDP_TX);
    }
    // SAFETY: plain helper call; flags 0.
    Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as u32)
}
