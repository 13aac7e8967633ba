//! `cargo xtask lab`: a multi-node skiff cluster on this machine.
//!
//! `up` builds the binaries and starts skiff-control on a host bridge and N nodes, each a network
//! namespace with its own containerd and `skiff-agent run`; `status` shows it; `down` removes all
//! of it and checks that nothing is left. `node`, `agent` and `shape` are experiments on a running
//! lab (`experiments.rs`); `up` ends with the demo and its traffic proof (`demo.rs`). `e2e` is CI's
//! end-to-end run (up, traffic, an agent restart under traffic, down) and `smoke` the datapath's
//! counter programs in a namespace pair.
//! The layout is in `topology.rs`; what runs where is recorded in `state.json` (`state.rs`).

mod batch;
mod demo;
mod down;
mod e2e;
mod experiments;
mod kube;
mod probe;
mod procs;
mod restore;
mod smoke;
mod state;
mod status;
mod topology;
mod up;

use clap::Subcommand;

pub use smoke::{SmokeArgs, run as smoke};

/// CI's end-to-end run of the lab.
pub fn e2e() -> anyhow::Result<()> {
    e2e::run()
}

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start the lab: skiff-control and N nodes (namespaces, containerd, skiff-agent); does
    /// nothing when a lab is up already.
    Up {
        /// Number of nodes (1-9).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
        nodes: u8,
        /// The agents' Service dataplane: `ebpf`, or `iptables` (kube-proxy's rule layout).
        #[arg(long, default_value = "ebpf", value_parser = ["ebpf", "iptables"])]
        proxy_mode: String,
    },
    /// Nodes, agents and pods of the running lab.
    Status,
    /// Remove everything `up` created, then check that nothing is left.
    Down,
    /// CI's end-to-end run: `up --nodes 2`, a pod on each node, traffic between them, `down`.
    E2e,
    /// The datapath's counter programs in a namespace pair with real traffic.
    Smoke(SmokeArgs),
    /// Experiments on a node: stop or start its agent, cut or heal its link.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Experiments on an agent: `restart <n>` (waits until it serves again).
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Shape a node's link (tbf, both directions): `shape <n> --rate 10mbit`, `shape <n> --clear`.
    Shape(experiments::ShapeArgs),
}

#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Stop the node's agent (SIGTERM); pods and the datapath keep running.
    Stop { node: u8 },
    /// Start the node's agent and wait until it serves (Node Ready, Services listed).
    Start { node: u8 },
    /// Take the node's link to the lab bridge down.
    Cut { node: u8 },
    /// Bring the node's link back up.
    Heal { node: u8 },
}

#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Stop and start the node's agent, waiting until the new one serves.
    Restart { node: u8 },
}

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    match &args.command {
        LabCommand::Up { nodes, proxy_mode } => up::run(*nodes, proxy_mode).map(drop),
        LabCommand::Status => status::run(),
        LabCommand::Down => down::run(),
        LabCommand::E2e => e2e::run(),
        LabCommand::Smoke(smoke) => smoke::run(smoke),
        LabCommand::Node { action } => match action {
            NodeAction::Stop { node } => experiments::stop_agent(*node).map(|was| {
                eprintln!("skiff-lab-n{node}: agent {}", if was { "stopped" } else { "was not running" });
            }),
            NodeAction::Start { node } => experiments::start_agent(*node).map(|pid| {
                eprintln!("skiff-lab-n{node}: agent pid {pid}, serving");
            }),
            NodeAction::Cut { node } => experiments::set_link(*node, false),
            NodeAction::Heal { node } => experiments::set_link(*node, true),
        },
        LabCommand::Agent { action: AgentAction::Restart { node } } => experiments::restart_agent(*node),
        LabCommand::Shape(args) => experiments::shape(args),
    }
}
