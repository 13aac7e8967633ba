//! `skiff-agent`: the node agent binary.

mod cmd;

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "skiff-agent", version, about = "skiff node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the datapath, attach it to interfaces in this network namespace and report its
    /// counters until SIGINT/SIGTERM, then detach.
    Datapath(cmd::datapath::DatapathArgs),
    /// Run the ClusterIP service proxy: watch Services and EndpointSlices on a Kubernetes API
    /// server and program the load balancer on the given pod interfaces.
    ServiceProxy(cmd::service_proxy::ServiceProxyArgs),
    /// Run the node agent: datapath, service proxy, node registration and heartbeat, routes to
    /// other nodes' pods, and this node's pods, until SIGTERM.
    Run(Box<cmd::run::RunArgs>),
}

fn main() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("skiff-agent: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    match cli.command {
        Command::Datapath(args) => rt.block_on(cmd::datapath::run(args)),
        Command::ServiceProxy(args) => rt.block_on(cmd::service_proxy::run(args)),
        Command::Run(args) => {
            // The kubelet half wants threads: pods, probes and watches run side by side.
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            rt.block_on(cmd::run::run(*args))
        }
    }
}
