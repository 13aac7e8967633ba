//! Packet fixtures for the uplink XDP program (`skiff_uplink`), run through BPF_PROG_TEST_RUN
//! against the real loaded program and its maps, as if each frame had arrived on a node's uplink.
//!
//! The runs happen inside a node namespace whose routes and permanent neighbour entries answer the
//! program's FIB lookups, so the frames it sends on (`XDP_TX`) are checked byte for byte, MAC
//! addresses, TTL and checksums included: the expected frames are built from scratch, the program
//! updates checksums incrementally, and the two must agree.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::{
    Svc, be,
    fixture::{FixtureEnv, nothing, unchanged},
};
use skiff_agent::datapath::{Datapath, DatapathConfig, LbCapacity, LogLevel};
use skiff_common::{
    DropReason,
    lb::{LbConfig, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_SOURCE_RANGES, flow_hash},
};
use skiff_tests::{
    NetNs, PinDir,
    packet::{Frame, IP_MF, L4, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN},
};

const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;
const M: u32 = 251;

const UPLINK: &str = "up0";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
const NODE_MAC: [u8; 6] = [0x02, 0x5c, 0, 0, 0, 0x01];
/// Another node, owner of 10.244.2.0/24.
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
const PEER_MAC: [u8; 6] = [0x02, 0x5c, 0, 0, 0, 0x02];
/// A node whose neighbour entry is not resolved (owner of 10.244.3.0/24).
const UNRESOLVED_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 3);
/// The router toward the outside world.
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 254);
const ROUTER_MAC: [u8; 6] = [0x02, 0x5c, 0, 0, 0, 0xfe];

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 40000);
const OTHER_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 6), 40000);

const REMOTE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 12), 8080);
const REMOTE_DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 12), 5353);
const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 11), 8080);
const UNREACHABLE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 3, 13), 8080);
const SPREAD: [SocketAddrV4; 3] = [
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 21), 8080),
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 22), 8080),
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 23), 8080),
];

const NP_REMOTE: SocketAddrV4 = SocketAddrV4::new(NODE_IP, 30080);
const NP_LOCAL: SocketAddrV4 = SocketAddrV4::new(NODE_IP, 30081);
const NP_UDP: SocketAddrV4 = SocketAddrV4::new(NODE_IP, 30053);
const NP_LOCAL_POLICY_EMPTY: SocketAddrV4 = SocketAddrV4::new(NODE_IP, 30082);
const NP_EMPTY: SocketAddrV4 = SocketAddrV4::new(NODE_IP, 30083);
const NP_UNREACHABLE: SocketAddrV4 = SocketAddrV4::new(NODE_IP, 30084);
const NP_SPREAD: SocketAddrV4 = SocketAddrV4::new(NODE_IP, 30085);
/// The same NodePort as [`NP_SPREAD`] on another node's address, with the same endpoints.
const NP_SPREAD_ELSEWHERE: SocketAddrV4 = SocketAddrV4::new(PEER_IP, 30085);
const EXTERNAL_IP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 40), 80);
const CLUSTER_IP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
/// A load-balancer address with loadBalancerSourceRanges [198.51.100.0/24].
const LB_RANGED: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 50), 80);
const ALLOWED_CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 9), 41000);

const EXT: u32 = SVC_F_EXTERNAL;

fn services() -> Vec<(Svc, Vec<SocketAddrV4>)> {
    let svc = |frontend, proto, row, flags, backends: &[SocketAddrV4]| Svc {
        frontend,
        proto,
        row,
        flags,
        backends: backends.iter().enumerate().map(|(i, a)| (row * 10 + i as u32 + 1, *a)).collect(),
    };
    vec![
        (svc(NP_REMOTE, PROTO_TCP, 1, EXT, &[REMOTE]), vec![]),
        (svc(NP_LOCAL, PROTO_TCP, 2, EXT, &[LOCAL]), vec![LOCAL]),
        (svc(NP_UDP, PROTO_UDP, 3, EXT, &[REMOTE_DNS]), vec![]),
        (svc(NP_LOCAL_POLICY_EMPTY, PROTO_TCP, 4, EXT | SVC_F_LOCAL, &[]), vec![]),
        (svc(NP_EMPTY, PROTO_TCP, 5, EXT, &[]), vec![]),
        (svc(NP_UNREACHABLE, PROTO_TCP, 6, EXT, &[UNREACHABLE]), vec![]),
        (svc(NP_SPREAD, PROTO_TCP, 7, EXT, &SPREAD), vec![]),
        (svc(NP_SPREAD_ELSEWHERE, PROTO_TCP, 8, EXT, &SPREAD), vec![]),
        (svc(EXTERNAL_IP, PROTO_TCP, 9, EXT, &[LOCAL]), vec![LOCAL]),
        (svc(LB_RANGED, PROTO_TCP, 11, EXT | SVC_F_SOURCE_RANGES, &[LOCAL]), vec![LOCAL]),
    ]
}

/// A loaded datapath with the fixture frontends, inside the node namespace.
struct Env {
    dp: Datapath,
    _pins: PinDir,
    ifindex: u32,
}

impl Env {
    /// Must run on a thread inside the node namespace.
    fn new(label: &str) -> Env {
        let pins = PinDir::new(label).expect("pin dir");
        let lb = LbCapacity {
            config: LbConfig { maglev_m: M, node_addr_be: be(NODE_IP), ..LbConfig::DEFAULT },
            max_services: 64,
            max_backends: 256,
            max_ct: 1024,
            max_affinity: 256,
            max_frags: 64,
        };
        let config = DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, lb };
        let mut dp = Datapath::load(&config).expect("load datapath");
        for (svc, local) in services() {
            svc.program_external(&mut dp, &local);
        }
        Svc { frontend: CLUSTER_IP, proto: PROTO_TCP, row: 10, flags: 0, backends: vec![(101, REMOTE)] }
            .program(&mut dp);
        dp.lb().allow_source(11, be(Ipv4Addr::new(198, 51, 100, 0)), 24).expect("source range");
        let ifindex = nix::net::if_::if_nametoindex(UPLINK).expect("uplink index");
        Env { dp, _pins: pins, ifindex }
    }

    /// Runs `packet` and insists on `verdict`, returning the output frame.
    fn send(&self, packet: &[u8], verdict: i32) -> Vec<u8> {
        let (got, out) = self.run(packet);
        assert_eq!(got, verdict, "setup packet verdict");
        out
    }
}

/// The node namespace: an uplink with the node address, another node and a router as permanent
/// neighbours, routes to the other nodes' pod CIDRs, and forwarding on (FIB lookups from XDP
/// need it).
fn node_namespace(label: &str) -> NetNs {
    let ns = NetNs::new(label).expect("node namespace");
    for key in ["net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv4/conf/default/forwarding"] {
        ns.sysctl(key, "1").expect("forwarding");
    }
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    ns.ip(&["link", "add", UPLINK, "address", &mac(NODE_MAC), "type", "veth", "peer", "name", "up0-peer"])
        .expect("uplink");
    ns.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", UPLINK]).expect("address");
    for iface in [UPLINK, "up0-peer"] {
        ns.ip(&["link", "set", iface, "up"]).expect("up");
    }
    for (ip, m) in [(PEER_IP, PEER_MAC), (ROUTER_IP, ROUTER_MAC)] {
        ns.ip(&["neigh", "replace", &ip.to_string(), "lladdr", &mac(m), "dev", UPLINK, "nud", "permanent"])
            .expect("neighbour");
    }
    ns.ip(&["route", "add", "10.244.2.0/24", "via", &PEER_IP.to_string()]).expect("route");
    ns.ip(&["route", "add", "10.244.3.0/24", "via", &UNRESOLVED_IP.to_string()]).expect("route");
    ns.ip(&["route", "add", "default", "via", &ROUTER_IP.to_string()]).expect("route");
    ns
}

impl FixtureEnv for Env {
    fn run(&self, packet: &[u8]) -> (i32, Vec<u8>) {
        let mut out = vec![0u8; packet.len() + 128];
        let outcome = self.dp.test_run_uplink(packet, &mut out, self.ifindex, 1).expect("test run");
        out.truncate(outcome.len);
        (outcome.verdict, out)
    }

    fn drops(&mut self, reason: DropReason) -> u64 {
        self.dp.lb().drops(reason).expect("drop counters")
    }
}

type Fixture = common::fixture::Fixture<Env>;

/// Every fixture runs in its own node namespace (routes and neighbours for the FIB lookups).
fn check(label: &str, f: &Fixture) {
    node_namespace(label).run(|| f.check_in(&mut Env::new(label))).expect("node namespace thread");
}

macro_rules! fixtures {
    ($($name:ident: $fixture:expr;)+) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name), &$fixture);
            }
        )+
    };
}

/// A frame arriving from the router.
fn inbound(mut f: Frame) -> Frame {
    f.src_mac = ROUTER_MAC;
    f.dst_mac = NODE_MAC;
    f
}

/// `f` as this node forwards it toward `next_hop_mac`: TTL one lower.
fn forwarded(mut f: Frame, next_hop_mac: [u8; 6]) -> Frame {
    f.src_mac = NODE_MAC;
    f.dst_mac = next_hop_mac;
    f.ttl -= 1;
    f
}

fn syn(from: SocketAddrV4, to: SocketAddrV4) -> Frame {
    inbound(Frame::tcp(from, to, TCP_SYN))
}

/// The backend's SYN-ACK to `to`, as it arrives from the peer node.
fn syn_ack_from(backend: SocketAddrV4, to: SocketAddrV4) -> Frame {
    let mut f = Frame::tcp(backend, to, TCP_SYN | TCP_ACK);
    f.src_mac = PEER_MAC;
    f.dst_mac = NODE_MAC;
    f.ttl = 63;
    f
}

/// The port the SNATed SYN of a flow left with (read from the forwarded frame).
fn sport_of(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[34], frame[35]])
}

/// The backend Maglev picks for `client` on an external frontend (hashed without the
/// destination address).
fn spread_pick(
    env: &mut Env,
    client: SocketAddrV4,
    row: u32,
    backends: &[(u32, SocketAddrV4)],
) -> SocketAddrV4 {
    let h = flow_hash(be(*client.ip()), 0, client.port().to_be(), NP_SPREAD.port().to_be(), PROTO_TCP);
    let slots = env.dp.lb().maglev_row(row).expect("row");
    let id = slots[(h % M) as usize];
    backends.iter().find(|(b, _)| *b == id).map(|(_, a)| *a).expect("backend in row")
}

fixtures! {
    nodeport_syn_to_a_local_backend_is_dnated_and_handed_to_the_kernel: Fixture {
        description: "SYN to NodePort with a backend on this node → DNAT only (client address kept), XDP_PASS",
        setup: nothing,
        input: |_| syn(CLIENT, NP_LOCAL).bytes(),
        verdict: XDP_PASS,
        output: |_| Some(syn(CLIENT, NP_LOCAL).with_dst(LOCAL).bytes()),
        counts: None,
    };
    nodeport_syn_to_a_remote_backend_is_snated_and_sent_back_out: Fixture {
        description: "SYN to NodePort, backend on another node → DNAT + SNAT to the node address (client port kept), TTL−1, peer's MAC, XDP_TX",
        setup: nothing,
        input: |_| syn(CLIENT, NP_REMOTE).bytes(),
        verdict: XDP_TX,
        output: |_| {
            let f = Frame::tcp(SocketAddrV4::new(NODE_IP, CLIENT.port()), REMOTE, TCP_SYN);
            Some(forwarded(f, PEER_MAC).bytes())
        },
        counts: None,
    };
    the_remote_backends_reply_goes_back_to_the_client_from_the_nodeport: Fixture {
        description: "SYN-ACK from the remote backend to node:port → source NodePort, destination the client, TTL−1, router's MAC, XDP_TX",
        setup: |env| { env.send(&syn(CLIENT, NP_REMOTE).bytes(), XDP_TX); },
        input: |_| syn_ack_from(REMOTE, SocketAddrV4::new(NODE_IP, CLIENT.port())).bytes(),
        verdict: XDP_TX,
        output: |_| {
            let mut f = Frame::tcp(NP_REMOTE, CLIENT, TCP_SYN | TCP_ACK);
            f.ttl = 63;
            Some(forwarded(f, ROUTER_MAC).bytes())
        },
        counts: None,
    };
    a_second_client_on_the_same_port_gets_another_snat_port_and_its_own_replies: Fixture {
        description: "two clients with source port 40000 to one remote backend: the second is SNATed to another port of the range, and replies to it reach the second client",
        setup: |env| { env.send(&syn(CLIENT, NP_REMOTE).bytes(), XDP_TX); },
        input: |env| {
            let out = env.send(&syn(OTHER_CLIENT, NP_REMOTE).bytes(), XDP_TX);
            let port = sport_of(&out);
            assert_ne!(port, OTHER_CLIENT.port(), "the client's own port is taken");
            assert!(port >= LbConfig::DEFAULT.snat_port_min, "port {port} outside the SNAT range");
            syn_ack_from(REMOTE, SocketAddrV4::new(NODE_IP, port)).bytes()
        },
        verdict: XDP_TX,
        output: |_| {
            let mut f = Frame::tcp(NP_REMOTE, OTHER_CLIENT, TCP_SYN | TCP_ACK);
            f.ttl = 63;
            Some(forwarded(f, ROUTER_MAC).bytes())
        },
        counts: None,
    };
    udp_to_a_remote_backend_gets_a_correct_checksum: Fixture {
        description: "UDP datagram to a NodePort, remote backend → DNAT + SNAT with the UDP checksum updated, XDP_TX",
        setup: nothing,
        input: |_| inbound(Frame::udp(CLIENT, NP_UDP, b"\x12\x34 query")).bytes(),
        verdict: XDP_TX,
        output: |_| {
            let f = Frame::udp(SocketAddrV4::new(NODE_IP, CLIENT.port()), REMOTE_DNS, b"\x12\x34 query");
            Some(forwarded(f, PEER_MAC).bytes())
        },
        counts: None,
    };
    udp_without_a_checksum_keeps_none: Fixture {
        description: "UDP with checksum 0 (none) to a NodePort → translated, checksum stays 0",
        setup: nothing,
        input: |_| {
            let mut f = inbound(Frame::udp(CLIENT, NP_UDP, b"q"));
            if let L4::Udp { checksum, .. } = &mut f.l4 { *checksum = false; }
            f.bytes()
        },
        verdict: XDP_TX,
        output: |_| {
            let mut f = Frame::udp(SocketAddrV4::new(NODE_IP, CLIENT.port()), REMOTE_DNS, b"q");
            if let L4::Udp { checksum, .. } = &mut f.l4 { *checksum = false; }
            Some(forwarded(f, PEER_MAC).bytes())
        },
        counts: None,
    };
    an_established_flow_keeps_its_backend_when_the_row_changes: Fixture {
        description: "after the SYN every slot of the row is pointed at another backend; the flow's ACK still goes to its own",
        setup: |env| {
            let out = env.send(&syn(CLIENT, NP_SPREAD).bytes(), XDP_TX);
            let chosen = u32::from_ne_bytes([out[30], out[31], out[32], out[33]]);
            let backends = &services()[6].0.backends;
            let other = backends.iter().find(|(_, a)| be(*a.ip()) != chosen).map(|(id, _)| *id).expect("other");
            env.dp.lb().set_maglev_row(7, &vec![other; M as usize]).expect("row");
        },
        input: |_| inbound(Frame::tcp(CLIENT, NP_SPREAD, TCP_ACK)).bytes(),
        verdict: XDP_TX,
        output: |env| {
            let backends = services()[6].0.backends.clone();
            // The row was rewritten after the SYN: what the hash picks from the original row is
            // what the SYN got. Rebuild the original row to ask it.
            let original = services()[6].0.clone();
            original.program_external(&mut env.dp, &[]);
            let backend = spread_pick(env, CLIENT, 7, &backends);
            let f = Frame::tcp(SocketAddrV4::new(NODE_IP, CLIENT.port()), backend, TCP_ACK);
            Some(forwarded(f, PEER_MAC).bytes())
        },
        counts: None,
    };
    every_node_address_picks_the_same_backend_for_a_flow: Fixture {
        description: "the same client tuple to one NodePort on two node addresses lands on the same backend (the hash leaves the destination out)",
        setup: nothing,
        input: |env| {
            let here = env.send(&syn(CLIENT, NP_SPREAD).bytes(), XDP_TX);
            let there = env.send(&syn(CLIENT, NP_SPREAD_ELSEWHERE).bytes(), XDP_TX);
            assert_eq!(&here[30..34], &there[30..34], "backend address");
            syn(OTHER_CLIENT, NP_SPREAD).bytes()
        },
        verdict: XDP_TX,
        output: |env| {
            let backends = services()[6].0.backends.clone();
            let backend = spread_pick(env, OTHER_CLIENT, 7, &backends);
            let f = Frame::tcp(SocketAddrV4::new(NODE_IP, OTHER_CLIENT.port()), backend, TCP_SYN);
            Some(forwarded(f, PEER_MAC).bytes())
        },
        counts: None,
    };
    external_ip_with_a_local_backend_is_dnated: Fixture {
        description: "SYN to an externalIPs address → DNAT to the local backend, XDP_PASS",
        setup: nothing,
        input: |_| syn(CLIENT, EXTERNAL_IP).bytes(),
        verdict: XDP_PASS,
        output: |_| Some(syn(CLIENT, EXTERNAL_IP).with_dst(LOCAL).bytes()),
        counts: None,
    };
    external_policy_local_without_local_endpoints_drops: Fixture {
        description: "externalTrafficPolicy: Local and no endpoint on this node → dropped, counted",
        setup: nothing,
        input: |_| syn(CLIENT, NP_LOCAL_POLICY_EMPTY).bytes(),
        verdict: XDP_DROP,
        output: unchanged,
        counts: Some(DropReason::NoLocalEndpoints),
    };
    nodeport_without_endpoints_is_left_to_the_kernel: Fixture {
        description: "NodePort without endpoints → untranslated to the kernel (which resets: nothing listens), counted",
        setup: nothing,
        input: |_| syn(CLIENT, NP_EMPTY).bytes(),
        verdict: XDP_PASS,
        output: unchanged,
        counts: Some(DropReason::NoEndpoints),
    };
    unresolved_next_hop_drops: Fixture {
        description: "remote backend behind a node whose neighbour entry is unresolved → dropped (the client retransmits), counted",
        setup: nothing,
        input: |_| syn(CLIENT, NP_UNREACHABLE).bytes(),
        verdict: XDP_DROP,
        output: unchanged,
        counts: Some(DropReason::NoRoute),
    };
    ttl_one_is_not_forwarded: Fixture {
        description: "TTL 1 toward a remote backend → dropped, counted",
        setup: nothing,
        input: |_| {
            let mut f = syn(CLIENT, NP_REMOTE);
            f.ttl = 1;
            f.bytes()
        },
        verdict: XDP_DROP,
        output: unchanged,
        counts: Some(DropReason::TtlExceeded),
    };
    a_clusterip_is_not_served_from_outside: Fixture {
        description: "SYN to a ClusterIP arriving on the uplink passes untouched",
        setup: nothing,
        input: |_| syn(CLIENT, CLUSTER_IP).bytes(),
        verdict: XDP_PASS,
        output: unchanged,
        counts: None,
    };
    a_clusterip_reply_from_another_node_is_reverse_translated: Fixture {
        description: "a local pod's ClusterIP flow went to a backend on another node; the reply arriving on the uplink gets the ClusterIP back as its source, XDP_PASS to the pod",
        setup: |env| {
            let pod = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 50), 45000);
            let mut out = vec![0u8; 256];
            let syn = Frame::tcp(pod, CLUSTER_IP, TCP_SYN).bytes();
            let outcome = env.dp.test_run_lb(&syn, &mut out, 1).expect("test run lb");
            assert_eq!(outcome.verdict, 0, "skiff_lb forwards the pod's SYN");
        },
        input: |_| {
            let mut f = Frame::tcp(REMOTE, SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 50), 45000), TCP_SYN | TCP_ACK);
            f.src_mac = PEER_MAC;
            f.dst_mac = NODE_MAC;
            f.bytes()
        },
        verdict: XDP_PASS,
        output: |_| {
            let mut f = Frame::tcp(CLUSTER_IP, SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 50), 45000), TCP_SYN | TCP_ACK);
            f.src_mac = PEER_MAC;
            f.dst_mac = NODE_MAC;
            Some(f.bytes())
        },
        counts: None,
    };
    fragments_pass_to_the_kernel: Fixture {
        description: "a first fragment (MF set) to a NodePort passes untouched",
        setup: nothing,
        input: |_| {
            let mut f = inbound(Frame::udp(CLIENT, NP_UDP, &[7u8; 64]));
            f.frag = IP_MF;
            f.bytes()
        },
        verdict: XDP_PASS,
        output: unchanged,
        counts: None,
    };
    a_truncated_tcp_header_passes_untouched: Fixture {
        description: "a TCP header cut to 10 bytes, to a NodePort, passes to the kernel untouched (it drops it)",
        setup: nothing,
        input: |_| {
            let mut b = syn(CLIENT, NP_REMOTE).bytes();
            b.truncate(14 + 20 + 10);
            b[16..18].copy_from_slice(&30u16.to_be_bytes());
            b
        },
        verdict: XDP_PASS,
        output: unchanged,
        counts: None,
    };
    non_ipv4_frames_pass_untouched: Fixture {
        description: "an ARP frame passes unchanged",
        setup: nothing,
        input: |_| {
            let mut b = syn(CLIENT, NP_REMOTE).bytes();
            b[12] = 0x08;
            b[13] = 0x06;
            b
        },
        verdict: XDP_PASS,
        output: unchanged,
        counts: None,
    };
    a_client_outside_the_source_ranges_is_dropped: Fixture {
        description: "SYN to a load-balancer address with loadBalancerSourceRanges from a client outside them → dropped, counted",
        setup: nothing,
        input: |_| syn(CLIENT, LB_RANGED).bytes(),
        verdict: XDP_DROP,
        output: unchanged,
        counts: Some(DropReason::SourceRangeDenied),
    };
    a_client_inside_the_source_ranges_gets_through: Fixture {
        description: "the same SYN from a client in 198.51.100.0/24 → DNAT to the local backend",
        setup: nothing,
        input: |_| syn(ALLOWED_CLIENT, LB_RANGED).bytes(),
        verdict: XDP_PASS,
        output: |_| Some(syn(ALLOWED_CLIENT, LB_RANGED).with_dst(LOCAL).bytes()),
        counts: None,
    };
    traffic_for_nobody_passes_untouched: Fixture {
        description: "TCP to the node address on a port that is no NodePort passes unchanged",
        setup: nothing,
        input: |_| syn(CLIENT, SocketAddrV4::new(NODE_IP, 22)).bytes(),
        verdict: XDP_PASS,
        output: unchanged,
        counts: None,
    };
}
