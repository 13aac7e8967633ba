//! skiff's kernel-side datapath.
//!
//! Every entry point has the same shape: a thin `#[xdp]`/`#[classifier]` function that calls a
//! fallible `try_*` body and maps an error to a documented fallback verdict.
#![no_std]
#![no_main]

mod counters;
mod lb;
mod socklb;
mod trace;
mod uplink;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use skiff_common::Hook;

/// XDP entry on an uplink or test interface.
///
/// Fallback on error: `XDP_PASS`. Counting is observability only, so a failure must never cost
/// the packet.
#[xdp]
pub fn skiff_xdp(ctx: XdpContext) -> u32 {
    match counters::try_count_xdp(&ctx) {
        Ok(verdict) => verdict,
        Err(_) => xdp_action::XDP_PASS,
    }
}

/// TC (tcx) ingress entry. Fallback on error: `TC_ACT_OK` (let the packet continue).
#[classifier]
pub fn skiff_tc_in(ctx: TcContext) -> i32 {
    match counters::try_count_tc(&ctx, Hook::TcIngress) {
        Ok(verdict) => verdict,
        Err(_) => TC_ACT_OK,
    }
}

/// TC (tcx) egress entry. Fallback on error: `TC_ACT_OK` (let the packet continue).
#[classifier]
pub fn skiff_tc_out(ctx: TcContext) -> i32 {
    match counters::try_count_tc(&ctx, Hook::TcEgress) {
        Ok(verdict) => verdict,
        Err(_) => TC_ACT_OK,
    }
}

/// XDP on the node's uplink: NodePort, `externalIPs` and load-balancer addresses, and the replies
/// of flows this node sent to backends on other nodes.
///
/// Fallback on error: `XDP_DROP`, counted by reason. As for `skiff_lb`, a frame may be
/// half-rewritten by then and must never leave.
#[xdp]
pub fn skiff_uplink(ctx: XdpContext) -> u32 {
    uplink::run(&ctx)
}

/// TC (tcx) ingress on the host side of a pod veth: ClusterIP load balancing and reverse NAT.
///
/// Fallback on error: `TC_ACT_SHOT`, counted by reason. A packet may be half-rewritten by then, and
/// a half-translated packet must never leave.
#[classifier]
pub fn skiff_lb(ctx: TcContext) -> i32 {
    lb::run(&ctx)
}

/// cgroup connect4 (root cgroup): the node's own sockets connecting to a frontend get a backend.
/// Fallback on error: allow the call untranslated (see `socklb`).
#[cgroup_sock_addr(connect4)]
pub fn skiff_connect4(ctx: SockAddrContext) -> i32 {
    socklb::to_backend(&ctx)
}

/// cgroup sendmsg4: an unconnected UDP datagram to a frontend goes to a backend.
#[cgroup_sock_addr(sendmsg4)]
pub fn skiff_sendmsg4(ctx: SockAddrContext) -> i32 {
    socklb::to_backend(&ctx)
}

/// cgroup recvmsg4: a datagram from a backend shows the frontend as its source.
#[cgroup_sock_addr(recvmsg4)]
pub fn skiff_recvmsg4(ctx: SockAddrContext) -> i32 {
    socklb::to_frontend(&ctx)
}

/// cgroup getpeername4: a socket sent to a backend names the frontend as its peer.
#[cgroup_sock_addr(getpeername4)]
pub fn skiff_getpeer4(ctx: SockAddrContext) -> i32 {
    socklb::to_frontend(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach here; this only satisfies no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
