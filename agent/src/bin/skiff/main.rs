//! `skiff`: the operator's CLI on a node.
//! - `skiff svc list|diff`, `skiff ct list|flush`, `skiff trace`, `skiff explain`, `skiff drops
//!   [--watch]` and `skiff maps`: the datapath's state, read from its pins and completed with what
//!   the agent wants (its status socket) (`-o table|json|yaml`);
//! - `skiff image import <archive>` (an image into the node's containerd without a registry),
//!   `skiff image build-busybox <out>` and `skiff image build-echo <out> --echo <static
//!   skiff-echo>` (the lab's demo image);
//! - `skiff version`, `skiff completions <shell>`.

mod commands;

use std::{path::PathBuf, time::Duration};

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use commands::{CtArgs, ExplainArgs, SvcCommand, TraceArgs};
use skiff_agent::{
    inspect::{self, Format},
    runtime::{DEFAULT_NAMESPACE, DEFAULT_SOCKET, Runtime, busybox},
};
use skiff_common::names;

#[derive(Debug, Parser)]
#[command(name = "skiff", version, about = "skiff's node CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Frontends with their backends and traffic, and drift from what the agent wants.
    #[command(subcommand)]
    Svc(SvcCommand),
    /// The load balancer's conntrack: list or flush flows.
    #[command(subcommand)]
    Ct(CtCommand),
    /// Live events from the packet path, filtered in the kernel.
    Trace(TraceArgs),
    /// A dry run: what the datapath would do with a packet from SOURCE to DESTINATION.
    Explain(ExplainArgs),
    /// Drop and reject counters of the datapath by reason, summed over CPUs.
    Drops {
        #[command(flatten)]
        read: ReadArgs,
        /// Print again every `--interval`, with each reason's increase, until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between readings under `--watch`.
        #[arg(long, default_value_t = 2.0, value_parser = positive_seconds)]
        interval: f64,
    },
    /// Every pinned map: kind, capacity, entries and fill, flagged when near full.
    Maps {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Images in the node's containerd.
    #[command(subcommand)]
    Image(ImageCommand),
    /// This skiff's version.
    Version,
    /// A shell completion script (e.g. `skiff completions bash > /etc/bash_completion.d/skiff`).
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum CtCommand {
    /// Flows, most recently active first.
    List(CtArgs),
    /// Deletes the matching flows (both directions); their next packet is balanced anew.
    Flush {
        #[command(flatten)]
        args: CtArgs,
        /// Flush every flow (required when no filter is given).
        #[arg(long)]
        all: bool,
    },
}

/// Where the datapath is pinned and how to print what is read there.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The agent's `--pin-dir`.
    #[arg(long, default_value = names::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// The agent's status socket (default: the one of the agent using --pin-dir).
    #[arg(long)]
    agent_socket: Option<PathBuf>,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

impl ReadArgs {
    fn socket(&self) -> PathBuf {
        self.agent_socket.clone().unwrap_or_else(|| inspect::agent::socket_for(&self.pin_dir))
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import an OCI image layout or `docker save` archive into containerd and unpack it.
    Import {
        archive: PathBuf,
        /// Name for an archive that names no image.
        #[arg(long)]
        name: Option<String>,
        /// containerd's socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        containerd: PathBuf,
        /// containerd namespace (the agent's).
        #[arg(long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Write the busybox test image (from Debian's busybox-static) as an OCI archive.
    BuildBusybox {
        out: PathBuf,
        #[arg(long, default_value = busybox::BUSYBOX)]
        busybox: PathBuf,
    },
    /// Write the demo image (`skiff.local/echo:<version>`: busybox plus a static skiff-echo as
    /// its entrypoint) as an OCI archive. `cargo xtask echo-image` builds the binary and this.
    BuildEcho {
        out: PathBuf,
        /// The static skiff-echo binary to put at `/skiff-echo`.
        #[arg(long)]
        echo: PathBuf,
        #[arg(long, default_value = busybox::BUSYBOX)]
        busybox: PathBuf,
    },
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// `skiff drops`, once or every `interval` seconds with deltas.
fn drops(read: &ReadArgs, watch: bool, interval: f64) -> Result<(), String> {
    let show = |rows: &[inspect::drops::DropCount]| -> Result<(), String> {
        let text = inspect::output::render(read.output, rows, inspect::drops::as_table)
            .map_err(|e| format!("{e:#}"))?;
        print!("{text}");
        Ok(())
    };
    let mut before = inspect::drops::read(&read.pin_dir).map_err(|e| format!("{e:#}"))?;
    show(&before)?;
    if !watch {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let now = inspect::drops::read(&read.pin_dir).map_err(|e| format!("{e:#}"))?;
        let rows = inspect::drops::with_deltas(&before, now);
        println!();
        show(&rows)?;
        before = rows;
    }
}

fn main() {
    let result = match Cli::parse().command {
        Command::Svc(cmd) => commands::svc(&cmd),
        Command::Ct(CtCommand::List(args)) => commands::ct_list(&args),
        Command::Ct(CtCommand::Flush { args, all }) => commands::ct_flush(&args, all),
        Command::Trace(args) => commands::trace(&args),
        Command::Explain(args) => commands::explain(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "skiff", &mut std::io::stdout());
            Ok(())
        }
        Command::Drops { read, watch, interval } => drops(&read, watch, interval),
        Command::Maps { read } => inspect::maps::read(&read.pin_dir)
            .and_then(|rows| inspect::output::render(read.output, &rows, inspect::maps::as_table))
            .map(|text| print!("{text}"))
            .map_err(|e| format!("{e:#}")),
        Command::Version => {
            println!("skiff {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Image(ImageCommand::BuildBusybox { out, busybox }) => busybox::build_archive(&busybox, &out)
            .map(|()| println!("{} → {}", busybox::IMAGE, out.display()))
            .map_err(|e| format!("building {}: {e}", out.display())),
        Command::Image(ImageCommand::BuildEcho { out, echo, busybox }) => {
            busybox::build_echo_archive(&busybox, &echo, &out)
                .map(|()| println!("{} → {}", busybox::echo_image(), out.display()))
                .map_err(|e| format!("building {}: {e}", out.display()))
        }
        Command::Image(ImageCommand::Import { archive, name, containerd, namespace }) => {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Err(e) => Err(format!("starting tokio: {e}")),
                Ok(rt) => rt.block_on(async {
                    let runtime = Runtime::connect(&containerd, &namespace).await.map_err(|e| chain(&e))?;
                    let names = runtime.import(&archive, name.as_deref()).await.map_err(|e| chain(&e))?;
                    for n in names {
                        println!("imported {n}");
                    }
                    Ok(())
                }),
            }
        }
    };
    if let Err(e) = result {
        eprintln!("skiff: {e}");
        std::process::exit(1);
    }
}
