//! The load: request/response over one kept-alive connection (TCP_RR) and over a new connection
//! each (TCP_CRR) against skiff-echo's TCP echo, a UDP flood into a counting sink, iperf3, and the
//! CPU time the whole machine spent meanwhile (from /proc/stat: every core, every context, so the
//! datapath's softirq work counts wherever it ran).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpStream, UdpSocket},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde::Serialize;
use skiff_tests::NetNs;

const TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST: [u8; 64] = [b'x'; 64];

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub samples: usize,
}

impl Percentiles {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |p: f64| {
            let i = (((samples.len() - 1) as f64) * p).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        Percentiles { p50: at(0.50), p99: at(0.99), p999: at(0.999), samples: samples.len() }
    }
}

fn round_trip(conn: &mut TcpStream) -> std::io::Result<()> {
    conn.write_all(&REQUEST)?;
    let mut back = [0u8; 64];
    conn.read_exact(&mut back)
}

/// `n` request/responses of 64 bytes over one connection to `to`, from inside `ns`.
pub fn tcp_rr(ns: &NetNs, to: SocketAddrV4, n: usize) -> Vec<Duration> {
    ns.run(move || {
        let mut conn = TcpStream::connect_timeout(&to.into(), TIMEOUT).expect("connect");
        conn.set_nodelay(true).expect("nodelay");
        conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        // Warm the path (conntrack, caches) before timing.
        for _ in 0..100 {
            round_trip(&mut conn).expect("warm-up");
        }
        (0..n)
            .map(|_| {
                let start = Instant::now();
                round_trip(&mut conn).expect("round trip");
                start.elapsed()
            })
            .collect()
    })
    .expect("netns thread")
}

/// `n` × (connect, one 64-byte request/response, close) to `to`, from inside `ns`.
pub fn tcp_crr(ns: &NetNs, to: SocketAddrV4, n: usize) -> Vec<Duration> {
    ns.run(move || {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let mut conn = TcpStream::connect_timeout(&to.into(), TIMEOUT).expect("connect");
                conn.set_nodelay(true).expect("nodelay");
                conn.set_read_timeout(Some(TIMEOUT)).expect("timeout");
                round_trip(&mut conn).expect("round trip");
                drop(conn);
                start.elapsed()
            })
            .collect()
    })
    .expect("netns thread")
}

/// Whether a TCP echo through `to` works from `ns` right now.
pub fn answers(ns: &NetNs, to: SocketAddrV4) -> bool {
    ns.run(move || {
        let Ok(mut conn) = TcpStream::connect_timeout(&to.into(), Duration::from_millis(200)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        round_trip(&mut conn).is_ok()
    })
    .unwrap_or(false)
}

/// CPU time of the whole machine so far, in clock ticks (1/100 s).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ticks {
    /// user, nice, system, irq, softirq, steal: everything but idle.
    pub busy: u64,
    /// softirq alone: where the kernel processes received packets (XDP, bridging, forwarding,
    /// netfilter, delivery to sockets), whichever process it interrupted.
    pub softirq: u64,
}

impl Ticks {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let cpu = stat.lines().next().expect("cpu line");
        // user nice system idle iowait irq softirq steal
        let f: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        Ticks { busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7), softirq: at(6) }
    }

    pub fn since(self, start: Ticks) -> Ticks {
        Ticks { busy: self.busy - start.busy, softirq: self.softirq - start.softirq }
    }
}

/// What a UDP flood did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Flood {
    pub sent: u64,
    pub received: u64,
    pub seconds: f64,
    /// Busy CPU seconds of the whole machine meanwhile, and of them in softirq.
    pub cpu_seconds: f64,
    pub softirq_seconds: f64,
}

impl Flood {
    /// Datagrams delivered per second.
    pub fn pps(&self) -> f64 {
        self.received as f64 / self.seconds
    }

    /// Datagrams delivered per busy CPU second (sender, datapath and sink together).
    pub fn pps_per_core(&self) -> f64 {
        self.received as f64 / self.cpu_seconds.max(0.01)
    }

    /// Datagrams delivered per softirq CPU second: the forwarding path's own rate per core (the
    /// sender's and the sink's system calls are not in softirq).
    pub fn pps_per_softirq_core(&self) -> f64 {
        self.received as f64 / self.softirq_seconds.max(0.01)
    }
}

/// Sends 64-byte datagrams from `from` to `to` for `seconds` as fast as one thread can, counting
/// what a sink bound at `sink` (in `sink_ns`) receives.
pub fn udp_flood(from: &NetNs, to: SocketAddrV4, sink_ns: &NetNs, sink: SocketAddrV4, seconds: f64) -> Flood {
    let stop = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let socket = sink_ns.run(move || UdpSocket::bind(sink)).expect("sink thread").expect("bind sink");
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let mut flood = Flood::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if socket.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let sender = from.run(move || UdpSocket::bind("0.0.0.0:0")).expect("sender thread").expect("bind");
        sender.connect(to).expect("connect");
        let ticks = Ticks::now();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            for _ in 0..64 {
                if sender.send(&REQUEST).is_ok() {
                    sent += 1;
                }
            }
        }
        flood.seconds = start.elapsed().as_secs_f64();
        // Let the last datagrams land.
        std::thread::sleep(Duration::from_millis(200));
        let used = Ticks::now().since(ticks);
        flood.cpu_seconds = used.busy as f64 / 100.0;
        flood.softirq_seconds = used.softirq as f64 / 100.0;
        flood.sent = sent;
        stop.store(true, Ordering::Relaxed);
    });
    flood.received = received.load(Ordering::Relaxed);
    flood
}

/// iperf3 from `ns` to `to` for `seconds`: received Gbit/s.
pub fn iperf3(ns: &NetNs, to: SocketAddrV4, seconds: u32) -> f64 {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "iperf3", "-J", "-c", &to.ip().to_string()])
        .args(["-p", &to.port().to_string(), "-t", &seconds.to_string()])
        .output()
        .expect("iperf3");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let bps = json["end"]["sum_received"]["bits_per_second"].as_f64();
    bps.unwrap_or_else(|| panic!("iperf3 to {to} failed: {}", String::from_utf8_lossy(&out.stdout))) / 1e9
}
