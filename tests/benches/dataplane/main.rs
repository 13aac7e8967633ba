//! `cargo xtask bench dataplane [--quick]`: the Service dataplane, eBPF against iptables
//! (kube-proxy's rule layout) against the direct pod-IP floor, in one run on one machine.
//!
//! For each mode a fresh cluster (`cluster.rs`: two node namespaces wired by skiff-cni, an outside
//! client, skiff-echo in the backends). For each Service count N, a fresh dataplane programmed by
//! the real service proxy with N ClusterIP Services (plus an iperf3 and two NodePort Services),
//! then:
//! - programming latency: from handing the proxy the N Services to the last one answering;
//! - TCP_RR (one kept-alive connection) and TCP_CRR (a connection per request) latency through the
//!   last-programmed Service and, interleaved with it, directly to its pod (the floor);
//! - CPU time of the whole machine per 100k TCP_CRR, both ways;
//!
//! and at the smallest N: iperf3 through the Service and direct, and NodePort from the outside
//! through node 1 to a backend on node 2 (TCP_RR, TCP_CRR, and forwarding per core of node 1's
//! receive thread: `forward.rs`). Writes `target/bench/dataplane.{json,md,svg}` and prints the
//! table.

mod cluster;
mod forward;
mod load;
mod report;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::{Duration, Instant},
};

use cluster::{
    Cluster, ECHO_PORT, IPERF_PORT, NODE_IPS, NODE_PORT_TCP, NODE_PORT_UDP, SINK_PORT, service, vip,
};
use report::{NodePort, Results, Row, Throughput};
use skiff_agent::proxy::mode::ProxyMode;

struct Plan {
    counts: &'static [u32],
    rr: usize,
    crr: usize,
    iperf_seconds: u32,
    flood_seconds: f64,
    /// Rounds the Service and direct measurements alternate in (slow drift hits both alike).
    rounds: usize,
}

const FULL: Plan = Plan {
    counts: &[10, 1_000, 10_000, 50_000],
    rr: 20_000,
    crr: 8_000,
    iperf_seconds: 5,
    flood_seconds: 4.0,
    rounds: 8,
};
const QUICK: Plan =
    Plan { counts: &[10, 100], rr: 1_000, crr: 200, iperf_seconds: 1, flood_seconds: 1.0, rounds: 2 };

/// Service indexes beyond any N, for the Services every run has.
const IPERF_SVC: u32 = 60_000;
const NODEPORT_TCP_SVC: u32 = 60_001;
const NODEPORT_UDP_SVC: u32 = 60_002;

fn progress(msg: &str) {
    eprintln!("    {msg}");
}

/// N Services: the first N-1 over two of b1…b4 each, the last (the one measured) over b1 alone;
/// then the iperf3 Service and the two NodePort Services toward node 2's pods.
fn services(
    c: &Cluster,
    n: u32,
) -> Vec<(k8s_openapi::api::core::v1::Service, k8s_openapi::api::discovery::v1::EndpointSlice)> {
    let local: Vec<(Ipv4Addr, &str)> = c.local.iter().map(|p| (p.ip, "node1")).collect();
    let mut out: Vec<_> = (0..n - 1)
        .map(|i| {
            let a = local[(i as usize) % 4];
            let b = local[(i as usize + 1) % 4];
            service(i, ECHO_PORT, ECHO_PORT, "TCP", &[a, b], None)
        })
        .collect();
    out.push(service(n - 1, ECHO_PORT, ECHO_PORT, "TCP", &[local[0]], None));
    out.push(service(IPERF_SVC, IPERF_PORT, IPERF_PORT, "TCP", &[local[0]], None));
    let remote: Vec<(Ipv4Addr, &str)> = c.remote.iter().map(|p| (p.ip, "node2")).collect();
    out.push(service(NODEPORT_TCP_SVC, ECHO_PORT, ECHO_PORT, "TCP", &remote, Some(NODE_PORT_TCP)));
    out.push(service(NODEPORT_UDP_SVC, SINK_PORT, SINK_PORT, "UDP", &remote[..1], Some(NODE_PORT_UDP)));
    out
}

/// Alternates `measure(target)` between the Service and the direct address in `rounds` chunks.
fn interleaved(
    rounds: usize,
    total: usize,
    svc: SocketAddrV4,
    direct: SocketAddrV4,
    mut measure: impl FnMut(SocketAddrV4, usize) -> Vec<Duration>,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.extend(measure(svc, total / rounds));
        b.extend(measure(direct, total / rounds));
    }
    (a, b)
}

/// Polls `to` from `ns` every 2 ms (fine enough to time programming by) until it answers; fails
/// once `PROGRAMMING_LIMIT` has passed since `start`.
fn await_answer(ns: &skiff_tests::NetNs, to: SocketAddrV4, start: Instant, what: &str) {
    while !load::answers(ns, to) {
        assert!(start.elapsed() < cluster::PROGRAMMING_LIMIT, "{what} {to} never answered");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn mode_name(mode: ProxyMode) -> &'static str {
    match mode {
        ProxyMode::Ebpf => "ebpf",
        ProxyMode::Iptables => "iptables",
    }
}

fn run_mode(mode: ProxyMode, plan: &Plan, bins: &std::path::Path, results: &mut Results) {
    let name = mode_name(mode);
    eprintln!("==> {name}: building the cluster");
    let mut c = Cluster::new(mode, bins);
    for &n in plan.counts {
        eprintln!("==> {name}: {n} Services");
        c.fresh_dataplane(0);
        let svcs = services(&c, n);
        let target = SocketAddrV4::new(vip(n - 1), ECHO_PORT);
        let direct = SocketAddrV4::new(c.local[0].ip, ECHO_PORT);
        let start = Instant::now();
        c.program(0, &svcs);
        await_answer(&c.client.ns, target, start, &format!("{name}: Service"));
        let programming_ms = start.elapsed().as_secs_f64() * 1e3;
        progress(&format!("programmed in {programming_ms:.0} ms"));

        let (rr_vip, rr_direct) =
            interleaved(plan.rounds, plan.rr, target, direct, |to, k| load::tcp_rr(&c.client.ns, to, k));
        progress("TCP_RR done");
        let (mut cpu_vip, mut cpu_direct) = (0u64, 0u64);
        let (mut crr_vip, mut crr_direct) = (Vec::new(), Vec::new());
        for _ in 0..plan.rounds {
            for (to, samples, cpu) in
                [(target, &mut crr_vip, &mut cpu_vip), (direct, &mut crr_direct, &mut cpu_direct)]
            {
                let ticks = load::Ticks::now();
                samples.extend(load::tcp_crr(&c.client.ns, to, plan.crr / plan.rounds));
                *cpu += load::Ticks::now().since(ticks).busy;
            }
        }
        progress("TCP_CRR done");
        let per_100k = |ticks: u64, count: usize| ticks as f64 * 10.0 / count as f64 * 100_000.0;
        results.rows.push(Row {
            mode: name,
            services: n,
            programming_ms,
            cpu_ms_per_100k_vip: per_100k(cpu_vip, crr_vip.len()),
            cpu_ms_per_100k_direct: per_100k(cpu_direct, crr_direct.len()),
            rr_vip: load::Percentiles::of(rr_vip),
            rr_direct: load::Percentiles::of(rr_direct),
            crr_vip: load::Percentiles::of(crr_vip),
            crr_direct: load::Percentiles::of(crr_direct),
        });

        if n == plan.counts[0] {
            let svc = SocketAddrV4::new(vip(IPERF_SVC), IPERF_PORT);
            let vip_gbps = load::iperf3(&c.client.ns, svc, plan.iperf_seconds);
            let direct_gbps =
                load::iperf3(&c.client.ns, SocketAddrV4::new(c.local[0].ip, IPERF_PORT), plan.iperf_seconds);
            progress(&format!("iperf3: {vip_gbps:.1} Gbit/s through the Service, {direct_gbps:.1} direct"));
            results.throughput.push(Throughput { mode: name, vip_gbps, direct_gbps });
            results.nodeport.push(nodeport(&mut c, name, plan));
        }
    }
}

/// NodePort from the outside through node 1 to a backend on node 2: TCP_RR and TCP_CRR latency,
/// then forwarding per core (generated UDP frames; see `forward`), beside node 1 merely routing.
fn nodeport(c: &mut Cluster, mode: &'static str, plan: &Plan) -> NodePort {
    let np = SocketAddrV4::new(NODE_IPS[0], NODE_PORT_TCP);
    let rr = load::tcp_rr(&c.ext, np, plan.rr / 2);
    let crr = load::tcp_crr(&c.ext, np, plan.crr / 2);
    let sink = SocketAddrV4::new(c.remote[0].ip, SINK_PORT);
    let np = SocketAddrV4::new(NODE_IPS[0], NODE_PORT_UDP);
    let rig = forward::Rig::new(c, forward::Polling::Gro);
    let flood = rig.run(np, plan.flood_seconds);
    let routed = rig.run(sink, plan.flood_seconds);
    drop(rig);
    // iptables mode's other way of polling: GRO skipped (useless for forwarded UDP).
    let flood_pass_program = (c.mode == ProxyMode::Iptables).then(|| {
        let rig = forward::Rig::new(c, forward::Polling::PassProgram);
        rig.run(np, plan.flood_seconds)
    });
    let runs = [
        ("NodePort", Some(&flood)),
        ("routed", Some(&routed)),
        ("NodePort, GRO skipped", flood_pass_program.as_ref()),
    ];
    for (what, f) in runs.into_iter().filter_map(|(w, f)| Some((w, f?))) {
        progress(&format!(
            "{what} to node 2: {:.0} k forwarded per node-1 core ({:.0} % busy), {:.0} kpps; {} received ({} with the ring full), {} forwarded ({} with the link full), {} delivered; {:.2} s of node 1's CPU",
            f.per_core() / 1e3,
            f.busy() * 100.0,
            f.pps() / 1e3,
            f.received,
            f.ring_full,
            f.forwarded,
            f.link_full,
            f.delivered,
            f.node_cpu_seconds
        ));
    }
    NodePort {
        mode,
        rr: load::Percentiles::of(rr),
        crr: load::Percentiles::of(crr),
        flood,
        flood_pass_program,
        routed,
    }
}

/// `--nodeport`: the NodePort measurements alone, on a cluster with the smallest N of Services
/// (for working on the north-south path without the minutes the rest takes).
fn nodeport_alone(mode: ProxyMode, plan: &Plan, bins: &std::path::Path) -> NodePort {
    let name = mode_name(mode);
    eprintln!("==> {name}: building the cluster (NodePort only)");
    let mut c = Cluster::new(mode, bins);
    c.fresh_dataplane(0);
    let svcs = services(&c, plan.counts[0]);
    c.program(0, &svcs);
    let np = SocketAddrV4::new(NODE_IPS[0], NODE_PORT_TCP);
    await_answer(&c.ext, np, Instant::now(), &format!("{name}: NodePort"));
    nodeport(&mut c, name, plan)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let plan = if quick { QUICK } else { FULL };
    let bins = PathBuf::from(
        std::env::var("SKIFF_BIN_DIR").expect("SKIFF_BIN_DIR (cargo xtask bench dataplane sets it)"),
    );
    skiff_tests::require_root().expect("the dataplane benchmark needs root");
    let mut results = Results {
        machine: report::Machine::read(),
        quick,
        rows: Vec::new(),
        throughput: Vec::new(),
        nodeport: Vec::new(),
    };
    let nodeport_only = std::env::args().any(|a| a == "--nodeport");
    for mode in [ProxyMode::Ebpf, ProxyMode::Iptables] {
        if nodeport_only {
            results.nodeport.push(nodeport_alone(mode, &plan, &bins));
        } else {
            run_mode(mode, &plan, &bins, &mut results);
        }
    }
    let dir = PathBuf::from(std::env::var("SKIFF_BENCH_OUT").unwrap_or_else(|_| "target/bench".into()));
    std::fs::create_dir_all(&dir).expect("output dir");
    std::fs::write(dir.join("dataplane.json"), serde_json::to_string_pretty(&results).expect("json"))
        .expect("json");
    if nodeport_only {
        // No Service-count rows to chart or tabulate: the progress lines and the JSON are it.
        return;
    }
    let table = results.markdown();
    std::fs::write(dir.join("dataplane.md"), &table).expect("md");
    std::fs::write(dir.join("dataplane.svg"), results.svg()).expect("svg");
    print!("{table}");
}
