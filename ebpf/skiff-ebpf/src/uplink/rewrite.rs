//! Rewriting a frame's addresses, ports and TTL in XDP, which has no checksum helpers: the IPv4
//! and L4 checksums are updated incrementally (RFC 1624, eqn. 3) from exactly the words that
//! change, and every field is written back in as few stores as possible.
//!
//! The incremental update assumes the checksums on the frame are complete, as they are on a wire.
//! A locally generated frame crossing a veth can carry a partial (offload) checksum instead; see
//! the uplink's module docs for how the lab and tests keep those off the uplink.

use aya_ebpf::programs::XdpContext;
use skiff_common::lb::{CtKey, proto};

use crate::lb::{
    LbError,
    packet::{ETH_LEN, IP_CSUM, IP_SADDR, Ipv4, Packet, l4_csum_off},
};

/// Offset of the TTL byte in the IPv4 header (the protocol byte follows it).
const IP_TTL: usize = 8;

/// Ones'-complement sum of `!old + new` over the 16-bit words that change.
#[derive(Clone, Copy, Default)]
struct Delta(u32);

impl Delta {
    /// One 16-bit word, both values as they sit in the frame (network order).
    #[inline(always)]
    fn word(&mut self, old_be: u16, new_be: u16) {
        self.0 += u32::from(!u16::from_be(old_be)) + u32::from(u16::from_be(new_be));
    }

    /// A 32-bit field (an address), network order.
    #[inline(always)]
    fn addr(&mut self, old_be: u32, new_be: u32) {
        let (o, n) = (old_be.to_ne_bytes(), new_be.to_ne_bytes());
        self.word(u16::from_ne_bytes([o[0], o[1]]), u16::from_ne_bytes([n[0], n[1]]));
        self.word(u16::from_ne_bytes([o[2], o[3]]), u16::from_ne_bytes([n[2], n[3]]));
    }

    /// The checksum `check_be` becomes once the delta's words have changed.
    #[inline(always)]
    fn apply(self, check_be: u16) -> u16 {
        let mut sum = u32::from(!u16::from_be(check_be)) + (self.0 & 0xffff) + (self.0 >> 16);
        // Three folds always suffice for these magnitudes; a data-dependent loop would make the
        // verifier walk every iteration.
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        (!(sum as u16)).to_be()
    }
}

/// Rewrites the frame's flow from `old` to `new` (addresses and ports; the protocol is kept) and,
/// with `forwarding`, decrements the TTL as a router does. The caller has checked TTL > 1.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    ip: &Ipv4,
    old: &CtKey,
    new: &CtKey,
    forwarding: bool,
) -> Result<(), LbError> {
    let err = |_| LbError::Helper;
    let mut l3 = Delta::default();
    l3.addr(old.saddr_be, new.saddr_be);
    l3.addr(old.daddr_be, new.daddr_be);
    // The L4 checksum covers the addresses through its pseudo-header, and the ports.
    let mut l4 = l3;
    l4.word(old.sport_be, new.sport_be);
    l4.word(old.dport_be, new.dport_be);
    if forwarding {
        let ttl = ip.ttl.wrapping_sub(1);
        l3.word(u16::from_ne_bytes([ip.ttl, ip.proto]), u16::from_ne_bytes([ttl, ip.proto]));
        ctx.write(ETH_LEN + IP_TTL, &ttl).map_err(err)?;
    }
    let ip_csum: u16 = ctx.read(ETH_LEN + IP_CSUM).ok_or(LbError::Helper)?;
    ctx.write(ETH_LEN + IP_CSUM, &l3.apply(ip_csum)).map_err(err)?;

    let l4_csum_at = ip.l4() + l4_csum_off(ip.proto);
    let l4_csum: u16 = ctx.read(l4_csum_at).ok_or(LbError::Helper)?;
    // UDP's zero checksum means "none" and stays zero; a computed zero is sent as all ones.
    if !(ip.proto == proto::UDP && l4_csum == 0) {
        let mut csum = l4.apply(l4_csum);
        if ip.proto == proto::UDP && csum == 0 {
            csum = 0xffff;
        }
        ctx.write(l4_csum_at, &csum).map_err(err)?;
    }
    ctx.write(ETH_LEN + IP_SADDR, &[new.saddr_be, new.daddr_be]).map_err(err)?;
    ctx.write(ip.l4(), &[new.sport_be, new.dport_be]).map_err(err)
}
