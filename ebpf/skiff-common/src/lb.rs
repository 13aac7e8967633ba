//! Service load-balancing map layouts: frontends, backends, the Maglev table, conntrack and
//! session affinity. Addresses and ports are kept in network byte order (`_be` fields), exactly as
//! they sit in the packet, so the datapath never swaps bytes.

/// IP protocol numbers the datapath cares about.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
}

/// A frontend: `VIP:port/proto` (a ClusterIP and one of its ports). The key with port 0 and
/// proto 0 marks the address itself as a VIP, so traffic to a port the Service does not serve is
/// rejected rather than routed nowhere (see [`ServiceKey::vip_marker`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);

impl ServiceKey {
    pub const fn new(addr_be: u32, port_be: u16, proto: u8) -> Self {
        Self { addr_be, port_be, proto, _pad: 0 }
    }

    /// The marker entry saying "this address is a ClusterIP".
    pub const fn vip_marker(addr_be: u32) -> Self {
        Self::new(addr_be, 0, 0)
    }
}

/// Selection: Maglev hash of the 5-tuple (default) or uniform random.
pub const SVC_F_RANDOM: u32 = 1 << 0;
/// `sessionAffinity: ClientIP`.
pub const SVC_F_AFFINITY: u32 = 1 << 1;
/// `internalTrafficPolicy: Local` (on a ClusterIP frontend) or `externalTrafficPolicy: Local` (on
/// an external one): the table holds only this node's endpoints, and an empty table is counted as
/// [`crate::DropReason::NoLocalEndpoints`].
pub const SVC_F_LOCAL: u32 = 1 << 2;
/// Reachable from outside the cluster through the node's uplink: a NodePort on one of the node's
/// addresses, an `externalIPs` address or a `status.loadBalancer.ingress` address. The uplink's
/// XDP program serves only these; ClusterIPs stay cluster-internal.
pub const SVC_F_EXTERNAL: u32 = 1 << 3;
/// `loadBalancerSourceRanges` (on a load-balancer address frontend): only clients inside one of
/// the frontend's entries in `SKIFF_SRC_RANGES` get through the uplink.
pub const SVC_F_SOURCE_RANGES: u32 = 1 << 4;

/// A client range of one frontend, the data of an LPM trie key: the frontend's row (all 32 bits
/// always match), then the client address (the range's prefix length matches).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceRange {
    pub svc_id_be: u32,
    pub addr_be: u32,
}
const _: () = assert!(core::mem::size_of::<SourceRange>() == 8);

impl SourceRange {
    /// The LPM prefix length of a range of `len` bits (the row's 32 bits come first).
    pub const fn prefix_len(len: u8) -> u32 {
        32 + len as u32
    }
}

/// A socket the socket-level load balancer sent to a backend: its cookie and the backend, so
/// `getpeername` and a datagram's source can show the frontend instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub cookie: u64,
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockKey>() == 16);

/// The frontend a socket asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockFrontend {
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockFrontend>() == 8);

/// Capacity of the socket reverse-translation map.
pub const DEFAULT_MAX_SOCKETS: u32 = 65536;

/// Capacity of the source-range trie.
pub const DEFAULT_MAX_SOURCE_RANGES: u32 = 16384;

/// What the datapath needs to balance one frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Row of this frontend in the Maglev table (`SKIFF_MAGLEV[id * M .. (id + 1) * M]`).
    pub id: u32,
    /// Backends in the row; 0 means "reject": no usable endpoint.
    pub backend_count: u32,
    /// `SVC_F_*` bits.
    pub flags: u32,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`.
    pub affinity_timeout_s: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 16);

/// The endpoint is terminating (selected only when no ready endpoint exists).
pub const BACKEND_F_TERMINATING: u8 = 1 << 0;
/// The endpoint runs on this node: external traffic to it is DNATed and handed to the kernel,
/// never SNATed or sent back out of the uplink.
pub const BACKEND_F_LOCAL: u8 = 1 << 1;

/// One endpoint address and port; keyed by a backend id the agent allocates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Backend {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<Backend>() == 8);

/// A flow as seen in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);

impl CtKey {
    /// The same flow seen from the other end.
    #[inline(always)]
    pub const fn reversed(&self) -> CtKey {
        CtKey {
            saddr_be: self.daddr_be,
            daddr_be: self.saddr_be,
            sport_be: self.dport_be,
            dport_be: self.sport_be,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// TCP flags seen on a flow, kept in [`CtForward::flags`].
pub const CT_F_SYN: u32 = 1 << 0;
pub const CT_F_FIN: u32 = 1 << 1;
pub const CT_F_RST: u32 = 1 << 2;
/// The client was its own backend; its source was rewritten to the hairpin address.
pub const CT_F_HAIRPIN: u32 = 1 << 3;
/// The client has acknowledged (the handshake completed): the flow is established.
pub const CT_F_ACK: u32 = 1 << 4;
/// External flow to a backend on another node: its source was rewritten to the node's address
/// and [`CtForward::nat_port_be`].
pub const CT_F_SNAT: u32 = 1 << 5;

/// Conntrack entry for the client → frontend direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtForward {
    pub backend_id: u32,
    pub svc_id: u32,
    pub last_seen_ns: u64,
    pub flags: u32,
    /// The source port an SNATed flow ([`CT_F_SNAT`]) leaves with; 0 when not SNATed.
    pub nat_port_be: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<CtForward>() == 24);

/// Reverse-NAT entry, keyed by the reply's tuple (backend → client, or → hairpin address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtReverse {
    /// The frontend the client talked to; replies get it back as their source.
    pub vip_be: u32,
    pub vport_be: u16,
    /// For SNATed flows, the client's real port (replies came to the NAT port); 0 otherwise.
    pub cport_be: u16,
    /// For hairpin and SNATed flows, the client's real address (replies went to the hairpin or
    /// node address); 0 otherwise.
    pub client_be: u32,
    pub backend_id: u32,
    pub last_seen_ns: u64,
}
const _: () = assert!(core::mem::size_of::<CtReverse>() == 24);

/// Session affinity: which backend a client last used for a frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub svc_id: u32,
    pub client_be: u32,
}
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    pub backend_id: u32,
    pub _pad: u32,
    pub last_used_ns: u64,
}
const _: () = assert!(core::mem::size_of::<AffinityValue>() == 16);

/// A datagram split into fragments: only the first carries ports, so the first fragment's
/// translation is remembered for the rest, keyed by the addresses and IP id as they arrive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub id_be: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<FragKey>() == 12);

/// The addresses the remaining fragments get.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    pub saddr_be: u32,
    pub daddr_be: u32,
}
const _: () = assert!(core::mem::size_of::<FragValue>() == 8);

/// Datapath settings patched in at load time (one `.rodata` global; the verifier sees constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbConfig {
    /// Maglev table size per frontend (prime).
    pub maglev_m: u32,
    /// Source address given to hairpin flows (a pod reaching itself through its Service).
    pub hairpin_addr_be: u32,
    /// Idle lifetimes, seconds.
    pub ct_tcp_syn_s: u32,
    pub ct_tcp_established_s: u32,
    pub ct_tcp_closing_s: u32,
    pub ct_udp_s: u32,
    /// The node's address on its uplink: the source external flows to other nodes' backends are
    /// SNATed to. 0 = no uplink program (such flows are dropped, counted as `NoNodeAddress`).
    pub node_addr_be: u32,
    /// Source ports for SNAT when the client's own port is taken (host order, inclusive).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// The node's network namespace (its cookie): the socket-level load balancer serves only
    /// sockets of this namespace, the node's own processes. 0: no socket-level balancing.
    pub netns_cookie: u64,
    /// Non-zero: the trace hooks are in. Zero: the verifier sees a constant and removes them, the
    /// same machine code as a build without tracing (what the trace-cost benchmark compares to).
    pub tracing: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<LbConfig>() == 48);

/// Default Maglev table size: prime, ≥ 100 × a typical backend count; 10k frontends take about
/// 78 MiB (the kernel stores array values at 8-byte strides).
pub const DEFAULT_MAGLEV_M: u32 = 1021;
/// 169.254.42.1, the hairpin source (link-local, never on the wire beyond the node).
pub const DEFAULT_HAIRPIN_ADDR_BE: u32 = u32::from_ne_bytes([169, 254, 42, 1]);

impl LbConfig {
    pub const DEFAULT: LbConfig = LbConfig {
        maglev_m: DEFAULT_MAGLEV_M,
        hairpin_addr_be: DEFAULT_HAIRPIN_ADDR_BE,
        ct_tcp_syn_s: 60,
        ct_tcp_established_s: 21600,
        ct_tcp_closing_s: 10,
        ct_udp_s: 60,
        node_addr_be: 0,
        snat_port_min: 32768,
        snat_port_max: 65535,
        netns_cookie: 0,
        tracing: 1,
        _pad: 0,
    };
}

impl Default for LbConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Compile-time default capacities; the agent sets the real ones at load.
pub const DEFAULT_MAX_SERVICES: u32 = 4096;
pub const DEFAULT_MAX_BACKENDS: u32 = 65536;
pub const DEFAULT_MAX_CT: u32 = 262_144;
pub const DEFAULT_MAX_AFFINITY: u32 = 65536;
pub const DEFAULT_MAX_FRAGS: u32 = 8192;

/// The flow hash used for Maglev: the same on every node and in user space, so a flow maps to the
/// same backend everywhere and tests can predict the choice. Inputs are network-order as in the
/// packet; the mixing is murmur3's finaliser over a word-wise combination.
#[inline(always)]
pub fn flow_hash(saddr_be: u32, daddr_be: u32, sport_be: u16, dport_be: u16, proto: u8) -> u32 {
    let ports = ((sport_be as u32) << 16) | dport_be as u32;
    let mut h = 0x9747_b28c_u32 ^ proto as u32;
    for word in [saddr_be, daddr_be, ports] {
        let mut k = word.wrapping_mul(0xcc9e_2d51);
        k = k.rotate_left(15).wrapping_mul(0x1b87_3593);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    h ^= 12;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all repr(C), integer fields only, explicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtForward {}
    unsafe impl aya::Pod for super::CtReverse {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::LbConfig {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragValue {}
    unsafe impl aya::Pod for super::SourceRange {}
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::SockFrontend {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_depends_on_every_field_and_spreads() {
        let base = flow_hash(1, 2, 3, 4, 6);
        assert_ne!(base, flow_hash(9, 2, 3, 4, 6));
        assert_ne!(base, flow_hash(1, 9, 3, 4, 6));
        assert_ne!(base, flow_hash(1, 2, 9, 4, 6));
        assert_ne!(base, flow_hash(1, 2, 3, 9, 6));
        assert_ne!(base, flow_hash(1, 2, 3, 4, 17));
        // Source ports of one client over 7 buckets: no bucket far from even.
        let mut buckets = [0u32; 7];
        for port in 0..7000u16 {
            buckets[(flow_hash(0x0a00_0001, 0x0a60_0001, port.to_be(), 80u16.to_be(), 6) % 7) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (850..1150).contains(&b)), "{buckets:?}");
    }
}
