//! ICMP errors about a translated flow (a backend's port unreachable, a router's time exceeded or
//! fragmentation needed) reach the client only if they look like they came from the frontend: the
//! quoted inner header is rewritten back to the frontend, and the outer source too when the error
//! came from the backend itself.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use skiff_common::lb::{CtKey, proto};

use super::{
    LbError, ct,
    maps::SKIFF_RNAT,
    nat::{self, End},
    packet::{self, IP_CSUM, IP_DADDR, IP_SADDR, Ipv4, csum_update16, csum_update32},
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;
/// ICMP checksum offset in the ICMP header.
const ICMP_CSUM: usize = 2;
const ICMP_HDR: usize = 8;

#[inline(always)]
pub fn translate_error(ctx: &TcContext, ip: &Ipv4) -> Result<i32, LbError> {
    let Ok(kind) = ctx.load::<u8>(ip.l4()) else { return Ok(TC_ACT_OK) };
    if !matches!(kind, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB) {
        return Ok(TC_ACT_OK);
    }
    let inner_at = ip.l4() + ICMP_HDR;
    let Some(inner) = packet::ipv4_at(ctx, inner_at) else { return Ok(TC_ACT_OK) };
    if inner.ihl != 20 || !matches!(inner.proto, proto::TCP | proto::UDP) {
        return Ok(TC_ACT_OK);
    }
    let inner_l4 = inner_at + inner.ihl;
    let Some((isport, idport)) = packet::ports_at(ctx, inner_l4) else { return Ok(TC_ACT_OK) };
    // The quoted packet went client → backend; its reply tuple is the reverse-NAT key.
    let key = CtKey {
        saddr_be: inner.daddr_be,
        daddr_be: inner.saddr_be,
        sport_be: idport,
        dport_be: isport,
        proto: inner.proto,
        _pad: [0; 3],
    };
    // SAFETY: plain-data value copied out of the map at once.
    let Some(rev) = (unsafe { SKIFF_RNAT.get(key).copied() }) else { return Ok(TC_ACT_OK) };
    // SAFETY: helper without arguments.
    if !ct::reverse_is_current(&key, &rev, unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }) {
        return Ok(TC_ACT_OK);
    }
    let client = if rev.client_be != 0 { rev.client_be } else { inner.saddr_be };

    // Inner header: destination back to the frontend, source back to the client (hairpin).
    let err = |_| LbError::Helper;
    let icmp_csum_at = ip.l4() + ICMP_CSUM;
    let mut icmp_csum: u16 = ctx.load(icmp_csum_at).map_err(err)?;
    let inner_csum_at = inner_at + IP_CSUM;
    let old_inner_csum: u16 = ctx.load(inner_csum_at).map_err(err)?;
    let mut inner_csum = csum_update32(old_inner_csum, inner.daddr_be, rev.vip_be);
    inner_csum = csum_update32(inner_csum, inner.saddr_be, client);
    icmp_csum = csum_update32(icmp_csum, inner.daddr_be, rev.vip_be);
    icmp_csum = csum_update32(icmp_csum, inner.saddr_be, client);
    icmp_csum = csum_update16(icmp_csum, idport, rev.vport_be);
    icmp_csum = csum_update16(icmp_csum, old_inner_csum, inner_csum);
    // A UDP quote includes its checksum: restore the one the client computed for the frontend, so
    // the quote is byte for byte what the client sent. (TCP's checksum lies past the 8 bytes.)
    if inner.proto == proto::UDP {
        let at = inner_l4 + 6;
        let old: u16 = ctx.load(at).map_err(err)?;
        if old != 0 {
            let mut new = csum_update32(old, inner.daddr_be, rev.vip_be);
            new = csum_update32(new, inner.saddr_be, client);
            new = csum_update16(new, idport, rev.vport_be);
            if new == 0 {
                new = 0xffff;
            }
            icmp_csum = csum_update16(icmp_csum, old, new);
            ctx.store(at, &new, 0).map_err(err)?;
        }
    }
    ctx.store(inner_at + IP_DADDR, &rev.vip_be, 0).map_err(err)?;
    ctx.store(inner_at + IP_SADDR, &client, 0).map_err(err)?;
    ctx.store(inner_l4 + 2, &rev.vport_be, 0).map_err(err)?;
    ctx.store(inner_csum_at, &inner_csum, 0).map_err(err)?;
    ctx.store(icmp_csum_at, &icmp_csum, 0).map_err(err)?;

    // Outer header: an error from the backend itself appears to come from the frontend.
    if ip.saddr_be == inner.daddr_be {
        nat::set_addr(ctx, ip, End::Source, ip.saddr_be, rev.vip_be, false)?;
    }
    nat::set_addr(ctx, ip, End::Destination, ip.daddr_be, client, false)?;
    Ok(TC_ACT_OK)
}
