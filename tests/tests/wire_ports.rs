//! The forwarding benchmark's rig, checked on its own: frames from `Pktgen` through an
//! `XdpRedirect` port reach a veth that polls without an XDP program (GRO on) and are counted in
//! that veth's own NAPI thread; a port for one MAC redirects only that MAC's frames.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use skiff_tests::{NetNs, napi, packet::Frame, pktgen::Pktgen, wire::XdpRedirect};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
const SRC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 7, 1), 4000);
const PORT: u16 = 9000;

/// A switch namespace with a generator pair (gen0 → gen1) and a link p0 to a node namespace's eth0.
struct Rig {
    sw: NetNs,
    node: NetNs,
    node_mac: [u8; 6],
}

/// A veth's per-queue XDP statistics (`ethtool -S`) by name.
fn stat(ns: &NetNs, iface: &str, name: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "ethtool", "-S", iface])
        .output()
        .expect("ethtool");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in ethtool -S {iface}"))
}

impl Rig {
    fn new(label: &str) -> Rig {
        let sw = NetNs::new(&format!("{label}-sw")).expect("switch");
        let node = NetNs::new(&format!("{label}-node")).expect("node");
        // Quiet links: no IPv6 (router and neighbour solicitations would be counted too).
        for ns in [&sw, &node] {
            for key in ["net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"] {
                ns.sysctl(key, "1").expect("sysctl");
            }
        }
        sw.ip(&["link", "add", "gen0", "type", "veth", "peer", "name", "gen1"]).expect("generator veth");
        sw.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "eth0", "netns", node.name()])
            .expect("link");
        for end in ["gen0", "gen1", "p0"] {
            sw.ip(&["link", "set", end, "up"]).expect("up");
        }
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"]).expect("address");
        node.ip(&["link", "set", "eth0", "up"]).expect("up");
        node.wait_link_up("eth0").expect("eth0 up");
        let node_mac = node.mac("eth0").expect("MAC");
        Rig { sw, node, node_mac }
    }

    fn frame(&self, dst_mac: [u8; 6]) -> Vec<u8> {
        let mut f = Frame::udp(SRC, SocketAddrV4::new(NODE_IP, PORT), b"through the port");
        f.dst_mac = dst_mac;
        f.bytes()
    }

    /// Sends `frames` from the generator in batches of 64, and returns what a socket on the
    /// node received, expecting `expect` of every 64 (each batch is read before the next is
    /// sent: the node's ring holds 256 frames and the socket's buffer a few hundred datagrams).
    fn send_and_receive(&self, frames: &[Vec<u8>], expect: usize) -> usize {
        let socket = self
            .node
            .run(|| UdpSocket::bind(SocketAddrV4::new(NODE_IP, PORT)))
            .expect("node thread")
            .expect("bind");
        socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        // Bound to gen0 of the switch namespace, the socket sends from any thread.
        let pktgen = self.sw.run(|| Pktgen::new("gen0")).expect("switch thread").expect("generator");
        let mut got = 0;
        let mut buf = [0u8; 64];
        for (i, batch) in frames.chunks(64).enumerate() {
            assert_eq!(pktgen.send(batch).expect("send").sent, batch.len());
            while got < (i + 1) * expect && socket.recv(&mut buf).is_ok() {
                assert_eq!(&buf[..16], b"through the port");
                got += 1;
            }
        }
        // Anything beyond the expected count would be a frame that should not have arrived.
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        while socket.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    }
}

#[test]
fn redirected_frames_reach_a_polled_peer_in_its_own_thread() {
    let rig = Rig::new("redir");
    napi::set_gro(&rig.node, "eth0", true).expect("GRO on");
    let threads = napi::threaded(&rig.node, "eth0").expect("threaded NAPI");
    let _port = rig.sw.run(|| XdpRedirect::attach("gen1", "p0")).expect("switch thread").expect("port");
    let cpu = || threads.iter().map(|t| t.cpu_time().expect("cpu time")).sum::<Duration>();
    let (cpu0, polled0) = (cpu(), stat(&rig.node, "eth0", "rx_queue_0_xdp_packets"));

    let frames = vec![rig.frame(rig.node_mac); 640];
    assert_eq!(rig.send_and_receive(&frames, 64), 640, "every frame delivered, intact");
    // They went through the node's ring (not the kernel's backlog), so its thread did the work.
    assert_eq!(stat(&rig.node, "eth0", "rx_queue_0_xdp_packets") - polled0, 640);
    // Each frame is an skb, the stack and a socket's queue: far above 100 ns, even on a fast
    // machine; a thread that merely woke up would not reach it.
    let spent = cpu() - cpu0;
    assert!(spent >= Duration::from_nanos(640 * 100), "the node's poll thread ran {spent:?} for 640 frames");
    assert_eq!(stat(&rig.sw, "gen1", "rx_queue_0_xdp_redirect"), 640);
}

#[test]
fn a_port_for_one_mac_passes_the_other_frames() {
    let rig = Rig::new("macport");
    napi::set_gro(&rig.node, "eth0", true).expect("GRO on");
    let _port = rig
        .sw
        .run(|| XdpRedirect::attach_for("gen1", rig.node_mac, "p0"))
        .expect("switch thread")
        .expect("port");
    // Other MACs: one differing in the first four bytes, one only in the last (each half of the
    // program's comparison must reject).
    let mut near = rig.node_mac;
    near[5] ^= 1;
    let others = [[0x02, 0, 0, 0, 0, 0x42], near];
    let frames: Vec<Vec<u8>> =
        (0..128).map(|i| rig.frame(if i % 2 == 0 { rig.node_mac } else { others[i / 2 % 2] })).collect();
    assert_eq!(rig.send_and_receive(&frames, 32), 64, "only the node's MAC crossed");
    assert_eq!(stat(&rig.sw, "gen1", "rx_queue_0_xdp_redirect"), 64);
}
