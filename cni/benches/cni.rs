//! ADD and DEL latency of skiff-cni over 200 pods, side by side in one run with Debian's
//! reference `ptp` plugin and `host-local` IPAM (also a routed veth per pod) on the same node.
//! Each call is timed as a runtime sees it: process start to exit. `cargo xtask bench cni`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use common::{Node, run_attachment};
use serde_json::{Value, json};
use skiff_tests::NetNs;

const PODS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sorted ADD and DEL durations of `plugin` with `conf` for every pod (all ADDs, then all DELs).
fn measure(
    node: &Node,
    plugin: &str,
    conf: &Value,
    pods: &[NetNs],
    tag: &str,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut timings = ["ADD", "DEL"].map(|command| {
        let mut times: Vec<Duration> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (id, netns) = (format!("{tag}{i}"), pod.path());
                let start = Instant::now();
                let call = run_attachment(&node.ns.path(), plugin, command, &id, Some(&netns), "eth0", conf);
                let took = start.elapsed();
                assert!(call.success, "{plugin} {command} failed: {}", call.output);
                took
            })
            .collect();
        times.sort();
        times
    });
    let dels = std::mem::take(&mut timings[1]);
    (std::mem::take(&mut timings[0]), dels)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let node = Node::new("bench-cni", "10.250.0.0/24", Ipv4Addr::new(192, 168, 60, 1));
    let pods: Vec<NetNs> = (0..PODS).map(|_| NetNs::new("bench-pod").expect("pod namespace")).collect();
    let skiff = measure(&node, common::PLUGIN, &node.conf("1.1.0"), &pods, "s");
    node.assert_clean();
    let ptp_conf = json!({
        "cniVersion": "1.0.0", "name": "reference", "type": "ptp", "ipMasq": false, "mtu": 1400,
        "ipam": {"type": "host-local", "subnet": "10.251.0.0/24", "dataDir": node.data.path().join("host-local")},
    });
    let reference = measure(&node, "/usr/lib/cni/ptp", &ptp_conf, &pods, "r");

    println!("| measurement ({PODS} pods, one at a time) | skiff-cni | reference ptp + host-local | goal |");
    println!("| --- | --- | --- | --- |");
    for (name, s, r, goal) in [
        ("ADD p50", percentile(&skiff.0, 0.5), percentile(&reference.0, 0.5), ""),
        ("ADD p99", percentile(&skiff.0, 0.99), percentile(&reference.0, 0.99), "< 20 ms"),
        ("DEL p50", percentile(&skiff.1, 0.5), percentile(&reference.1, 0.5), ""),
        ("DEL p99", percentile(&skiff.1, 0.99), percentile(&reference.1, 0.99), ""),
    ] {
        let ratio = r.as_secs_f64() / s.as_secs_f64();
        println!("| {name} | {} | {} ({ratio:.1}× skiff's) | {goal} |", ms(s), ms(r));
    }
}
