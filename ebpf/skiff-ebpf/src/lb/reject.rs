//! Rejecting instead of blackholing: the packet is rewritten in place into the reply the client
//! needs and sent back out of the interface it came in on.
//!
//! - ICMP port unreachable (what kube-proxy's REJECT sends) for a frontend without endpoints, an
//!   unserved port or protocol. It quotes the offending IP header and 8 bytes of L4, as RFC 792
//!   asks; packets with IP options are not quoted but dropped (counted as `RejectFailed`).
//! - TCP RST for an established flow whose backend went away: ICMP is only a soft error for an
//!   established TCP socket, a reset ends it at once.

use aya_ebpf::{
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use skiff_common::{DropReason, lb::proto};

use crate::trace::Note;

use super::{
    LbError,
    maps::count_drop,
    packet::{ETH_LEN, Ipv4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, checksum, tcp_at},
};

const IP_LEN: usize = 20;
const ICMP_LEN: usize = 8;
const QUOTE_LEN: usize = IP_LEN + 8;
const ICMP_FRAME: usize = ETH_LEN + IP_LEN + ICMP_LEN + QUOTE_LEN;
const TCP_LEN: usize = 20;
const RST_FRAME: usize = ETH_LEN + IP_LEN + TCP_LEN;
const TTL: u8 = 64;

/// Ethernet header with the addresses swapped, and a fresh option-less IPv4 header from the
/// frontend back to the client (checksum filled in).
#[inline(always)]
fn reply_headers<const N: usize>(frame: &mut [u8; N], eth: &[u8; 12], ip: &Ipv4, l4_proto: u8, tos: u8) {
    frame[0..6].copy_from_slice(&eth[6..12]);
    frame[6..12].copy_from_slice(&eth[0..6]);
    frame[12] = 0x08;
    frame[13] = 0x00;
    let tot_len = ((N - ETH_LEN) as u16).to_be_bytes();
    let mut iph =
        [0x45, tos, tot_len[0], tot_len[1], 0, 0, 0, 0, TTL, l4_proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    iph[12..16].copy_from_slice(&ip.daddr_be.to_ne_bytes());
    iph[16..20].copy_from_slice(&ip.saddr_be.to_ne_bytes());
    let csum = checksum(&iph, 0).to_be_bytes();
    iph[10] = csum[0];
    iph[11] = csum[1];
    frame[ETH_LEN..ETH_LEN + IP_LEN].copy_from_slice(&iph);
}

/// Replaces the whole packet with `frame` and sends it back where it came from.
#[inline(always)]
fn send_back<const N: usize>(ctx: &TcContext, frame: &[u8; N]) -> Result<i32, LbError> {
    // SAFETY: the context is the live skb of this program run.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, N as u32, 0) } != 0 {
        return Err(LbError::Drop(DropReason::RejectFailed));
    }
    ctx.store(0, frame, 0).map_err(|_| LbError::Drop(DropReason::RejectFailed))?;
    // SAFETY: the context is the live skb of this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain helper call; flags 0 = egress of `ifindex`.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// Answers the packet with ICMP destination unreachable / port unreachable and counts `reason`.
#[inline(always)]
pub fn port_unreachable(
    ctx: &TcContext,
    ip: &Ipv4,
    reason: DropReason,
    note: &mut Note,
) -> Result<i32, LbError> {
    if ip.ihl != IP_LEN {
        return Err(LbError::Drop(DropReason::RejectFailed));
    }
    let eth: [u8; 12] = ctx.load(0).map_err(|_| LbError::Drop(DropReason::RejectFailed))?;
    let quote: [u8; QUOTE_LEN] = ctx.load(ETH_LEN).map_err(|_| LbError::Drop(DropReason::RejectFailed))?;
    let mut frame = [0u8; ICMP_FRAME];
    // Linux sends ICMP errors with TOS 0xc0 (internetwork control).
    reply_headers(&mut frame, &eth, ip, proto::ICMP, 0xc0);
    let mut icmp = [0u8; ICMP_LEN + QUOTE_LEN];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 3; // port unreachable
    icmp[ICMP_LEN..].copy_from_slice(&quote);
    let csum = checksum(&icmp, 0).to_be_bytes();
    icmp[2] = csum[0];
    icmp[3] = csum[1];
    frame[ETH_LEN + IP_LEN..].copy_from_slice(&icmp);
    let action = send_back(ctx, &frame)?;
    count_drop(reason);
    note.reject(reason);
    Ok(action)
}

/// Answers a TCP segment with a reset (RFC 793 "Reset Generation") and counts `reason`.
#[inline(always)]
pub fn tcp_reset(ctx: &TcContext, ip: &Ipv4, reason: DropReason, note: &mut Note) -> Result<i32, LbError> {
    let tcp = tcp_at(ctx, ip.l4()).ok_or(LbError::Drop(DropReason::InvalidPacket))?;
    let ports: [u8; 4] = ctx.load(ip.l4()).map_err(|_| LbError::Drop(DropReason::InvalidPacket))?;
    let eth: [u8; 12] = ctx.load(0).map_err(|_| LbError::Drop(DropReason::RejectFailed))?;
    if tcp.flags & TCP_RST != 0 {
        // Never answer a reset with a reset.
        return Err(LbError::Drop(reason));
    }
    let payload = usize::from(ip.tot_len).saturating_sub(ip.ihl + tcp.doff) as u32;
    let seg_len = payload + u32::from(tcp.flags & TCP_SYN != 0) + u32::from(tcp.flags & TCP_FIN != 0);
    let (seq, ack, flags) = if tcp.flags & TCP_ACK != 0 {
        (tcp.ack, 0, TCP_RST)
    } else {
        (0, tcp.seq.wrapping_add(seg_len), TCP_RST | TCP_ACK)
    };
    let mut frame = [0u8; RST_FRAME];
    reply_headers(&mut frame, &eth, ip, proto::TCP, 0);
    let mut th = [0u8; TCP_LEN];
    th[0..2].copy_from_slice(&ports[2..4]);
    th[2..4].copy_from_slice(&ports[0..2]);
    th[4..8].copy_from_slice(&seq.to_be_bytes());
    th[8..12].copy_from_slice(&ack.to_be_bytes());
    th[12] = 5 << 4;
    th[13] = flags;
    // Pseudo-header: source, destination, protocol, TCP length.
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&ip.daddr_be.to_ne_bytes());
    pseudo[4..8].copy_from_slice(&ip.saddr_be.to_ne_bytes());
    pseudo[9] = proto::TCP;
    pseudo[11] = TCP_LEN as u8;
    let partial = u32::from(!checksum(&pseudo, 0));
    let csum = checksum(&th, partial).to_be_bytes();
    th[16] = csum[0];
    th[17] = csum[1];
    frame[ETH_LEN + IP_LEN..].copy_from_slice(&th);
    let action = send_back(ctx, &frame)?;
    count_drop(reason);
    note.reject(reason);
    Ok(action)
}
