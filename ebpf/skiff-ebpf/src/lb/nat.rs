//! Address and port rewrites with checksum fix-ups through the kernel's csum helpers, which also
//! keep `skb->csum` right for CHECKSUM_COMPLETE and leave CHECKSUM_PARTIAL packets consistent.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use skiff_common::lb::proto;

use super::{
    LbError,
    packet::{ETH_LEN, IP_CSUM, IP_DADDR, IP_SADDR, Ipv4, l4_csum_off},
};

/// Which end of the flow a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

impl End {
    fn ip_off(self) -> usize {
        match self {
            End::Source => ETH_LEN + IP_SADDR,
            End::Destination => ETH_LEN + IP_DADDR,
        }
    }

    fn port_off(self) -> usize {
        match self {
            End::Source => 0,
            End::Destination => 2,
        }
    }
}

/// L4 checksum flags: UDP's zero checksum means "none" and must stay zero.
#[inline(always)]
fn l4_flags(proto_nr: u8) -> u64 {
    if proto_nr == proto::UDP { u64::from(BPF_F_MARK_MANGLED_0) } else { 0 }
}

/// Rewrites one end's address (IP header and, when `l4` is set, the L4 pseudo-header checksum).
#[inline(always)]
pub fn set_addr(
    ctx: &TcContext,
    ip: &Ipv4,
    end: End,
    old_be: u32,
    new_be: u32,
    l4: bool,
) -> Result<(), LbError> {
    if old_be == new_be {
        return Ok(());
    }
    if l4 {
        let off = ip.l4() + l4_csum_off(ip.proto);
        let flags = u64::from(BPF_F_PSEUDO_HDR) | l4_flags(ip.proto) | 4;
        ctx.l4_csum_replace(off, u64::from(old_be), u64::from(new_be), flags).map_err(|_| LbError::Helper)?;
    }
    ctx.l3_csum_replace(ETH_LEN + IP_CSUM, u64::from(old_be), u64::from(new_be), 4)
        .map_err(|_| LbError::Helper)?;
    ctx.store(end.ip_off(), &new_be, 0).map_err(|_| LbError::Helper)
}

/// Rewrites one end's L4 port.
#[inline(always)]
pub fn set_port(ctx: &TcContext, ip: &Ipv4, end: End, old_be: u16, new_be: u16) -> Result<(), LbError> {
    if old_be == new_be {
        return Ok(());
    }
    let off = ip.l4() + l4_csum_off(ip.proto);
    let flags = l4_flags(ip.proto) | 2;
    ctx.l4_csum_replace(off, u64::from(old_be), u64::from(new_be), flags).map_err(|_| LbError::Helper)?;
    ctx.store(ip.l4() + end.port_off(), &new_be, 0).map_err(|_| LbError::Helper)
}
