//! Experiments on a running lab, one command each, usable from scripts (exit status 0 when done,
//! non-zero with one line on stderr when not):
//!
//! - `lab node stop|start <n>`: stop (SIGTERM) or start node n's agent. Its pods keep running and
//!   its datapath keeps forwarding (pinned maps and links); the control plane marks the node
//!   NotReady once its Lease expires (40 s) and evicts its pods after their toleration (300 s).
//! - `lab agent restart <n>`: stop and start the agent, then wait until it has re-listed the
//!   Services and the Node is Ready again. Traffic keeps flowing throughout.
//! - `lab node cut|heal <n>`: take node n's link to the lab bridge down or up again (the node
//!   loses the control plane and every other node, as if its cable were pulled).
//! - `lab shape <n> --rate R [--burst B] [--latency L]` / `--clear`: a token bucket (tbf) on both
//!   directions of node n's link. The kernel has tbf and htb but no netem: rate and queueing only,
//!   no added delay or loss. Frames a node's uplink program sends back out with `XDP_TX` skip the
//!   node's own egress qdisc (as on a real NIC), so the host end's shaping is what limits them.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, bail};

use super::{
    kube, procs,
    state::{self, LabState},
    topology::{self, LAB_DIR, NodeSpec},
    up,
};
use crate::step;

const AGENT_STOP_GRACE: Duration = Duration::from_secs(10);
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);

fn running_lab() -> anyhow::Result<LabState> {
    match state::load()? {
        Some(lab) if lab.ready => Ok(lab),
        Some(_) => bail!("the lab is only partly up; `cargo xtask lab down`, then `up`"),
        None => bail!("no lab is up; start one with `cargo xtask lab up`"),
    }
}

fn node_index(lab: &LabState, n: u8) -> anyhow::Result<usize> {
    lab.node_procs
        .iter()
        .position(|p| p.index == n)
        .with_context(|| format!("the lab has nodes 1..={}, not {n}", lab.nodes))
}

/// Stops node n's agent; returns whether one was running.
pub fn stop_agent(n: u8) -> anyhow::Result<bool> {
    let mut lab = running_lab()?;
    let i = node_index(&lab, n)?;
    let running = lab.node_procs[i].agent_pid.filter(|pid| procs::alive(*pid, LAB_DIR));
    if let Some(pid) = running {
        procs::stop(pid, LAB_DIR, AGENT_STOP_GRACE);
    }
    lab.node_procs[i].agent_pid = None;
    state::save(&lab)?;
    Ok(running.is_some())
}

/// Starts node n's agent (unless one runs) and waits until it is serving again: the Node Ready
/// with a heartbeat newer than the start, and the service proxy's first listing applied.
pub fn start_agent(n: u8) -> anyhow::Result<u32> {
    let mut lab = running_lab()?;
    let i = node_index(&lab, n)?;
    if let Some(pid) = lab.node_procs[i].agent_pid.filter(|pid| procs::alive(*pid, LAB_DIR)) {
        return Ok(pid);
    }
    let node = lab.node_procs[i].spec();
    let log = node.dir().join("agent.log");
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let pid = up::start_agent(&node, &lab.proxy_mode)?;
    lab.node_procs[i].agent_pid = Some(pid);
    state::save(&lab)?;
    up::poll(&format!("{}'s new agent serving", node.name()), AGENT_READY_TIMEOUT, || {
        if !procs::alive(pid, LAB_DIR) {
            bail!("the agent exited (see {})", log.display());
        }
        let text = std::fs::read(&log).unwrap_or_default();
        let fresh = String::from_utf8_lossy(text.get(before as usize..).unwrap_or_default()).into_owned();
        let ready = kube::nodes()?.iter().any(|v| v.name == node.name() && v.ready);
        Ok(ready && fresh.contains("first listing applied"))
    })?;
    Ok(pid)
}

/// `lab agent restart <n>`.
pub fn restart_agent(n: u8) -> anyhow::Result<()> {
    let was = stop_agent(n)?;
    let pid = start_agent(n)?;
    eprintln!(
        "skiff-lab-n{n}: agent {} → pid {pid}, serving again",
        if was { "stopped" } else { "was not running" }
    );
    Ok(())
}

fn host_end(n: u8) -> String {
    format!("{}n{n}", topology::VETH_PREFIX)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    step::run(Command::new("ip").args(args))
}

/// `lab node cut|heal <n>`: node n's link to the bridge down (cut) or up (heal).
pub fn set_link(n: u8, up: bool) -> anyhow::Result<()> {
    let lab = running_lab()?;
    node_index(&lab, n)?;
    ip(&["link", "set", &host_end(n), if up { "up" } else { "down" }])?;
    let node = NodeSpec { index: n };
    eprintln!(
        "{}: link {} ({} {})",
        node.name(),
        if up { "healed" } else { "cut" },
        host_end(n),
        if up { "up" } else { "down" }
    );
    Ok(())
}

/// Token-bucket settings for `lab shape`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShapeArgs {
    /// Node number.
    pub node: u8,
    /// Rate in tc's units (e.g. `10mbit`, `500kbit`, `1gbit`).
    #[arg(long, required_unless_present = "clear")]
    pub rate: Option<String>,
    /// Bucket size (tc's units).
    #[arg(long, default_value = "32kb")]
    pub burst: String,
    /// Longest a packet may wait in the bucket before it is dropped.
    #[arg(long, default_value = "50ms")]
    pub latency: String,
    /// Remove the shaping instead.
    #[arg(long, conflicts_with = "rate")]
    pub clear: bool,
}

/// `lab shape`: tbf on node n's uplink (what it sends) and on the host end (what it receives).
pub fn shape(args: &ShapeArgs) -> anyhow::Result<()> {
    let lab = running_lab()?;
    node_index(&lab, args.node)?;
    let node = NodeSpec { index: args.node };
    let ns = node.name();
    let host = host_end(args.node);
    let sides: [(Option<&str>, &str); 2] = [(Some(ns.as_str()), "eth0"), (None, host.as_str())];
    for (netns, dev) in sides {
        let mut cmd: Vec<&str> = Vec::new();
        if let Some(ns) = netns {
            cmd.extend(["-n", ns]);
        }
        if args.clear {
            cmd.extend(["qdisc", "del", "dev", dev, "root"]);
            // Nothing to clear is fine.
            let _ = Command::new("tc").args(&cmd).stderr(std::process::Stdio::null()).status();
            continue;
        }
        let rate = args.rate.as_deref().context("--rate")?;
        cmd.extend(["qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate]);
        cmd.extend(["burst", &args.burst, "latency", &args.latency]);
        step::run(Command::new("tc").args(&cmd)).with_context(|| format!("shaping {dev}"))?;
    }
    match &args.rate {
        Some(rate) if !args.clear => eprintln!(
            "{ns}: both directions shaped to {rate} (tbf burst {}, latency {})",
            args.burst, args.latency
        ),
        _ => eprintln!("{ns}: shaping removed"),
    }
    Ok(())
}
