//! `cargo xtask lab`: a multi-node skiff cluster on this machine.
//!
//! `up` builds the binaries and starts skiff-control on a host bridge and N nodes, each a network
//! namespace with its own containerd and `skiff-agent run`; `status` shows it; `down` removes all
//! of it and checks that nothing is left. `e2e` is CI's end-to-end run (up, pods on two nodes,
//! traffic between them, down) and `smoke` the datapath's counter programs in a namespace pair.
//! The layout is in `topology.rs`; what runs where is recorded in `state.json` (`state.rs`).

mod down;
mod e2e;
mod kube;
mod procs;
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
    },
    /// Nodes, agents and pods of the running lab.
    Status,
    /// Remove everything `up` created, then check that nothing is left.
    Down,
    /// CI's end-to-end run: `up --nodes 2`, a pod on each node, traffic between them, `down`.
    E2e,
    /// The datapath's counter programs in a namespace pair with real traffic.
    Smoke(SmokeArgs),
}

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    match &args.command {
        LabCommand::Up { nodes } => up::run(*nodes).map(drop),
        LabCommand::Status => status::run(),
        LabCommand::Down => down::run(),
        LabCommand::E2e => e2e::run(),
        LabCommand::Smoke(smoke) => smoke::run(smoke),
    }
}
