//! The first datapath programs, end to end: load the embedded object, attach XDP and TC (tcx) to a
//! veth in a fresh namespace, send real UDP traffic from the peer namespace, and check exact
//! per-CPU counts, the aya-log lines, and that detaching leaves nothing behind.

use std::{
    net::SocketAddrV4,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::programs::{SchedClassifier, TcAttachType};
use skiff_agent::datapath::{Datapath, DatapathConfig, LogLevel, TcDirection};
use skiff_common::{Hook, PacketCounter};
use skiff_tests::{PairTopology, PinDir, traffic};

const IFACE: &str = PairTopology::IFACE;
const DATAGRAMS: usize = 25;
const PAYLOAD: usize = 100;

/// Collects the datapath's log records.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(log::Level, String)>>>);

impl Captured {
    fn count(&self, level: log::Level, prefix: &str) -> usize {
        let lines = self.0.lock().expect("lock");
        lines.iter().filter(|(l, msg)| *l == level && msg.starts_with(prefix)).count()
    }
}

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().expect("lock").push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

struct Run {
    topo: PairTopology,
    _pins: PinDir,
    dp: Datapath,
    logs: aya_log::EbpfLogger<Captured>,
    captured: Captured,
}

/// Loads the datapath at `level`, attaches XDP and TC egress to the server's veth.
fn attach(label: &str, level: LogLevel) -> Run {
    let topo = PairTopology::new(label).expect("topology");
    let pins = PinDir::new(label).expect("pin dir");
    let config = DatapathConfig { pin_dir: pins.path().to_owned(), log_level: level, ..Default::default() };
    let mut dp = Datapath::load(&config).expect("load datapath (root with BPF?)");
    let captured = Captured::default();
    let logs = dp.take_logs(captured.clone()).expect("log reader");
    topo.server
        .run(|| {
            dp.attach_xdp(IFACE)?;
            dp.attach_tc(IFACE, TcDirection::Egress)
        })
        .expect("enter server netns")
        .expect("attach");
    Run { topo, _pins: pins, dp, logs, captured }
}

/// Sends DATAGRAMS echo requests from the client; returns the echoes received.
fn exchange(topo: &PairTopology) -> usize {
    let echo = traffic::UdpServer::echo(&topo.server, SocketAddrV4::new(topo.server_ip, 7007)).expect("echo");
    let answered = traffic::udp_ping(&topo.client, echo.addr(), DATAGRAMS, PAYLOAD, Duration::from_secs(2))
        .expect("ping");
    assert_eq!(echo.stop(), DATAGRAMS as u64, "server echoed a different number of datagrams");
    answered
}

#[test]
fn xdp_and_tc_count_exact_packets_and_bytes_then_detach_cleanly() {
    let Run { topo, _pins, mut dp, mut logs, captured } = attach("count", LogLevel::Debug);
    assert_eq!(exchange(&topo), DATAGRAMS);

    // Requests enter the server through XDP; echoes leave it through TC egress. The topology is
    // quiet (no ARP, no IPv6), so nothing else crosses the wire.
    let frame = (PairTopology::UDP_FRAME_OVERHEAD + PAYLOAD) as u64;
    let expected = PacketCounter { packets: DATAGRAMS as u64, bytes: DATAGRAMS as u64 * frame };
    let counters = dp.counters().expect("read counters");
    assert_eq!(counters.get(Hook::Xdp), expected, "xdp\n{counters}");
    assert_eq!(counters.get(Hook::TcEgress), expected, "tc egress\n{counters}");
    assert_eq!(counters.get(Hook::TcIngress), PacketCounter::default(), "nothing attached at tc ingress");

    // Log records are in the ring buffer before the program returns, so one read sees them all.
    logs.flush();
    assert_eq!(captured.count(log::Level::Debug, "xdp:"), DATAGRAMS);
    assert_eq!(captured.count(log::Level::Debug, "tc-egress:"), DATAGRAMS);

    dp.detach_all().expect("detach");
    let (xdp_left, tcx_left) = topo
        .server
        .run(|| {
            let tcx = SchedClassifier::query_tcx(IFACE, TcAttachType::Egress).expect("query tcx").1;
            tcx.len()
        })
        .map(|tcx| (topo.server.xdp_attached(IFACE).expect("ip link"), tcx))
        .expect("enter server netns");
    assert!(!xdp_left, "an XDP program is still attached");
    assert_eq!(tcx_left, 0, "tcx programs still attached");

    let names = [topo.client.name().to_owned(), topo.server.name().to_owned()];
    drop(topo);
    for name in names {
        assert!(!std::path::Path::new("/run/netns").join(&name).exists(), "netns {name} leaked");
    }
}

#[test]
fn debug_lines_are_off_at_info_level_while_counting_goes_on() {
    let Run { topo, _pins, dp, mut logs, captured } = attach("quiet", LogLevel::Info);
    assert_eq!(exchange(&topo), DATAGRAMS);
    assert_eq!(dp.counters().expect("read").get(Hook::Xdp).packets, DATAGRAMS as u64);
    logs.flush();
    assert_eq!(captured.count(log::Level::Debug, ""), 0, "debug records at info level");
}

#[test]
fn counters_survive_a_reload_through_the_pinned_map() {
    let Run { topo, _pins: pins, dp, .. } = attach("pinned", LogLevel::Off);
    assert_eq!(exchange(&topo), DATAGRAMS);
    drop(dp);
    // A new agent process would do exactly this: load again against the same pin dir.
    let config =
        DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, ..Default::default() };
    let reloaded = Datapath::load(&config).expect("reload");
    assert_eq!(reloaded.counters().expect("read").get(Hook::Xdp).packets, DATAGRAMS as u64);
    assert!(pins.path().join(skiff_common::names::MAP_COUNTERS).exists(), "counters map not pinned");
}

#[test]
fn a_pinned_map_of_another_size_is_refused_not_silently_reused() {
    let pins = PinDir::new("resize").expect("pin dir");
    let config = |max_services| DatapathConfig {
        pin_dir: pins.path().to_owned(),
        log_level: LogLevel::Off,
        lb: skiff_agent::datapath::LbCapacity { max_services, ..Default::default() },
    };
    drop(Datapath::load(&config(64)).expect("first load"));
    let err = Datapath::load(&config(128)).expect_err("a resized pinned map was reused");
    assert!(err.to_string().contains("pinned with"), "{err}");
    Datapath::load(&config(64)).expect("the original size still loads");
}
