//! Load-balancer benchmarks (root needed; run by `cargo xtask bench lb`).
//!
//! 1. Per-packet cost of `skiff_lb` through BPF_PROG_TEST_RUN, with 10, 1k, 10k and 100k frontends
//!    programmed: a new flow (conntrack miss, Maglev pick, two inserts) and an established one
//!    (conntrack hit). The kernel times each run; a run is one packet; the four levels take turns
//!    packet by packet.
//! 2. Programming latency: 10k Services × 10 endpoints handed to the service proxy until every map
//!    is written.
//! 3. Reconcile latency: one endpoint of one Service changes with 10k Services programmed.
//!
//! Output: a Markdown table on stdout (the README's), raw numbers on stderr.

mod common;

use common::{endpoint, vip};

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use skiff_agent::{
    datapath::{Datapath, DatapathConfig, LbCapacity, LogLevel},
    proxy::{ProxyContext, ServiceProxy},
};
use skiff_common::lb::LbConfig;
use skiff_tests::{
    PinDir,
    packet::{Frame, TCP_ACK, TCP_SYN},
};

const LEVELS: [u32; 4] = [10, 1_000, 10_000, 100_000];
const PACKETS: usize = 20_000;
const M_PACKET_BENCH: u32 = 61;

fn load(label: &str, services: u32, m: u32, backends: u32) -> (Datapath, PinDir) {
    let pins = PinDir::new(label).expect("pin dir");
    let lb = LbCapacity {
        config: LbConfig { maglev_m: m, ..LbConfig::DEFAULT },
        max_services: services * 2 + 16,
        max_backends: backends + 16,
        max_ct: 262_144,
        max_affinity: 1024,
        max_frags: 64,
    };
    let config = DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, lb };
    (Datapath::load(&config).expect("load datapath (run as root)"), pins)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A datapath with `services` frontends of 2 backends each, and the frontend packets go to.
fn programmed(services: u32) -> (Datapath, PinDir, SocketAddrV4) {
    let (mut dp, pins) = load(&format!("bench-pkt-{services}"), services, M_PACKET_BENCH, services * 2);
    common::program(&mut dp, services);
    (dp, pins, SocketAddrV4::new(vip(services / 2), 80))
}

/// Median ns per packet at every level, for new and established flows. The levels take turns
/// packet by packet, so the machine's noise lands on all of them alike.
fn per_packet() -> Vec<(u32, f64, f64)> {
    let setups: Vec<(Datapath, PinDir, SocketAddrV4)> = LEVELS.iter().map(|n| programmed(*n)).collect();
    let mut out = vec![0u8; 256];
    let mut new_flow = vec![Vec::with_capacity(PACKETS); LEVELS.len()];
    let mut established = vec![Vec::with_capacity(PACKETS); LEVELS.len()];
    for n in 0..PACKETS {
        let client = SocketAddrV4::new(
            Ipv4Addr::new(10, 244, (n / 250 % 250) as u8, 1 + (n % 250) as u8),
            40000 + (n % 20000) as u16,
        );
        let fixed = SocketAddrV4::new(Ipv4Addr::new(10, 244, 255, 1), 40000);
        for (level, (dp, _, target)) in setups.iter().enumerate() {
            let syn = Frame::tcp(client, *target, TCP_SYN).bytes();
            new_flow[level].push(dp.test_run_lb(&syn, &mut out, 1).expect("run").duration);
            let ack = Frame::tcp(fixed, *target, TCP_ACK).bytes();
            established[level].push(dp.test_run_lb(&ack, &mut out, 1).expect("run").duration);
        }
    }
    LEVELS
        .iter()
        .zip(new_flow.into_iter().zip(established))
        .map(|(n, (new, est))| (*n, median(new).as_nanos() as f64, median(est).as_nanos() as f64))
        .collect()
}

fn k8s_objects(services: u32, per_service: u32) -> Vec<(Service, EndpointSlice)> {
    (0..services)
        .map(|i| {
            let name = format!("s{i}");
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"clusterIP": vip(i).to_string(), "ports": [{"port": 80, "targetPort": 8080}]}
            }))
            .expect("service");
            let endpoints: Vec<_> = (0..per_service)
                .map(|e| serde_json::json!({"addresses": [endpoint(i * per_service + e).to_string()]}))
                .collect();
            let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}-1"), "namespace": "bench", "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints,
            }))
            .expect("slice");
            (svc, slice)
        })
        .collect()
}

fn main() {
    // 1. Per-packet cost by frontend count.
    let rows = per_packet();
    for (services, new, est) in &rows {
        eprintln!("per-packet services={services} new_flow_ns={new} established_ns={est}");
    }
    let (base_new, base_est) = (rows[0].1, rows[0].2);

    // 2. Programming 10k Services × 10 endpoints.
    let objects = k8s_objects(10_000, 10);
    let (mut dp, _pins) = load("bench-prog", 10_000, LbConfig::DEFAULT.maglev_m, 200_100);
    let ctx = ProxyContext { node_name: "bench".into(), ..ProxyContext::default() };
    let mut proxy = ServiceProxy::new(ctx, dp.dataplane());
    let start = Instant::now();
    for (svc, slice) in &objects {
        proxy.sync_service(svc, &[slice]).expect("sync");
    }
    let programming = start.elapsed();
    eprintln!("programming services=10000 endpoints=100000 ms={}", programming.as_millis());

    // 3. One endpoint changes, 10k programmed: replace endpoint 0 of a Service, 50 times.
    let mut reconciles = Vec::new();
    for round in 0..50u32 {
        let (svc, slice) = &objects[(round * 197 % 10_000) as usize];
        let mut changed = slice.clone();
        if let Some(ep) = changed.endpoints.as_mut().and_then(|e| e.first_mut()) {
            ep.addresses = vec![endpoint(200_000 + round).to_string()];
        }
        let start = Instant::now();
        proxy.sync_service(svc, &[&changed]).expect("sync");
        reconciles.push(start.elapsed());
    }
    let reconcile = median(reconciles);
    eprintln!("reconcile_one_endpoint us={}", reconcile.as_micros());

    println!("| measurement | value | goal |");
    println!("| --- | --- | --- |");
    for (services, new, est) in &rows {
        println!(
            "| per packet, {services} frontends: new flow / established | {new:.0} ns ({:.2}x) / {est:.0} ns ({:.2}x) | ≤ 1.2x of 10 |",
            new / base_new,
            est / base_est
        );
    }
    println!("| program 10k Services × 10 endpoints | {} ms | < 1000 ms |", programming.as_millis());
    println!(
        "| reconcile one endpoint change, 10k programmed (median of 50) | {:.2} ms | < 10 ms |",
        reconcile.as_secs_f64() * 1e3
    );
}
