//! `cargo xtask lab status`: the nodes (Ready, pod CIDR), their agents and containerds (alive),
//! and the pods on each node, from the API.

use anyhow::Context as _;

use super::{
    kube, procs,
    state::{self, LabState},
    topology::{self, LAB_DIR, NodeSpec},
};

pub fn run() -> anyhow::Result<()> {
    let Some(lab) = state::load()? else {
        println!("No lab is up (no {}). Start one with `cargo xtask lab up`.", state::path().display());
        return Ok(());
    };
    let control = lab.control_pid.is_some_and(|pid| procs::alive(pid, LAB_DIR));
    println!(
        "skiff-control  {}  pid {}  {}",
        topology::api_address(),
        lab.control_pid.map_or("-".into(), |p| p.to_string()),
        if control { "running" } else { "NOT RUNNING" }
    );
    let nodes = kube::nodes().unwrap_or_default();
    let pods = kube::pods().unwrap_or_default();
    println!(
        "
{:<14} {:<13} {:<7} {:<15} {:<16} {:<16} PODS",
        "NODE", "IP", "READY", "POD CIDR", "AGENT", "CONTAINERD"
    );
    for p in &lab.node_procs {
        let spec = p.spec();
        let view = nodes.iter().find(|n| n.name == spec.name());
        let on_node = pods.iter().filter(|pod| pod.node.as_deref() == Some(spec.name().as_str())).count();
        println!(
            "{:<14} {:<13} {:<7} {:<15} {:<16} {:<16} {}",
            spec.name(),
            spec.ip(),
            view.map_or("?", |v| if v.ready { "True" } else { "False" }),
            view.and_then(|v| v.pod_cidr.clone()).unwrap_or_else(|| "-".into()),
            pid_state(p.agent_pid),
            pid_state(p.containerd_pid),
            on_node
        );
    }
    if !pods.is_empty() {
        println!("\n{:<12} {:<36} {:<14} {:<10} IP", "NAMESPACE", "POD", "NODE", "PHASE");
        for pod in &pods {
            println!(
                "{:<12} {:<36} {:<14} {:<10} {}",
                pod.namespace,
                pod.name,
                pod.node.as_deref().unwrap_or("-"),
                pod.phase,
                pod.ip.as_deref().unwrap_or("-")
            );
        }
    }
    if !control {
        println!(
            "\nskiff-control is not running: see {LAB_DIR}/control.log; `cargo xtask lab down` cleans up."
        );
    }
    Ok(())
}

fn pid_state(pid: Option<u32>) -> String {
    match pid {
        Some(pid) if procs::alive(pid, LAB_DIR) => format!("{pid} alive"),
        Some(pid) => format!("{pid} DEAD"),
        None => "-".into(),
    }
}

/// Whether skiff-control and every node's containerd and agent are still running.
pub fn all_alive(lab: &LabState) -> bool {
    let alive = |pid: Option<u32>| pid.is_some_and(|p| procs::alive(p, LAB_DIR));
    alive(lab.control_pid) && lab.node_procs.iter().all(|p| alive(p.agent_pid) && alive(p.containerd_pid))
}

/// What `up` prints at the end: nodes, addresses, kubeconfig, what to try next.
pub fn summary(lab: &LabState) -> anyhow::Result<()> {
    let nodes = kube::nodes().context("listing the Nodes")?;
    println!("\n{:<14} {:<13} {:<7} POD CIDR", "NODE", "IP", "READY");
    for p in &lab.node_procs {
        let spec = p.spec();
        let view = nodes.iter().find(|n| n.name == spec.name());
        println!(
            "{:<14} {:<13} {:<7} {}",
            spec.name(),
            spec.ip(),
            view.map_or("?", |v| if v.ready { "True" } else { "False" }),
            view.and_then(|v| v.pod_cidr.clone()).unwrap_or_else(|| "-".into())
        );
    }
    let kubeconfig = topology::kubeconfig();
    let n1 = NodeSpec { index: 1 }.ip();
    println!(
        "\nAPI server  https://{api}   kubeconfig  {kc}\n\
         outside     ip netns exec {ext} … ({ext_ip})   logs  {LAB_DIR}/control.log, {LAB_DIR}/nK/agent.log\n\n\
         Next:\n  \
         export KUBECONFIG={kc}\n  \
         kubectl get pods -o wide                     # the demo: echo pods on every node, lab-client\n  \
         kubectl get svc,endpointslices\n  \
         ip netns exec {ext} busybox wget -qO- http://{n1}:{np}/      # NodePort from outside\n  \
         {skiff} svc list {node1}          # node 1's frontends, backends, counters\n  \
         {skiff} trace --svc default/echo {node1}   # its packet path, live\n  \
         {skiff} ct list {node1}           # node 1's conntrack\n  \
         cargo xtask lab agent restart 1              # traffic keeps flowing\n  \
         cargo xtask lab status\n  \
         cargo xtask lab down",
        api = topology::api_address(),
        kc = kubeconfig.display(),
        ext = topology::EXT_NS,
        ext_ip = topology::EXT_IP,
        np = super::demo::NODE_PORT,
        skiff = topology::bin_dir().join("skiff").display(),
        node1 = format!(
            "--pin-dir {} --agent-socket {}",
            NodeSpec { index: 1 }.pin_dir().display(),
            NodeSpec { index: 1 }.status_socket().display()
        ),
    );
    Ok(())
}
