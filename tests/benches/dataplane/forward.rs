//! NodePort forwarding per core, measured as on a NIC-bound node: frames arrive on node 1's
//! uplink as raw frames, and the CPU time counted is node 1's receive processing alone.
//!
//! - **The traffic** comes from [`skiff_tests::pktgen`] in the switch namespace: UDP frames from
//!   the outside client to node 1's NodePort (64 flows, by source port) into a generator port
//!   whose XDP program redirects them to node 1's link ([`skiff_tests::wire::XdpRedirect`]), so
//!   they land in node 1's uplink ring as raw frames, as a NIC's DMA puts them there: no skb, no
//!   bridge and no socket on the way in.
//! - **Node 1's work** runs in its uplink's NAPI thread ([`skiff_tests::napi`]): in eBPF mode the
//!   XDP program (Maglev, conntrack, DNAT and SNAT, the FIB lookup) and `XDP_TX`; in iptables mode
//!   the skb built from the frame, the IP stack with conntrack, kube-proxy's rules and
//!   masquerade, and the transmit, as a NIC driver without XDP hands frames to the kernel. The
//!   switch ports and node 2 have poll threads of their own, so none of their work is counted.
//! - **Counted:** frames node 1 sent to its link (transmitted, or dropped by a full link queue:
//!   node 1's work was done either way) per second of that thread's CPU time; beside them the
//!   frames node 1's own ring had no room for (the generator outran it) and the datagrams the
//!   backend pod on node 2 received (proof the translation was right; the rest of the 2-core
//!   machine caps it).
//!
//! The generator does not saturate node 1 (it shares two cores with everything else), so the
//! figure is node 1's cost per frame at the offered rate, as frames per core-second, with the
//! thread's busy share reported beside it. The faster mode idles more and polls smaller batches,
//! so that favours the slower one, if anything.
//!
//! In iptables mode node 1 polls either with GRO on (a driver's default) or through a
//! pass-everything XDP program (which makes the kernel skip GRO, useless for forwarded UDP); both
//! are measured and the better one is the baseline. The same run with frames addressed to the
//! backend pod itself gives the floor: node 1 merely routing (the kernel in both modes; the XDP
//! program passes them on).

use std::{
    net::{SocketAddrV4, UdpSocket},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde::Serialize;
use skiff_agent::proxy::mode::ProxyMode;
use skiff_tests::{
    NetNs, napi,
    packet::Frame,
    pktgen::Pktgen,
    poll_until,
    wire::{XdpPass, XdpRedirect},
};

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
    /// Frames node 1's uplink polled from its ring, and those its ring had no room for.
    pub received: u64,
    pub ring_full: u64,
    /// Frames node 1 sent to its link, and of them those the link's full queue dropped.
    pub forwarded: u64,
    pub link_full: u64,
    /// Datagrams the backend's socket on node 2 got.
    pub delivered: u64,
    /// CPU time of node 1's uplink receive thread meanwhile.
    pub node_cpu_seconds: f64,
}

impl Forwarding {
    /// Frames forwarded per second of node 1's receive CPU.
    pub fn per_core(&self) -> f64 {
        self.forwarded as f64 / self.node_cpu_seconds
    }

    /// Frames forwarded per second of wall time.
    pub fn pps(&self) -> f64 {
        self.forwarded as f64 / self.seconds
    }

    /// The share of the time node 1's receive thread was busy.
    pub fn busy(&self) -> f64 {
        self.node_cpu_seconds / self.seconds
    }
}

/// Packet counters of an interface: received, dropped on receive, transmitted, dropped on
/// transmit. (On a veth, a frame sent counts when the peer polls it; a drop for a full peer ring
/// counts on the sender's transmit side, `XDP_TX` and skbs alike.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counters {
    rx: u64,
    rx_dropped: u64,
    tx: u64,
    tx_dropped: u64,
}

fn counters(ns: &NetNs, iface: &str) -> Counters {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", iface]).expect("ip -s link");
    let json: serde_json::Value = serde_json::from_str(&out).expect("ip JSON");
    let stats = &json[0]["stats64"];
    let n = |dir: &str, what: &str| stats[dir][what].as_u64().expect("packet counter");
    Counters {
        rx: n("rx", "packets"),
        rx_dropped: n("rx", "dropped"),
        tx: n("tx", "packets"),
        tx_dropped: n("tx", "dropped"),
    }
}

/// How node 1 polls its uplink in iptables mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polling {
    /// GRO on, no XDP program: a NIC driver's default.
    Gro,
    /// A pass-everything XDP program, which makes the kernel skip GRO.
    PassProgram,
}

/// The rig around node 1, undone on drop so the rest of the benchmark runs on the usual path:
/// node 1's uplink polled in a thread of its own, a generator port feeding it raw frames, and the
/// switch port after node 1 passing frames for node 2 straight to node 2's link (a hardware
/// switch's forwarding costs the nodes nothing; the bridge's skbs would make the rig slower than
/// node 1 and fill node 1's link queue).
pub struct Rig<'c> {
    c: &'c mut Cluster,
    threads: Vec<napi::NapiThread>,
    ports: Vec<XdpRedirect>,
    pass: Option<XdpPass>,
}

impl<'c> Rig<'c> {
    /// `polling` applies in iptables mode; in eBPF mode node 1 polls for its XDP program.
    pub fn new(c: &'c mut Cluster, polling: Polling) -> Self {
        // Node 2 polls with GRO in both modes (a veth takes raw frames only into a polled ring;
        // in eBPF mode its XDP program polls anyway).
        napi::set_gro(&c.nodes[1], "eth0", true).expect("GRO on");
        let pass = match (c.mode, polling) {
            (ProxyMode::Ebpf, _) => None,
            (ProxyMode::Iptables, Polling::Gro) => {
                napi::set_gro(&c.nodes[0], "eth0", true).expect("GRO on");
                None
            }
            (ProxyMode::Iptables, Polling::PassProgram) => {
                Some(c.nodes[0].run(|| XdpPass::attach("eth0")).expect("node thread").expect("pass program"))
            }
        };
        let threads = napi::threaded(&c.nodes[0], "eth0").expect("node 1's uplink threaded");
        // Node 2's receive in a thread of its own as well, or it would run inside the switch
        // port's and slow that port down until node 1 found its link queue full.
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
        Rig { c, threads, ports, pass }
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
            let before = counters(node, "eth0");
            let cpu0 = self.cpu();
            let pktgen =
                c.switch.run(|| Pktgen::new("gen0")).expect("switch thread").expect("packet generator");
            let start = Instant::now();
            let mut sent = 0;
            while start.elapsed().as_secs_f64() < seconds {
                sent += pktgen.send(&frames).expect("send").sent;
            }
            out.seconds = start.elapsed().as_secs_f64();
            assert!(sent > 0, "the generator's port took no frame");
            // Done when node 1's counters and the sink stood still over the last few polls; if
            // they never do, the last reading stands (and says so) rather than losing the run.
            let (mut last, mut still) = ((Counters::default(), 0), 0);
            let settled = poll_until("the forwarded frames to land", Duration::from_secs(5), || {
                let now = (counters(node, "eth0"), delivered.load(Ordering::Relaxed));
                still = if now == last { still + 1 } else { 0 };
                last = now;
                (still >= 5).then_some(())
            });
            if let Err(e) = settled {
                eprintln!("    warning: {e}; using the last reading");
            }
            out.node_cpu_seconds = (self.cpu() - cpu0).as_secs_f64();
            let after = last.0;
            out.received = after.rx - before.rx;
            out.ring_full = after.rx_dropped - before.rx_dropped;
            out.link_full = after.tx_dropped - before.tx_dropped;
            out.forwarded = after.tx - before.tx + out.link_full;
        });
        out.delivered = delivered.load(Ordering::Relaxed);
        // A thread that ran no time was the wrong thread: its per-core figure would be infinite.
        assert!(
            out.node_cpu_seconds >= 0.005 && out.received > 0,
            "node 1's poll thread did no work ({:.4} s for {} frames): the measurement is broken",
            out.node_cpu_seconds,
            out.received
        );
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
        // Threading off while each interface still polls (a NAPI removed with its program
        // would leave the flag set for the next one), then the programs.
        let sw = &self.c.switch;
        let mut failed = Vec::new();
        for (ns, iface) in [(sw, "sw-n1"), (&self.c.nodes[0], "eth0"), (&self.c.nodes[1], "eth0")] {
            if let Err(e) = napi::unthreaded(ns, iface) {
                failed.push(e.to_string());
            }
        }
        self.ports.clear();
        self.pass = None;
        if let Err(e) = sw.ip(&["link", "del", "gen0"]) {
            failed.push(e.to_string());
        }
        match sw.run(|| XdpPass::attach("sw-n1")) {
            Ok(Ok(pass)) => self.c.wires[1] = Some(pass),
            Ok(Err(e)) => failed.push(e.to_string()),
            Err(e) => failed.push(e.to_string()),
        }
        for node in &self.c.nodes {
            if let Err(e) = napi::set_gro(node, "eth0", false) {
                failed.push(e.to_string());
            }
        }
        // A panic here while unwinding would abort; the rest of the benchmark must know, though.
        for f in failed {
            eprintln!("    warning: restoring the cluster after the forwarding rig: {f}");
        }
    }
}
