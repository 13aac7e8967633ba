//! NodePort forwarding per core, measured as on a real node: frames arrive on node 1's uplink as
//! raw frames from the wire, and the CPU time counted is node 1's receive processing alone.
//!
//! - **The traffic** comes from [`skiff_tests::pktgen`] in the switch namespace: UDP frames from
//!   the outside client to node 1's NodePort (64 flows, by source port) into a generator port
//!   whose XDP program redirects them to node 1's link ([`skiff_tests::wire::XdpRedirect`]), so
//!   they land in node 1's uplink ring as raw frames, as a NIC's DMA puts them there: no skb, no
//!   bridge and no socket on the way in, and the generator offers more than node 1 takes.
//! - **Node 1's work** runs in its uplink's NAPI thread ([`skiff_tests::napi`]): in eBPF mode the
//!   XDP program (Maglev, conntrack, DNAT and SNAT, the FIB lookup) and `XDP_TX`; in iptables mode
//!   the skb built from the frame, GRO, the IP stack with conntrack, kube-proxy's rules and
//!   masquerade, and the transmit, as a NIC driver without XDP hands frames to the kernel. The
//!   switch ports have poll threads of their own, so none of their work is counted in.
//! - **Counted:** frames node 1 sent back out (its uplink's transmit counter) per second of that
//!   thread's CPU time, beside the datagrams the backend pod on node 2 received (proof the
//!   translation was right; the rest of the 2-core machine caps it).
//!
//! The same run with frames addressed to the backend pod itself gives the floor: node 1 merely
//! routing (the kernel in both modes; the XDP program passes them on).

use std::{
    net::{SocketAddrV4, UdpSocket},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde::Serialize;
use skiff_tests::{NetNs, napi, packet::Frame, pktgen::Pktgen, poll_until, wire::XdpRedirect};

use crate::cluster::{Cluster, EXT_IP, SINK_PORT};

/// Source ports of the generated flows: 64 flows from the outside client.
const FLOWS: u16 = 64;
/// Copies of each flow's frame per round of sending.
const COPIES: usize = 16;
const PAYLOAD: [u8; 64] = [b'x'; 64];

/// What one forwarding run measured.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Forwarding {
    pub seconds: f64,
    /// Frames node 1's uplink received (polled from its ring), and sent back out.
    pub received: u64,
    pub forwarded: u64,
    /// Datagrams the backend's socket on node 2 got.
    pub delivered: u64,
    /// CPU time of node 1's uplink receive thread meanwhile.
    pub node_cpu_seconds: f64,
}

impl Forwarding {
    /// Frames forwarded per second of node 1's receive CPU.
    pub fn per_core(&self) -> f64 {
        self.forwarded as f64 / self.node_cpu_seconds.max(1e-3)
    }

    /// Frames forwarded per second of wall time.
    pub fn pps(&self) -> f64 {
        self.forwarded as f64 / self.seconds
    }
}

/// Interface counters of `iface` in `ns`: received and transmitted packets.
fn counters(ns: &NetNs, iface: &str) -> (u64, u64) {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", iface]).expect("ip -s link");
    let json: serde_json::Value = serde_json::from_str(&out).expect("ip JSON");
    let stats = &json[0]["stats64"];
    let n = |dir: &str| stats[dir]["packets"].as_u64().expect("packet counter");
    (n("rx"), n("tx"))
}

/// The rig around node 1, undone on drop so the rest of the benchmark runs on the usual path:
/// node 1's uplink polled in a thread of its own, a generator port feeding it raw frames, and the
/// switch port after node 1 passing frames for node 2 straight to node 2's link (a hardware
/// switch's forwarding costs the nodes nothing; the bridge's would be counted by no one, but its
/// skbs make it the rig's bottleneck, and node 1 would lose frames on a full queue).
pub struct Rig<'c> {
    c: &'c mut Cluster,
    threads: Vec<napi::NapiThread>,
    ports: Vec<XdpRedirect>,
}

impl<'c> Rig<'c> {
    pub fn new(c: &'c mut Cluster) -> Self {
        // A NIC driver's receive path: NAPI with GRO (iptables mode has no XDP program to poll,
        // and a veth takes raw frames only into a polled ring).
        for node in &c.nodes {
            napi::set_gro(node, "eth0", true).expect("GRO on");
        }
        let threads = napi::threaded(&c.nodes[0], "eth0").expect("node 1's uplink threaded");
        // Node 2's receive in a thread of its own as well, or it would run inside the switch
        // port's and slow that port down until node 1 found its queue full.
        napi::threaded(&c.nodes[1], "eth0").expect("node 2's uplink threaded");
        let sw = &c.switch;
        // The generator's port: frames sent into gen0 come out of gen1 and are redirected to
        // node 1's link.
        sw.ip(&["link", "add", "gen0", "type", "veth", "peer", "name", "gen1"]).expect("generator veth");
        for end in ["gen0", "gen1"] {
            sw.ip(&["link", "set", end, "up"]).expect("generator veth up");
        }
        let node2_mac = c.nodes[1].mac("eth0").expect("MAC");
        c.wires[1] = None;
        let ports = sw
            .run(|| -> skiff_tests::Result<Vec<XdpRedirect>> {
                Ok(vec![
                    XdpRedirect::attach("gen1", "sw-n1")?,
                    XdpRedirect::attach_for("sw-n1", node2_mac, "sw-n2")?,
                ])
            })
            .expect("switch thread")
            .expect("switch ports");
        // Each port in its own poll thread too, so its work runs in batches (a NIC interrupt's
        // worth, not one frame per send) and never inside node 1's thread.
        for port in ["gen1", "sw-n1"] {
            napi::threaded(sw, port).expect("switch port threaded");
        }
        Rig { c, threads, ports }
    }

    fn cpu(&self) -> Duration {
        self.threads.iter().map(|t| t.cpu_time().expect("NAPI thread time")).sum()
    }

    /// Offers frames from the outside client to `to` for `seconds`, counting what the sink on
    /// node 2's first pod (r1, UDP port 9000, the NodePort's backend) receives.
    pub fn run(&self, to: SocketAddrV4, seconds: f64) -> Forwarding {
        let c = &*self.c;
        let sink_ns = &c.remote[0].ns;
        let sink = SocketAddrV4::new(c.remote[0].ip, SINK_PORT);
        let node = &c.nodes[0];
        let (src_mac, dst_mac) = (c.ext.mac("eth0").expect("MAC"), node.mac("eth0").expect("MAC"));
        let frames: Vec<Vec<u8>> = (0..FLOWS)
            .flat_map(|k| {
                let mut f = Frame::udp(SocketAddrV4::new(EXT_IP, 20_000 + k), to, &PAYLOAD);
                f.src_mac = src_mac;
                f.dst_mac = dst_mac;
                std::iter::repeat_n(f.bytes(), COPIES)
            })
            .collect();
        let socket = sink_ns.run(move || UdpSocket::bind(sink)).expect("sink thread").expect("bind sink");
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let stop = AtomicBool::new(false);
        let delivered = AtomicU64::new(0);
        let mut out = Forwarding::default();
        std::thread::scope(|s| {
            // Stops the sink however this scope ends (a panic below must not leave it running,
            // or the scope would wait for it forever).
            let _stop = StopOnDrop(&stop);
            s.spawn(|| {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if socket.recv(&mut buf).is_ok() {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let (rx0, tx0) = counters(node, "eth0");
            let cpu0 = self.cpu();
            let start = Instant::now();
            c.switch
                .run(|| {
                    let pktgen = Pktgen::new("gen0").expect("packet generator");
                    while start.elapsed().as_secs_f64() < seconds {
                        pktgen.send(&frames).expect("send");
                    }
                })
                .expect("switch thread");
            out.seconds = start.elapsed().as_secs_f64();
            // Done when node 1's counters and the sink stood still over the last few polls.
            let (mut last, mut still) = ((0, 0, 0), 0);
            poll_until("the forwarded frames to land", Duration::from_secs(5), || {
                let (rx, tx) = counters(node, "eth0");
                let now = (rx, tx, delivered.load(Ordering::Relaxed));
                still = if now == last { still + 1 } else { 0 };
                last = now;
                (still >= 5).then_some(())
            })
            .expect("node 1 settles");
            out.node_cpu_seconds = (self.cpu() - cpu0).as_secs_f64();
            out.received = last.0 - rx0;
            out.forwarded = last.1 - tx0;
        });
        out.delivered = delivered.load(Ordering::Relaxed);
        out
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for Rig<'_> {
    fn drop(&mut self) {
        self.ports.clear();
        let sw = &self.c.switch;
        let _ = sw.ip(&["link", "del", "gen0"]);
        let _ = napi::unthreaded(sw, "sw-n1");
        self.c.wires[1] = sw.run(|| skiff_tests::wire::XdpPass::attach("sw-n1")).ok().and_then(Result::ok);
        for node in &self.c.nodes {
            let _ = napi::unthreaded(node, "eth0");
            let _ = napi::set_gro(node, "eth0", false);
        }
    }
}
