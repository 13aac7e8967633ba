//! `cargo xtask <task>`: everything a developer runs by hand.

mod bench;
mod ci;
mod demo;
mod install;
mod lab;
mod progress;
mod setup;
mod step;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "skiff developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need: apt packages, nightly rust-src, bpf-linker, bpffs.
    Setup,
    /// What CI runs: setup, rustfmt, clippy (host and eBPF), every test including the privileged
    /// ones, then the lab's smoke and end-to-end runs.
    Ci,
    /// A multi-node cluster on this machine: `lab up [--nodes N]`, `lab status`, `lab down`.
    Lab(lab::LabArgs),
    /// Build the demo image archive `skiff.local/echo:<version>` (a static skiff-echo on
    /// busybox-static) for `skiff image import`.
    EchoImage {
        /// Where to write it (default: `<target dir>/skiff-echo-image.tar`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build release binaries and install them, the systemd units and example settings
    /// (`--dry-run` prints what it would do).
    Install(install::InstallArgs),
    /// Run a benchmark (root) and write its table into README.md.
    Bench {
        #[arg(value_enum)]
        which: bench::Bench,
        /// Small sizes and short runs (what CI runs to keep a benchmark from rotting; the README is
        /// left alone).
        #[arg(long)]
        quick: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Ci => ci::run(),
        Task::Lab(args) => lab::run(&args),
        Task::EchoImage { out } => demo::run(out),
        Task::Install(args) => install::run(&args),
        Task::Bench { which, quick } => bench::run(which, quick),
    };
    if let Err(err) = result {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}
