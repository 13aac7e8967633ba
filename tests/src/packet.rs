//! Building Ethernet/IPv4/TCP/UDP/ICMP frames with correct lengths and checksums, for packet
//! fixtures: a test builds the frame it sends and the frame it expects back, and compares bytes.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// IPv4 "don't fragment" and "more fragments" bits.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        payload: Vec<u8>,
    },
    /// `checksum: false` sends UDP's "no checksum" (zero).
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        checksum: bool,
    },
    Icmp {
        kind: u8,
        code: u8,
        rest: [u8; 4],
        payload: Vec<u8>,
    },
    /// Any other protocol, bytes as given.
    Raw {
        proto: u8,
        bytes: Vec<u8>,
    },
}

impl L4 {
    fn proto(&self) -> u8 {
        match self {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Icmp { .. } => PROTO_ICMP,
            L4::Raw { proto, .. } => *proto,
        }
    }
}

/// An Ethernet + IPv4 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units), as in the header.
    pub frag: u16,
    pub ttl: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP options (padded to 4 bytes by the builder).
    pub options: Vec<u8>,
    pub l4: L4,
}

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

impl Frame {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Frame {
            src_mac: CLIENT_MAC,
            dst_mac: HOST_MAC,
            tos: 0,
            id: 0x1234,
            frag: IP_DF,
            ttl: 64,
            src,
            dst,
            options: Vec::new(),
            l4,
        }
    }

    pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Self {
        let l4 = L4::Tcp {
            sport: src.port(),
            dport: dst.port(),
            seq: 1000,
            ack: 0,
            flags,
            window: 64240,
            payload: Vec::new(),
        };
        Self::new(*src.ip(), *dst.ip(), l4)
    }

    pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Self {
        let l4 = L4::Udp { sport: src.port(), dport: dst.port(), payload: payload.to_vec(), checksum: true };
        Self::new(*src.ip(), *dst.ip(), l4)
    }

    pub fn raw(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, bytes: &[u8]) -> Self {
        Self::new(src, dst, L4::Raw { proto, bytes: bytes.to_vec() })
    }

    /// An ICMP error from `from` to `to` quoting the IP header and first 8 L4 bytes of `quoted`.
    pub fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, kind: u8, code: u8, quoted: &Frame) -> Self {
        let q = quoted.bytes();
        let ihl = 20 + quoted.padded_options().len();
        let payload = q[14..14 + ihl + 8].to_vec();
        let mut f = Self::new(from, to, L4::Icmp { kind, code, rest: [0; 4], payload });
        f.tos = 0xc0;
        f
    }

    /// Same frame with source and destination swapped (addresses, ports, MACs).
    pub fn reversed(&self) -> Self {
        let mut f = self.clone();
        std::mem::swap(&mut f.src_mac, &mut f.dst_mac);
        std::mem::swap(&mut f.src, &mut f.dst);
        match &mut f.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => std::mem::swap(sport, dport),
            _ => {}
        }
        f
    }

    pub fn with_dst(mut self, dst: SocketAddrV4) -> Self {
        self.dst = *dst.ip();
        if let L4::Tcp { dport, .. } | L4::Udp { dport, .. } = &mut self.l4 {
            *dport = dst.port();
        }
        self
    }

    pub fn with_src(mut self, src: SocketAddrV4) -> Self {
        self.src = *src.ip();
        if let L4::Tcp { sport, .. } | L4::Udp { sport, .. } = &mut self.l4 {
            *sport = src.port();
        }
        self
    }

    fn padded_options(&self) -> Vec<u8> {
        let mut o = self.options.clone();
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        o
    }

    /// The L4 header and payload, checksum filled in.
    fn l4_bytes(&self) -> Vec<u8> {
        let pseudo = |proto: u8, len: usize| {
            let mut p = Vec::with_capacity(12);
            p.extend_from_slice(&self.src.octets());
            p.extend_from_slice(&self.dst.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
            p
        };
        match &self.l4 {
            L4::Tcp { sport, dport, seq, ack, flags, window, payload } => {
                let mut b = Vec::new();
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ack.to_be_bytes());
                b.extend_from_slice(&[5 << 4, *flags]);
                b.extend_from_slice(&window.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend_from_slice(payload);
                let c = checksum(&[pseudo(PROTO_TCP, b.len()), b.clone()].concat());
                b[16..18].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Udp { sport, dport, payload, checksum: with_sum } => {
                let mut b = Vec::new();
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                if *with_sum {
                    let mut c = checksum(&[pseudo(PROTO_UDP, b.len()), b.clone()].concat());
                    if c == 0 {
                        c = 0xffff;
                    }
                    b[6..8].copy_from_slice(&c.to_be_bytes());
                }
                b
            }
            L4::Icmp { kind, code, rest, payload } => {
                let mut b = vec![*kind, *code, 0, 0];
                b.extend_from_slice(rest);
                b.extend_from_slice(payload);
                let c = checksum(&b);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        }
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes_with_l4(&self.l4_bytes(), self.frag)
    }

    fn bytes_with_l4(&self, l4: &[u8], frag: u16) -> Vec<u8> {
        let options = self.padded_options();
        let ihl = 20 + options.len();
        let mut b = Vec::with_capacity(14 + ihl + l4.len());
        b.extend_from_slice(&self.dst_mac);
        b.extend_from_slice(&self.src_mac);
        b.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x40 | (ihl / 4) as u8, self.tos];
        ip.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&self.id.to_be_bytes());
        ip.extend_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&[self.ttl, self.l4.proto(), 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&options);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        b.extend_from_slice(&ip);
        b.extend_from_slice(l4);
        b
    }

    /// Splits the frame into IP fragments whose payloads hold at most `chunk` bytes (a multiple
    /// of 8), as a router would.
    pub fn fragments(&self, chunk: usize) -> Vec<Vec<u8>> {
        assert!(chunk.is_multiple_of(8) && chunk > 0, "fragment payloads are multiples of 8 bytes");
        let l4 = self.l4_bytes();
        let pieces: Vec<&[u8]> = l4.chunks(chunk).collect();
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let more = if i + 1 < pieces.len() { IP_MF } else { 0 };
                self.bytes_with_l4(piece, more | ((i * chunk / 8) as u16))
            })
            .collect()
    }
}

/// The Internet checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 =
        bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let f =
            Frame::tcp("10.0.0.1:1234".parse().expect("addr"), "10.0.0.2:80".parse().expect("addr"), TCP_SYN);
        let b = f.bytes();
        assert_eq!(checksum(&b[14..34]), 0, "IP header checksum");
        let mut pseudo = b[26..34].to_vec();
        pseudo.extend_from_slice(&[0, PROTO_TCP, 0, 20]);
        pseudo.extend_from_slice(&b[34..]);
        assert_eq!(checksum(&pseudo), 0, "TCP checksum");
    }

    #[test]
    fn fragments_cover_the_datagram() {
        let f = Frame::udp(
            "10.0.0.1:1234".parse().expect("addr"),
            "10.0.0.2:53".parse().expect("addr"),
            &[7; 100],
        );
        let frags = f.fragments(48);
        assert_eq!(frags.len(), 3);
        let total: usize = frags.iter().map(|b| b.len() - 34).sum();
        assert_eq!(total, 108);
        assert_eq!(u16::from_be_bytes([frags[1][20], frags[1][21]]), IP_MF | 6);
    }
}
