//! Reading headers through `bpf_skb_load_bytes` / `bpf_xdp_load_bytes` (copies to the stack: no
//! packet-pointer bounds for the verifier to track) and the offsets the rewrites need. The parsing
//! is shared by the TC programs and the uplink's XDP program through [`Packet`].

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::{TcContext, XdpContext},
};
use skiff_common::lb::{CtKey, proto};

/// Byte access to a frame, whatever program type holds it.
pub trait Packet {
    /// Copies `size_of::<T>()` bytes at `offset` out of the frame.
    fn read<T>(&self, offset: usize) -> Option<T>;
    /// Writes `value`'s bytes at `offset` (no checksum maintenance).
    fn write<T>(&self, offset: usize, value: &T) -> Result<(), ()>;
    /// Frame length in bytes.
    fn frame_len(&self) -> usize;
}

impl Packet for TcContext {
    #[inline(always)]
    fn read<T>(&self, offset: usize) -> Option<T> {
        self.load(offset).ok()
    }

    #[inline(always)]
    fn write<T>(&self, offset: usize, value: &T) -> Result<(), ()> {
        self.store(offset, value, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len() as usize
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn read<T>(&self, offset: usize) -> Option<T> {
        let mut value = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes at most size_of::<T>() bytes into `value` and fails (non-zero)
        // without a partial write when the frame is shorter.
        let ret = unsafe {
            bpf_xdp_load_bytes(
                self.as_ptr().cast(),
                offset as u32,
                value.as_mut_ptr().cast::<c_void>(),
                size_of::<T>() as u32,
            )
        };
        // SAFETY: a zero return means all bytes were written.
        (ret == 0).then(|| unsafe { value.assume_init() })
    }

    #[inline(always)]
    fn write<T>(&self, offset: usize, value: &T) -> Result<(), ()> {
        // SAFETY: the helper reads size_of::<T>() bytes from `value`, a live reference.
        let ret = unsafe {
            bpf_xdp_store_bytes(
                self.as_ptr().cast(),
                offset as u32,
                (value as *const T).cast_mut().cast::<c_void>(),
                size_of::<T>() as u32,
            )
        };
        if ret == 0 { Ok(()) } else { Err(()) }
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end().saturating_sub(self.data())
    }
}

pub const ETH_LEN: usize = 14;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// IPv4 header offsets (from the start of the IP header).
pub const IP_CSUM: usize = 10;
pub const IP_SADDR: usize = 12;
pub const IP_DADDR: usize = 16;
const IP_MF: u16 = 0x2000;
const IP_OFFSET_MASK: u16 = 0x1fff;

/// The parts of an IPv4 header the load balancer reads.
#[derive(Clone, Copy)]
pub struct Ipv4 {
    /// Header length in bytes (options included).
    pub ihl: usize,
    pub ttl: u8,
    pub tot_len: u16,
    pub id_be: u16,
    /// Flags and fragment offset, host order.
    pub frag: u16,
    pub proto: u8,
    pub saddr_be: u32,
    pub daddr_be: u32,
}

impl Ipv4 {
    /// Offset of the L4 header in the frame.
    #[inline(always)]
    pub fn l4(&self) -> usize {
        ETH_LEN + self.ihl
    }

    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.frag & (IP_MF | IP_OFFSET_MASK) != 0
    }

    /// A fragment other than the first: no L4 header in it.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        self.frag & IP_OFFSET_MASK != 0
    }
}

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    u16::from_ne_bytes([b0, b1])
}

#[inline(always)]
fn be32(b: &[u8; 20], at: usize) -> u32 {
    // Fixed, in-bounds offsets only (callers pass constants).
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the IPv4 header at `at` (the frame's, or an ICMP error's inner one). `None` when the
/// bytes are not a plausible IPv4 header: such a packet is not ours to judge.
#[inline(always)]
pub fn ipv4_at<P: Packet>(ctx: &P, at: usize) -> Option<Ipv4> {
    let b: [u8; 20] = ctx.read(at)?;
    let ihl = ((b[0] & 0x0f) as usize) * 4;
    if b[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    Some(Ipv4 {
        ihl,
        ttl: b[8],
        tot_len: u16::from_be_bytes([b[2], b[3]]),
        id_be: be16(b[4], b[5]),
        frag: u16::from_be_bytes([b[6], b[7]]),
        proto: b[9],
        saddr_be: be32(&b, 12),
        daddr_be: be32(&b, 16),
    })
}

/// The frame's IPv4 header, if the frame is IPv4.
#[inline(always)]
pub fn ipv4<P: Packet>(ctx: &P) -> Option<Ipv4> {
    let ethertype: u16 = ctx.read(12)?;
    if ethertype != ETH_P_IP_BE {
        return None;
    }
    ipv4_at(ctx, ETH_LEN)
}

/// Ports (network order) of the TCP/UDP header at `at`.
#[inline(always)]
pub fn ports_at<P: Packet>(ctx: &P, at: usize) -> Option<(u16, u16)> {
    let b: [u8; 4] = ctx.read(at)?;
    Some((be16(b[0], b[1]), be16(b[2], b[3])))
}

/// The flow tuple of a TCP/UDP packet whose fixed L4 header is all there; `None` otherwise.
#[inline(always)]
pub fn flow<P: Packet>(ctx: &P, ip: &Ipv4) -> Option<CtKey> {
    if ctx.frame_len() < ip.l4() + l4_min_len(ip.proto) {
        return None;
    }
    let (sport_be, dport_be) = ports_at(ctx, ip.l4())?;
    Some(CtKey {
        saddr_be: ip.saddr_be,
        daddr_be: ip.daddr_be,
        sport_be,
        dport_be,
        proto: ip.proto,
        _pad: [0; 3],
    })
}

/// Minimum L4 header length: the load balancer needs the whole fixed header.
#[inline(always)]
pub fn l4_min_len(proto_nr: u8) -> usize {
    if proto_nr == proto::TCP { 20 } else { 8 }
}

/// Offset of the L4 checksum field from the L4 header start.
#[inline(always)]
pub fn l4_csum_off(proto_nr: u8) -> usize {
    if proto_nr == proto::TCP { 16 } else { 6 }
}

/// Offset of the flags byte in the TCP header.
pub const TCP_FLAGS: usize = 13;

/// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The fixed TCP header fields a reset needs: seq, ack (host order), flags, header length.
#[derive(Clone, Copy)]
pub struct TcpInfo {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub doff: usize,
}

#[inline(always)]
pub fn tcp_at<P: Packet>(ctx: &P, at: usize) -> Option<TcpInfo> {
    let b: [u8; 20] = ctx.read(at)?;
    Some(TcpInfo {
        seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ack: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        flags: b[TCP_FLAGS],
        doff: ((b[12] >> 4) as usize) * 4,
    })
}

/// Ones'-complement sum of 16-bit big-endian words, folded and inverted: the Internet checksum.
#[inline(always)]
pub fn checksum<const N: usize>(bytes: &[u8; N], initial: u32) -> u16 {
    let mut sum = initial;
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    if N % 2 == 1 {
        sum += u32::from(bytes[N - 1]) << 8;
    }
    // Two folds always suffice for a 32-bit sum; a data-dependent loop would make the verifier
    // walk every iteration.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// RFC 1624 incremental update of a checksum (all values as stored in the packet, i.e. the u16s
/// read with native order from network bytes).
#[inline(always)]
pub fn csum_update16(check_be: u16, old_be: u16, new_be: u16) -> u16 {
    let c = u16::from_be(check_be);
    let mut sum = u32::from(!c) + u32::from(!u16::from_be(old_be)) + u32::from(u16::from_be(new_be));
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be()
}

#[inline(always)]
pub fn csum_update32(check_be: u16, old_be: u32, new_be: u32) -> u16 {
    let o = old_be.to_ne_bytes();
    let n = new_be.to_ne_bytes();
    let c = csum_update16(check_be, u16::from_ne_bytes([o[0], o[1]]), u16::from_ne_bytes([n[0], n[1]]));
    csum_update16(c, u16::from_ne_bytes([o[2], o[3]]), u16::from_ne_bytes([n[2], n[3]]))
}
