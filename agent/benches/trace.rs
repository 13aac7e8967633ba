//! What tracing costs on the packet path (root needed; run by `cargo xtask bench trace`).
//!
//! Four datapaths with 1,000 frontends each, measured side by side through BPF_PROG_TEST_RUN,
//! taking turns packet by packet so the machine's noise lands on all alike:
//! - **compiled out**: loaded with `LbConfig::tracing = 0`; the verifier sees a constant and
//!   removes the trace path, so this is the program without tracing;
//! - **in, off**: the default: tracing compiled in, no session (the single check);
//! - **on, unrelated**: a session whose filter matches none of the traffic;
//! - **on, matching**: a session that reports every packet (the ring is drained between runs).
//!
//! Each for a new flow (conntrack miss, Maglev pick, inserts) and an established one.
//! Output: a Markdown table on stdout (the README's), raw numbers on stderr.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use skiff_agent::{
    datapath::{Datapath, DatapathConfig, LbCapacity, LogLevel},
    inspect::trace::{Filter, Session},
};
use skiff_common::lb::LbConfig;
use skiff_tests::{
    PinDir,
    packet::{Frame, TCP_ACK, TCP_SYN},
};

const SERVICES: u32 = 1_000;
const PACKETS: usize = 20_000;
const M: u32 = 61;

struct Setup {
    name: &'static str,
    dp: Datapath,
    pins: PinDir,
    session: Option<Session>,
    new_flow: Vec<Duration>,
    established: Vec<Duration>,
}

fn setup(name: &'static str, label: &str, tracing: u32, filter: Option<Filter>) -> Setup {
    let pins = PinDir::new(label).expect("pin dir");
    let lb = LbCapacity {
        config: LbConfig { maglev_m: M, tracing, ..LbConfig::DEFAULT },
        max_services: SERVICES * 2 + 16,
        max_backends: SERVICES * 2 + 16,
        max_ct: 262_144,
        max_affinity: 1024,
        max_frags: 64,
    };
    let config = DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, lb };
    let mut dp = Datapath::load(&config).expect("load datapath (run as root)");
    common::program(&mut dp, SERVICES);
    let session = filter.map(|f| Session::start(pins.path(), &f).expect("trace session"));
    Setup {
        name,
        dp,
        pins,
        session,
        new_flow: Vec::with_capacity(PACKETS),
        established: Vec::with_capacity(PACKETS),
    }
}

/// Median and mean of the middle half of one configuration's runs, in ns.
type Summary = (f64, f64);

/// Median and the mean of the middle half, in ns.
fn summary(mut v: Vec<Duration>) -> Summary {
    v.sort();
    let n = v.len();
    let mid = &v[n / 4..n - n / 4];
    let trimmed = mid.iter().map(|d| d.as_nanos() as f64).sum::<f64>() / mid.len() as f64;
    (v[n / 2].as_nanos() as f64, trimmed)
}

fn main() {
    let unrelated = Filter { port: Some(9), ..Filter::default() };
    let mut setups = vec![
        setup("compiled out", "bench-trace-out", 0, None),
        setup("in, off", "bench-trace-off", 1, None),
        setup("on, unrelated traffic", "bench-trace-other", 1, Some(unrelated)),
        setup("on, every packet reported", "bench-trace-all", 1, Some(Filter::default())),
    ];
    let target = SocketAddrV4::new(common::vip(SERVICES / 2), 80);
    let fixed = SocketAddrV4::new(Ipv4Addr::new(10, 244, 255, 1), 40000);
    let ack = Frame::tcp(fixed, target, TCP_ACK).bytes();
    let mut out = vec![0u8; 256];
    for n in 0..PACKETS {
        let client = SocketAddrV4::new(
            Ipv4Addr::new(10, 244, (n / 250 % 250) as u8, 1 + (n % 250) as u8),
            40000 + (n % 20000) as u16,
        );
        let syn = Frame::tcp(client, target, TCP_SYN).bytes();
        // Each round starts with another configuration, so none is always first (cold) or last.
        let count = setups.len();
        for k in 0..count {
            let s = &mut setups[(n + k) % count];
            s.new_flow.push(s.dp.test_run_lb(&syn, &mut out, 1).expect("run").duration);
            s.established.push(s.dp.test_run_lb(&ack, &mut out, 1).expect("run").duration);
        }
        if n % 1000 == 999 {
            for session in setups.iter_mut().filter_map(|s| s.session.as_mut()) {
                while session.next(Duration::ZERO).expect("drain").is_some() {}
            }
        }
    }
    let rows: Vec<(&str, Summary, Summary)> = setups
        .into_iter()
        .map(|s| {
            let _ = (&s.pins, &s.session);
            (s.name, summary(s.new_flow), summary(s.established))
        })
        .collect();
    for (name, new, est) in &rows {
        eprintln!(
            "trace-cost config={name:?} new_median_ns={} new_trimmed_ns={:.1} est_median_ns={} est_trimmed_ns={:.1}",
            new.0, new.1, est.0, est.1
        );
    }
    let (base_new, base_est) = (rows[0].1.1, rows[0].2.1);
    println!(
        "| tracing | new flow (ns, mean of middle half) | established (ns) | ratio to compiled out | goal |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (i, (name, new, est)) in rows.iter().enumerate() {
        let goal = if i == 1 { "≤ 1.02x" } else { "" };
        println!(
            "| {name} | {:.0} | {:.0} | {:.3}x / {:.3}x | {goal} |",
            new.1,
            est.1,
            new.1 / base_new,
            est.1 / base_est
        );
    }
}
