//! The load: request/response over one kept-alive connection (TCP_RR) and over a new connection
//! each (TCP_CRR) against skiff-echo's TCP echo, iperf3, and the CPU time the whole machine spent
//! meanwhile (from /proc/stat: every core, every context, so the datapath's softirq work counts
//! wherever it ran). NodePort forwarding has its own module, `forward`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpStream},
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
}

impl Ticks {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let cpu = stat.lines().next().expect("cpu line");
        // user nice system idle iowait irq softirq steal
        let f: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        Ticks { busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7) }
    }

    pub fn since(self, start: Ticks) -> Ticks {
        Ticks { busy: self.busy - start.busy }
    }
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
