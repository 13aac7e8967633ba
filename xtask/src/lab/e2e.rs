//! `cargo xtask lab e2e` (CI): `up --nodes 2` (which ends with the demo's traffic proof: a pod to
//! the ClusterIP and the outside to the NodePort on both nodes, answered by pods on both nodes);
//! pod-to-pod by pod IP across the nodes and the host reaching a pod; a Job run to completion
//! (`batch.rs`); then each node's agent
//! restarted while traffic flows — new connections through the ClusterIP and both NodePorts, and
//! two TCP connections opened before the restarts — with not one request lost and both
//! connections still echoing; `down`, which checks that nothing is left. Teardown runs whether or not the checks pass.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    batch, demo, down, experiments, kube,
    probe::{self, EchoSession},
    restore, state,
    topology::{self, NodeSpec},
    up,
};
use crate::step::{self, step};

const NODES: u8 = 2;

pub fn run() -> anyhow::Result<()> {
    skiff_tests::require_root()?;
    if state::load()?.is_some() || !down::leftovers().is_empty() {
        bail!("a lab is up or partly there; `cargo xtask lab down` first (e2e needs a fresh one)");
    }
    let result = up::run(NODES, "ebpf").and_then(|lab| {
        let checked = checks();
        if checked.is_err() {
            up::print_log_tails(&lab);
        }
        checked
    });
    let teardown = step("lab down", down::teardown);
    result?;
    teardown?;
    eprintln!(
        "\nlab e2e passed: ClusterIP and NodePort traffic on both nodes, pod-to-pod across nodes, \
         kubectl logs through both agents' HTTPS endpoints, a Job run to completion, \
         backup and restore of the control plane's store, \
         agent restarts without a lost request, nothing left."
    );
    Ok(())
}

fn checks() -> anyhow::Result<()> {
    let (client_ns, client_node) = demo::client_netns()?;
    let pods = kube::pods()?;
    let remote = pods
        .iter()
        .find(|p| p.name.starts_with(demo::DEPLOYMENT) && p.node.as_deref() != Some(client_node.as_str()))
        .and_then(|p| p.ip.clone())
        .context("no echo pod on the other node")?;
    step(&format!("ping {remote} (a pod on the other node) from {client_node}'s client pod"), || {
        let netns = format!("--net={}", client_ns.display());
        step::run(Command::new("nsenter").args([
            &netns,
            "/bin/busybox",
            "ping",
            "-c",
            "3",
            "-W",
            "2",
            &remote,
        ]))
    })?;
    step(&format!("the host reaches {remote} through its route to the pod CIDR"), || {
        step::run(
            Command::new("ping").args(["-c", "2", "-W", "2", &remote]).stdout(std::process::Stdio::null()),
        )
    })?;
    // kubectl logs: the API server reaches each agent's HTTPS endpoint as
    // kube-apiserver-kubelet-client, and the agent asks the API server whether that may.
    for pod in pods.iter().filter(|p| p.name.starts_with(demo::DEPLOYMENT)) {
        let node = pod.node.as_deref().unwrap_or("?");
        step(&format!("kubectl logs {} (through {node}'s agent endpoint)", pod.name), || {
            kube::run(&["logs", &pod.name, "--tail=5"]).map(drop)
        })?;
    }
    batch::job_completes()?;
    restarts_under_traffic(&client_ns)?;
    let nodes: Vec<NodeSpec> = (1..=NODES).map(|index| NodeSpec { index }).collect();
    restore::backup_and_restore(&client_ns, &nodes)
}

/// A traffic path the generator loops over.
struct TrafficPath {
    label: String,
    netns: PathBuf,
    addr: SocketAddr,
}

/// Restarts every agent in turn while requests flow, then checks that none failed.
fn restarts_under_traffic(client_ns: &Path) -> anyhow::Result<()> {
    let vip = demo::cluster_ip(demo::SERVICE)?;
    let ext_ns = PathBuf::from("/run/netns").join(topology::EXT_NS);
    let nodes: Vec<NodeSpec> = (1..=NODES).map(|index| NodeSpec { index }).collect();
    let mut paths = vec![TrafficPath {
        label: format!("pod → ClusterIP {vip}:80"),
        netns: client_ns.to_owned(),
        addr: SocketAddr::from((vip, 80)),
    }];
    for node in &nodes {
        paths.push(TrafficPath {
            label: format!("outside → NodePort {}:{}", node.ip(), demo::NODE_PORT),
            netns: ext_ns.clone(),
            addr: SocketAddr::from((node.ip(), demo::NODE_PORT)),
        });
    }
    let mut sessions =
        step("open long-lived TCP echo connections (pod → ClusterIP, outside → NodePort)", || {
            let mut pod = EchoSession::open(client_ns, SocketAddr::from((vip, demo::ECHO_PORT)))?;
            let mut ext =
                EchoSession::open(&ext_ns, SocketAddr::from((nodes[0].ip(), demo::ECHO_NODE_PORT)))?;
            pod.round_trip(b"before the restarts\n")?;
            ext.round_trip(b"before the restarts\n")?;
            Ok([pod, ext])
        })?;
    let stop = AtomicBool::new(false);
    let (counts, restarted) = std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .iter()
            .map(|p| {
                let stop = &stop;
                s.spawn(move || -> anyhow::Result<(usize, Vec<String>)> {
                    probe::in_netns(&p.netns, || {
                        let (mut ok, mut failed) = (0, Vec::new());
                        while !stop.load(Ordering::Relaxed) {
                            match probe::http_get(p.addr) {
                                Ok(_) => ok += 1,
                                Err(e) => failed.push(format!("{e:#}")),
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        (ok, failed)
                    })
                })
            })
            .collect();
        let restarted = step("restart each agent while the requests flow", || {
            for node in &nodes {
                experiments::restart_agent(node.index)?;
            }
            Ok(())
        });
        stop.store(true, Ordering::Relaxed);
        let counts: Vec<_> =
            workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect();
        (counts, restarted)
    });
    restarted?;
    let mut lost = Vec::new();
    for (path, outcome) in paths.iter().zip(counts) {
        let (ok, failed) = outcome?;
        eprintln!("    {:<40} {ok} requests answered, {} failed", path.label, failed.len());
        if ok == 0 || !failed.is_empty() {
            lost.push(format!("{}: {} failed, e.g. {:?}", path.label, failed.len(), failed.first()));
        }
    }
    step("the connections opened before the restarts still echo", || {
        for s in &mut sessions {
            s.round_trip(b"after the restarts\n")?;
        }
        Ok(())
    })?;
    if !lost.is_empty() {
        bail!("requests were lost during the agent restarts: {}", lost.join("; "));
    }
    Ok(())
}
