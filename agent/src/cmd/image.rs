//! `skiff-agent image`: images in the node's containerd without a registry.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use skiff_agent::runtime::{Runtime, busybox};

/// The containerd socket and namespace the agent uses by default.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
pub const DEFAULT_NAMESPACE: &str = "skiff";

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
    /// containerd's socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    containerd: PathBuf,
    /// containerd namespace.
    #[arg(long, global = true, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import an OCI image layout or `docker save` archive and unpack it.
    Import {
        archive: PathBuf,
        /// Name for an archive that names no image.
        #[arg(long)]
        name: Option<String>,
    },
    /// Write the busybox test image (from Debian's busybox-static) as an OCI archive.
    BuildBusybox {
        out: PathBuf,
        #[arg(long, default_value = busybox::BUSYBOX)]
        busybox: PathBuf,
    },
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    match args.command {
        ImageCommand::BuildBusybox { out, busybox } => {
            busybox::build_archive(&busybox, &out)
                .with_context(|| format!("building {} from {}", out.display(), busybox.display()))?;
            println!("{} → {}", busybox::IMAGE, out.display());
        }
        ImageCommand::Import { archive, name } => {
            let rt = Runtime::connect(&args.containerd, &args.namespace).await?;
            for image in rt.import(&archive, name.as_deref()).await? {
                println!("imported {image}");
            }
        }
    }
    Ok(())
}
