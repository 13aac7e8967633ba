//! Packet fixtures for the ClusterIP load balancer, run through BPF_PROG_TEST_RUN against the real
//! loaded program and its real maps (Katran/Cilium style): each fixture has a description, a map
//! setup (which may include earlier packets of the flow), an input packet, the expected verdict and
//! the expected output packet, plus any counter it must move.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::{
    Svc, be,
    fixture::{FixtureEnv, nothing, unchanged},
};

use skiff_agent::datapath::{
    Datapath, DatapathConfig, LbCapacity, LogLevel,
    lb::maglev::{self, MaglevBackend},
};
use skiff_common::{
    DropReason,
    lb::{DEFAULT_HAIRPIN_ADDR_BE, LbConfig, SVC_F_AFFINITY, SVC_F_RANDOM, flow_hash},
};
use skiff_tests::{
    PinDir,
    packet::{Frame, IP_MF, L4, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_REDIRECT: i32 = 7;
const M: u32 = 251;

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 40000);
const WEB: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
const DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
const EMPTY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 20), 80);
const STICKY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 30), 80);
const RANDOM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 40), 80);
const PODS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 244, 1, 11), Ipv4Addr::new(10, 244, 2, 12), Ipv4Addr::new(10, 244, 3, 13)];

/// A loaded datapath with the fixture services programmed.
struct Env {
    dp: Datapath,
    _pins: PinDir,
    /// What a setup step learned (e.g. the backend an earlier packet went to).
    memo: Option<SocketAddrV4>,
}

fn services() -> Vec<Svc> {
    let pods = |first_id: u32, port: u16| -> Vec<(u32, SocketAddrV4)> {
        PODS.iter().enumerate().map(|(i, ip)| (first_id + i as u32, SocketAddrV4::new(*ip, port))).collect()
    };
    vec![
        Svc { frontend: WEB, proto: PROTO_TCP, row: 1, flags: 0, backends: pods(1, 8080) },
        Svc { frontend: DNS, proto: PROTO_UDP, row: 2, flags: 0, backends: pods(4, 5353) },
        Svc { frontend: EMPTY, proto: PROTO_TCP, row: 3, flags: 0, backends: vec![] },
        Svc { frontend: STICKY, proto: PROTO_TCP, row: 4, flags: SVC_F_AFFINITY, backends: pods(1, 8080) },
        Svc { frontend: RANDOM, proto: PROTO_TCP, row: 5, flags: SVC_F_RANDOM, backends: pods(1, 8080) },
    ]
}

impl Env {
    fn new(label: &str) -> Env {
        let pins = PinDir::new(label).expect("pin dir");
        let lb = LbCapacity {
            config: LbConfig { maglev_m: M, ..LbConfig::DEFAULT },
            max_services: 64,
            max_backends: 64,
            max_ct: 1024,
            max_affinity: 256,
            max_frags: 64,
        };
        let config = DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, lb };
        let mut env = Env { dp: Datapath::load(&config).expect("load datapath"), _pins: pins, memo: None };
        for svc in services() {
            svc.program(&mut env.dp);
        }
        env
    }

    /// The backend Maglev picks for `client` → `frontend`.
    fn maglev_pick(&mut self, client: SocketAddrV4, frontend: SocketAddrV4, proto: u8) -> SocketAddrV4 {
        let svc = services()
            .into_iter()
            .find(|s| s.frontend == frontend && s.proto == proto)
            .expect("fixture service");
        let h = flow_hash(
            be(*client.ip()),
            be(*frontend.ip()),
            client.port().to_be(),
            frontend.port().to_be(),
            proto,
        );
        let row = self.dp.lb().maglev_row(svc.row).expect("row");
        let id = row[(h % M) as usize];
        svc.backends.iter().find(|(bid, _)| *bid == id).map(|(_, a)| *a).expect("backend in row")
    }
}

impl FixtureEnv for Env {
    fn run(&self, packet: &[u8]) -> (i32, Vec<u8>) {
        let mut out = vec![0u8; packet.len() + 128];
        let outcome = self.dp.test_run_lb(packet, &mut out, 1).expect("test run");
        out.truncate(outcome.len);
        (outcome.verdict, out)
    }

    fn drops(&mut self, reason: DropReason) -> u64 {
        self.dp.lb().drops(reason).expect("drop counters")
    }
}

type Fixture = common::fixture::Fixture<Env>;

fn check(label: &str, f: &Fixture) {
    f.check_in(&mut Env::new(label));
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

fn syn(_: &mut Env) -> Vec<u8> {
    Frame::tcp(CLIENT, WEB, TCP_SYN).bytes()
}

fn syn_dnat(env: &mut Env) -> Option<Vec<u8>> {
    let backend = env.maglev_pick(CLIENT, WEB, PROTO_TCP);
    Some(Frame::tcp(CLIENT, WEB, TCP_SYN).with_dst(backend).bytes())
}

/// Sends the flow's SYN and remembers the backend it went to.
fn send_syn(env: &mut Env) {
    let (verdict, _) = env.run(&Frame::tcp(CLIENT, WEB, TCP_SYN).bytes());
    assert_eq!(verdict, TC_ACT_OK);
    env.memo = Some(env.maglev_pick(CLIENT, WEB, PROTO_TCP));
}

fn memo(env: &Env) -> SocketAddrV4 {
    env.memo.expect("setup remembered a backend")
}

fn ack_packet() -> Frame {
    let mut f = Frame::tcp(CLIENT, WEB, TCP_ACK);
    if let L4::Tcp { seq, ack, payload, .. } = &mut f.l4 {
        *seq = 1001;
        *ack = 5001;
        *payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    }
    f
}

/// The RST the datapath answers `ack_packet()` with, from `frontend`: the segment carried ACK
/// 5001, so the reset takes seq 5001 and no ACK (RFC 793).
fn reset_of_ack_from(frontend: SocketAddrV4) -> Vec<u8> {
    let mut rst = Frame::tcp(frontend, CLIENT, TCP_RST);
    rst.src_mac = ack_packet().dst_mac;
    rst.dst_mac = ack_packet().src_mac;
    rst.id = 0;
    rst.frag = 0;
    if let L4::Tcp { seq, ack, window, .. } = &mut rst.l4 {
        *seq = 5001;
        *ack = 0;
        *window = 0;
    }
    rst.bytes()
}

fn udp_query() -> Frame {
    Frame::udp(CLIENT, DNS, b"\x12\x34 query")
}

fn send_udp(env: &mut Env) {
    let (verdict, _) = env.run(&udp_query().bytes());
    assert_eq!(verdict, TC_ACT_OK);
    env.memo = Some(env.maglev_pick(CLIENT, DNS, PROTO_UDP));
}

/// The ICMP port unreachable the datapath sends back for `rejected`.
fn port_unreachable_for(rejected: &Frame) -> Vec<u8> {
    let mut reply = Frame::icmp_error(rejected.dst, rejected.src, 3, 3, rejected);
    reply.src_mac = rejected.dst_mac;
    reply.dst_mac = rejected.src_mac;
    reply.id = 0;
    reply.frag = 0;
    reply.bytes()
}

fn backend_id(addr: SocketAddrV4) -> u32 {
    services()
        .into_iter()
        .flat_map(|s| s.backends)
        .find(|(_, a)| *a == addr)
        .map(|(id, _)| id)
        .expect("known backend")
}

fixtures! {
    tcp_syn_to_a_clusterip_is_dnated_to_the_maglev_backend: Fixture {
        description: "TCP SYN to ClusterIP:80 → DNAT to the backend the Maglev row names",
        setup: nothing,
        input: syn,
        verdict: TC_ACT_OK,
        output: syn_dnat,
        counts: None,
    };
    later_packets_follow_conntrack_even_when_the_row_changes: Fixture {
        description: "after the SYN the row is rewritten to another backend; the flow's next packet keeps its backend",
        setup: |env| {
            send_syn(env);
            let first = memo(env);
            let other = services()[0].backends.iter().find(|(_, a)| *a != first).map(|(id, _)| *id).expect("other");
            env.dp.lb().set_maglev_row(1, &vec![other; M as usize]).expect("row");
        },
        input: |_| ack_packet().bytes(),
        verdict: TC_ACT_OK,
        output: |env| Some(ack_packet().with_dst(memo(env)).bytes()),
        counts: None,
    };
    a_direct_connection_reusing_a_service_flows_port_keeps_its_replies: Fixture {
        description: "the client's Service connection to the backend closed; a new SYN from the same port straight to that backend drops the old reverse-NAT entry, so the SYN-ACK is not rewritten to the ClusterIP",
        setup: |env| {
            send_syn(env);
            let backend = memo(env);
            let fin = Frame::tcp(CLIENT, WEB, TCP_FIN | TCP_ACK).bytes();
            assert_eq!(env.run(&fin).0, TC_ACT_OK);
            let direct = Frame::tcp(CLIENT, backend, TCP_SYN).bytes();
            assert_eq!(env.run(&direct), (TC_ACT_OK, direct.clone()), "a direct SYN passes untouched");
        },
        input: |env| Frame::tcp(memo(env), CLIENT, TCP_SYN | TCP_ACK).bytes(),
        verdict: TC_ACT_OK,
        output: unchanged,
        counts: None,
    };
    replies_are_reverse_translated_to_the_clusterip: Fixture {
        description: "SYN-ACK from the backend to the client leaves with the ClusterIP:80 as its source",
        setup: send_syn,
        input: |env| Frame::tcp(memo(env), CLIENT, TCP_SYN | TCP_ACK).bytes(),
        verdict: TC_ACT_OK,
        output: |_| Some(Frame::tcp(WEB, CLIENT, TCP_SYN | TCP_ACK).bytes()),
        counts: None,
    };
    udp_to_a_clusterip_is_dnated: Fixture {
        description: "UDP datagram to ClusterIP:53 → DNAT to its Maglev backend, checksum fixed",
        setup: nothing,
        input: |_| udp_query().bytes(),
        verdict: TC_ACT_OK,
        output: |env| {
            let backend = env.maglev_pick(CLIENT, DNS, PROTO_UDP);
            Some(udp_query().with_dst(backend).bytes())
        },
        counts: None,
    };
    udp_without_checksum_keeps_a_zero_checksum: Fixture {
        description: "UDP with checksum 0 (none) is translated and its checksum stays 0",
        setup: nothing,
        input: |_| {
            let mut f = udp_query();
            if let L4::Udp { checksum, .. } = &mut f.l4 { *checksum = false; }
            f.bytes()
        },
        verdict: TC_ACT_OK,
        output: |env| {
            let mut f = udp_query().with_dst(env.maglev_pick(CLIENT, DNS, PROTO_UDP));
            if let L4::Udp { checksum, .. } = &mut f.l4 { *checksum = false; }
            Some(f.bytes())
        },
        counts: None,
    };
    non_service_traffic_passes_untouched: Fixture {
        description: "TCP to a pod IP (no Service) passes unchanged",
        setup: nothing,
        input: |_| Frame::tcp(CLIENT, SocketAddrV4::new(PODS[0], 80), TCP_SYN).bytes(),
        verdict: TC_ACT_OK,
        output: unchanged,
        counts: None,
    };
    non_ipv4_frames_pass_untouched: Fixture {
        description: "an ARP frame passes unchanged",
        setup: nothing,
        input: |_| {
            let mut b = Frame::tcp(CLIENT, WEB, TCP_SYN).bytes();
            b[12] = 0x08;
            b[13] = 0x06;
            b
        },
        verdict: TC_ACT_OK,
        output: unchanged,
        counts: None,
    };
    ip_options_are_kept_and_skipped: Fixture {
        description: "SYN with 8 bytes of IP options: L4 found past them, DNAT applied, options kept",
        setup: nothing,
        input: |_| {
            let mut f = Frame::tcp(CLIENT, WEB, TCP_SYN);
            f.options = vec![1, 1, 1, 1, 1, 1, 1, 0];
            f.bytes()
        },
        verdict: TC_ACT_OK,
        output: |env| {
            let mut f = Frame::tcp(CLIENT, WEB, TCP_SYN).with_dst(env.maglev_pick(CLIENT, WEB, PROTO_TCP));
            f.options = vec![1, 1, 1, 1, 1, 1, 1, 0];
            Some(f.bytes())
        },
        counts: None,
    };
    truncated_l4_header_to_a_clusterip_is_dropped: Fixture {
        description: "a TCP header cut to 10 bytes, addressed to a ClusterIP, is dropped as invalid",
        setup: nothing,
        input: |_| {
            let mut b = Frame::tcp(CLIENT, WEB, TCP_SYN).bytes();
            b.truncate(14 + 20 + 10);
            b[16..18].copy_from_slice(&30u16.to_be_bytes());
            b
        },
        verdict: TC_ACT_SHOT,
        output: |_| None,
        counts: Some(DropReason::InvalidPacket),
    };
    malformed_ipv4_header_passes: Fixture {
        description: "an IPv4 header claiming 16 bytes (IHL 4) is not ours to judge: unchanged",
        setup: nothing,
        input: |_| {
            // (A frame cut inside the IPv4 header cannot be test-run: the kernel refuses it.)
            let mut b = Frame::tcp(CLIENT, WEB, TCP_SYN).bytes();
            b[14] = 0x44;
            b
        },
        verdict: TC_ACT_OK,
        output: unchanged,
        counts: None,
    };
    service_without_endpoints_is_rejected_with_icmp: Fixture {
        description: "SYN to a ClusterIP with no endpoints → ICMP port unreachable back to the client",
        setup: nothing,
        input: |_| Frame::tcp(CLIENT, EMPTY, TCP_SYN).bytes(),
        verdict: TC_ACT_REDIRECT,
        output: |_| Some(port_unreachable_for(&Frame::tcp(CLIENT, EMPTY, TCP_SYN))),
        counts: Some(DropReason::NoEndpoints),
    };
    unserved_port_on_a_clusterip_is_rejected: Fixture {
        description: "SYN to ClusterIP:8443, a port the Service does not have → ICMP port unreachable",
        setup: nothing,
        input: |_| Frame::tcp(CLIENT, SocketAddrV4::new(*WEB.ip(), 8443), TCP_SYN).bytes(),
        verdict: TC_ACT_REDIRECT,
        output: |_| Some(port_unreachable_for(&Frame::tcp(CLIENT, SocketAddrV4::new(*WEB.ip(), 8443), TCP_SYN))),
        counts: Some(DropReason::UnknownPort),
    };
    sctp_to_a_clusterip_is_rejected_as_unsupported: Fixture {
        description: "SCTP to a ClusterIP → ICMP port unreachable, counted as unsupported protocol",
        setup: nothing,
        input: |_| Frame::raw(*CLIENT.ip(), *WEB.ip(), PROTO_SCTP, &[0x9c, 0x40, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0]).bytes(),
        verdict: TC_ACT_REDIRECT,
        output: |_| Some(port_unreachable_for(&Frame::raw(*CLIENT.ip(), *WEB.ip(), PROTO_SCTP, &[0x9c, 0x40, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0]))),
        counts: Some(DropReason::UnsupportedProtocol),
    };
    icmp_error_from_the_backend_is_translated: Fixture {
        description: "the backend's ICMP port unreachable for a UDP flow reaches the client as if from the ClusterIP",
        setup: send_udp,
        input: |env| {
            let sent = udp_query().with_dst(memo(env));
            Frame::icmp_error(*memo(env).ip(), *CLIENT.ip(), 3, 3, &sent).bytes()
        },
        verdict: TC_ACT_OK,
        output: |_| Some(Frame::icmp_error(*DNS.ip(), *CLIENT.ip(), 3, 3, &udp_query()).bytes()),
        counts: None,
    };
    first_fragment_is_translated_and_later_ones_follow: Fixture {
        description: "a fragmented UDP datagram: the second fragment (no ports) gets the first one's backend",
        setup: |env| {
            let big = Frame::udp(CLIENT, DNS, &[0x5a; 64]);
            let (verdict, _) = env.run(&big.fragments(32)[0]);
            assert_eq!(verdict, TC_ACT_OK);
            env.memo = Some(env.maglev_pick(CLIENT, DNS, PROTO_UDP));
        },
        input: |_| Frame::udp(CLIENT, DNS, &[0x5a; 64]).fragments(32)[1].clone(),
        verdict: TC_ACT_OK,
        output: |env| Some(Frame::udp(CLIENT, DNS, &[0x5a; 64]).with_dst(memo(env)).fragments(32)[1].clone()),
        counts: None,
    };
    first_fragment_gets_the_same_translation: Fixture {
        description: "the first fragment of a UDP datagram is DNATed like an unfragmented one",
        setup: nothing,
        input: |_| Frame::udp(CLIENT, DNS, &[0x5a; 64]).fragments(32)[0].clone(),
        verdict: TC_ACT_OK,
        output: |env| {
            let backend = env.maglev_pick(CLIENT, DNS, PROTO_UDP);
            Some(Frame::udp(CLIENT, DNS, &[0x5a; 64]).with_dst(backend).fragments(32)[0].clone())
        },
        counts: None,
    };
    untracked_later_fragment_to_a_clusterip_is_dropped: Fixture {
        description: "a later fragment to a ClusterIP whose first fragment was never seen is dropped",
        setup: nothing,
        input: |_| {
            let frags = Frame::udp(CLIENT, DNS, &[0x5a; 64]).fragments(32);
            assert_ne!(u16::from_be_bytes([frags[1][20], frags[1][21]]) & 0x1fff, 0);
            let _ = IP_MF;
            frags[1].clone()
        },
        verdict: TC_ACT_SHOT,
        output: |_| None,
        counts: Some(DropReason::FragmentNotTracked),
    };
    session_affinity_pins_new_connections_of_a_client: Fixture {
        description: "with ClientIP affinity, a second connection from another port goes to the first one's backend",
        setup: |env| {
            let (verdict, out) = env.run(&Frame::tcp(CLIENT, STICKY, TCP_SYN).bytes());
            assert_eq!(verdict, TC_ACT_OK);
            let dst = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
            env.memo = Some(SocketAddrV4::new(dst, 8080));
        },
        input: |env| {
            // A source port whose flow hash alone would pick a different backend.
            let first = memo(env);
            let port = (40001..41000)
                .find(|p| env.maglev_pick(SocketAddrV4::new(*CLIENT.ip(), *p), STICKY, PROTO_TCP) != first)
                .expect("a port that hashes elsewhere");
            env.memo = Some(SocketAddrV4::new(*first.ip(), port));
            Frame::tcp(SocketAddrV4::new(*CLIENT.ip(), port), STICKY, TCP_SYN).bytes()
        },
        verdict: TC_ACT_OK,
        output: |env| {
            let m = memo(env);
            let client = SocketAddrV4::new(*CLIENT.ip(), m.port());
            Some(Frame::tcp(client, STICKY, TCP_SYN).with_dst(SocketAddrV4::new(*m.ip(), 8080)).bytes())
        },
        counts: None,
    };
    tcp_flow_whose_backend_was_removed_is_reset: Fixture {
        description: "the flow's backend is removed; its next segment is answered with a RST, not blackholed",
        setup: |env| {
            send_syn(env);
            let id = backend_id(memo(env));
            env.dp.lb().remove_backend(id).expect("remove backend");
        },
        input: |_| ack_packet().bytes(),
        verdict: TC_ACT_REDIRECT,
        output: |_| Some(reset_of_ack_from(WEB)),
        counts: Some(DropReason::BackendGone),
    };
    udp_flow_whose_backend_was_removed_moves_to_a_live_one: Fixture {
        description: "the UDP flow's backend is removed and its row rebuilt; the next datagram goes to a live backend",
        setup: |env| {
            send_udp(env);
            let gone = memo(env);
            let id = backend_id(gone);
            env.dp.lb().remove_backend(id).expect("remove backend");
            let svc = &services()[1];
            let live: Vec<MaglevBackend> = svc
                .backends
                .iter()
                .filter(|(bid, _)| *bid != id)
                .map(|(bid, a)| MaglevBackend { key: format!("{a}/{PROTO_UDP}"), id: *bid })
                .collect();
            env.dp.lb().set_maglev_row(2, &maglev::row(&live, M)).expect("row");
        },
        input: |_| udp_query().bytes(),
        verdict: TC_ACT_OK,
        output: |env| Some(udp_query().with_dst(env.maglev_pick(CLIENT, DNS, PROTO_UDP)).bytes()),
        counts: None,
    };
    hairpin_flow_is_source_natted: Fixture {
        description: "a backend pod reaching its own Service and landing on itself is SNATed to the hairpin address",
        setup: |env| {
            // Find a source port whose flow from pod 0 lands on pod 0 itself.
            let me = PODS[0];
            let port = (40000..50000)
                .find(|p| *env.maglev_pick(SocketAddrV4::new(me, *p), WEB, PROTO_TCP).ip() == me)
                .expect("a self-landing port");
            env.memo = Some(SocketAddrV4::new(me, port));
        },
        input: |env| Frame::tcp(memo(env), WEB, TCP_SYN).bytes(),
        verdict: TC_ACT_OK,
        output: |env| {
            let me = memo(env);
            let hairpin = Ipv4Addr::from(DEFAULT_HAIRPIN_ADDR_BE.to_ne_bytes());
            Some(
                Frame::tcp(me, WEB, TCP_SYN)
                    .with_dst(SocketAddrV4::new(*me.ip(), 8080))
                    .with_src(SocketAddrV4::new(hairpin, me.port()))
                    .bytes(),
            )
        },
        counts: None,
    };
    hairpin_reply_goes_back_to_the_pod_from_the_clusterip: Fixture {
        description: "the hairpin flow's reply (to the hairpin address) returns as ClusterIP → pod",
        setup: |env| {
            let me = PODS[0];
            let port = (40000..50000)
                .find(|p| *env.maglev_pick(SocketAddrV4::new(me, *p), WEB, PROTO_TCP).ip() == me)
                .expect("a self-landing port");
            let (verdict, _) = env.run(&Frame::tcp(SocketAddrV4::new(me, port), WEB, TCP_SYN).bytes());
            assert_eq!(verdict, TC_ACT_OK);
            env.memo = Some(SocketAddrV4::new(me, port));
        },
        input: |env| {
            let me = memo(env);
            let hairpin = Ipv4Addr::from(DEFAULT_HAIRPIN_ADDR_BE.to_ne_bytes());
            Frame::tcp(SocketAddrV4::new(*me.ip(), 8080), SocketAddrV4::new(hairpin, me.port()), TCP_SYN | TCP_ACK).bytes()
        },
        verdict: TC_ACT_OK,
        output: |env| Some(Frame::tcp(WEB, memo(env), TCP_SYN | TCP_ACK).bytes()),
        counts: None,
    };
    random_selection_picks_a_member_backend: Fixture {
        description: "with random selection the SYN is DNATed to one of the Service's backends",
        setup: nothing,
        input: |_| Frame::tcp(CLIENT, RANDOM, TCP_SYN).bytes(),
        verdict: TC_ACT_OK,
        output: |env| {
            // Whichever backend it chose must be a member; recover it from conntrack.
            let ct = env.dp.lb().conntrack();
            let (_, entry) = ct.first().expect("a conntrack entry");
            let addr = services()[4].backends.iter().find(|(id, _)| *id == entry.backend_id).map(|(_, a)| *a).expect("member");
            Some(Frame::tcp(CLIENT, RANDOM, TCP_SYN).with_dst(addr).bytes())
        },
        counts: None,
    };
    a_finished_flows_reverse_entry_does_not_rewrite_a_direct_connection: Fixture {
        description: "after a ClusterIP flow ends, a direct backend → client packet on the same tuple passes unchanged",
        setup: |env| {
            send_syn(env);
            // The flow is over (its forward entry expired); the reverse entry lingers.
            let flows = env.dp.lb().conntrack();
            let (key, _) = flows.first().expect("the flow");
            env.dp.lb().remove_flow(key).expect("forget the flow");
            assert!(!env.dp.lb().reverse_nat().is_empty(), "the reverse entry should linger for this fixture");
        },
        input: |env| Frame::tcp(memo(env), CLIENT, TCP_SYN | TCP_ACK).bytes(),
        verdict: TC_ACT_OK,
        output: unchanged,
        counts: None,
    };
    an_established_connection_to_a_frontend_without_endpoints_is_reset: Fixture {
        description: "a mid-connection segment to a frontend whose last endpoint left gets a RST, not an ICMP soft error",
        setup: nothing,
        input: |_| {
            let mut f = ack_packet();
            f = f.with_dst(EMPTY);
            f.bytes()
        },
        verdict: TC_ACT_REDIRECT,
        output: |_| Some(reset_of_ack_from(EMPTY)),
        counts: Some(DropReason::NoEndpoints),
    };
}
