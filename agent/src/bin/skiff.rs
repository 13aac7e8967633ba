//! `skiff`: the operator's CLI on a node. Today: `skiff image import <archive>` (an image into
//! the node's containerd without a registry), `skiff image build-busybox <out>` and
//! `skiff image build-echo <out> --echo <static skiff-echo>` (the lab's demo image); the
//! datapath commands (`svc`, `ct`, `trace`, `drops`, `explain`) come with the CLI issue.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use skiff_agent::runtime::{DEFAULT_NAMESPACE, DEFAULT_SOCKET, Runtime, busybox};

#[derive(Debug, Parser)]
#[command(name = "skiff", version, about = "skiff's node CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Images in the node's containerd.
    #[command(subcommand)]
    Image(ImageCommand),
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

fn main() {
    let result = match Cli::parse().command {
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
