//! `cargo xtask <task>`: everything a developer runs by hand.

mod bench;
mod ci;
mod install;
mod lab;
mod setup;
mod step;

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
    /// ones, then the lab as a smoke test.
    Ci,
    /// Load the datapath into a demo namespace pair, send traffic, print the counters.
    Lab(lab::LabArgs),
    /// Build release binaries and install them, the systemd units and example settings
    /// (`--dry-run` prints what it would do).
    Install(install::InstallArgs),
    /// Run a benchmark (root) and write its table into README.md.
    Bench {
        #[arg(value_enum)]
        which: bench::Bench,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Ci => ci::run(),
        Task::Lab(args) => lab::run(&args),
        Task::Install(args) => install::run(&args),
        Task::Bench { which } => bench::run(which),
    };
    if let Err(err) = result {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}
