//! Socket-level load balancing for the node's own processes (and host-network pods): cgroup hooks
//! on the root cgroup turn a `connect()` or a UDP `sendmsg()` to a frontend — a ClusterIP, or a
//! NodePort on a node address or on 127.0.0.0/8 — into one to a backend chosen like the packet
//! path chooses (affinity, else Maglev), before any packet exists; `getpeername()` and a UDP
//! datagram's source show the frontend again. Nothing is translated per packet, so host traffic
//! to Services costs what direct traffic does.
//!
//! Only sockets of the node's own network namespace are served (its cookie is patched in at load);
//! pods' sockets live in other namespaces and go through the TC program on their veths. A frontend
//! without endpoints, or a port a ClusterIP does not serve, fails the call with ECONNREFUSED.
//! Fallback on any error: the call goes on untranslated.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_set_retval},
    programs::SockAddrContext,
};
use skiff_common::lb::{CtKey, ServiceKey, SockFrontend, SockKey, proto};

use crate::lb::{
    maps::{SKIFF_SOCK_RNAT, SKIFF_SVC, config, is_vip},
    select,
};

const AF_INET: u32 = 2;
/// The call goes on.
const ALLOW: i32 = 1;
const ECONNREFUSED: i32 = 111;

/// The destination (or peer) of a socket call of the node's namespace, TCP or UDP over IPv4.
struct Dest {
    addr_be: u32,
    port_be: u16,
    proto: u8,
}

#[inline(always)]
fn ours(ctx: &SockAddrContext) -> Option<Dest> {
    let cookie = config().netns_cookie;
    // SAFETY: the context is the live bpf_sock_addr of this call; plain field reads.
    let (family, addr_be, port, proto_nr) = unsafe {
        let sa = ctx.sock_addr;
        ((*sa).user_family, (*sa).user_ip4, (*sa).user_port, (*sa).protocol)
    };
    if family != AF_INET || cookie == 0 {
        return None;
    }
    // SAFETY: helper on the live context.
    if unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != cookie {
        return None;
    }
    let proto_nr = proto_nr as u8;
    if proto_nr != proto::TCP && proto_nr != proto::UDP {
        return None;
    }
    // user_port holds the port in network order in its low 16 bits.
    Some(Dest { addr_be, port_be: port as u16, proto: proto_nr })
}

#[inline(always)]
fn refuse() -> i32 {
    // SAFETY: plain helper; the call then fails with this error instead of EPERM.
    unsafe { bpf_set_retval(-ECONNREFUSED) };
    0
}

/// connect4 and sendmsg4: a frontend becomes a backend.
#[inline(always)]
pub fn to_backend(ctx: &SockAddrContext) -> i32 {
    let Some(dest) = ours(ctx) else { return ALLOW };
    // 127.0.0.0/8 reaches the NodePorts of the node's own address, as from outside.
    let loopback = dest.addr_be.to_ne_bytes()[0] == 127;
    let frontend = if loopback { config().node_addr_be } else { dest.addr_be };
    // SAFETY: plain-data value copied out of the map at once.
    let Some(svc) = (unsafe { SKIFF_SVC.get(ServiceKey::new(frontend, dest.port_be, dest.proto)).copied() })
    else {
        return if is_vip(frontend) { refuse() } else { ALLOW };
    };
    if svc.backend_count == 0 {
        return refuse();
    }
    // SAFETY: helpers on the live context / without arguments.
    let (cookie, now) = unsafe { (bpf_get_socket_cookie(ctx.as_ptr()), bpf_ktime_get_ns()) };
    // The socket stands in for a client port: the node's address (for ClientIP affinity) and
    // bits of the socket's cookie (so sockets spread over the backends).
    let flow = CtKey {
        saddr_be: config().node_addr_be,
        daddr_be: frontend,
        sport_be: (cookie ^ (cookie >> 16) ^ (cookie >> 32)) as u16,
        dport_be: dest.port_be,
        proto: dest.proto,
        _pad: [0; 3],
    };
    let Ok((_, backend)) = select::select(&svc, &flow, now) else { return ALLOW };
    // SAFETY: the context is the live bpf_sock_addr; these fields are writable in these hooks.
    unsafe {
        (*ctx.sock_addr).user_ip4 = backend.addr_be;
        (*ctx.sock_addr).user_port = u32::from(backend.port_be);
    }
    let key = SockKey { cookie, addr_be: backend.addr_be, port_be: backend.port_be, _pad: 0 };
    let asked = SockFrontend { addr_be: dest.addr_be, port_be: dest.port_be, _pad: 0 };
    let _ = SKIFF_SOCK_RNAT.insert(key, asked, 0);
    ALLOW
}

/// recvmsg4 and getpeername4: a backend the socket was sent to shows as the frontend it asked for.
#[inline(always)]
pub fn to_frontend(ctx: &SockAddrContext) -> i32 {
    let Some(peer) = ours(ctx) else { return ALLOW };
    // SAFETY: helper on the live context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockKey { cookie, addr_be: peer.addr_be, port_be: peer.port_be, _pad: 0 };
    // SAFETY: plain-data value copied out of the map at once.
    if let Some(asked) = unsafe { SKIFF_SOCK_RNAT.get(key).copied() } {
        // SAFETY: as above; the fields are writable in these hooks.
        unsafe {
            (*ctx.sock_addr).user_ip4 = asked.addr_be;
            (*ctx.sock_addr).user_port = u32::from(asked.port_be);
        }
    }
    ALLOW
}
