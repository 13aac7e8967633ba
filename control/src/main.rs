//! `skiff-control`: skiff's control plane.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use skiff_control::{
    api,
    store::embedded::{EmbeddedStore, Options},
};

#[derive(Debug, Parser)]
#[command(name = "skiff-control", version, about = "skiff control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Kubernetes API from the embedded store.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory holding the store.
    #[arg(long, default_value = "/var/lib/skiff-control")]
    data_dir: PathBuf,
    /// Address to listen on (plain HTTP for now; TLS arrives with the PKI).
    #[arg(long, default_value = "127.0.0.1:6443")]
    bind_address: SocketAddr,
    /// CIDR ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Write a kubeconfig for this server here once it listens.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("skiff-control: {err:#}");
        std::process::exit(1);
    }
}

fn parse_cidr(text: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, bits) = text.split_once('/').context("expected ADDRESS/BITS")?;
    let ip: Ipv4Addr = ip.parse().context("bad address")?;
    let bits: u8 = bits.parse().context("bad prefix length")?;
    anyhow::ensure!((8..=30).contains(&bits), "prefix length must be 8..30");
    Ok((ip, bits))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve(args) = cli.command;
    let cidr = parse_cidr(&args.service_cluster_ip_range)
        .with_context(|| format!("--service-cluster-ip-range {}", args.service_cluster_ip_range))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store = EmbeddedStore::open(&args.data_dir.join("store.redb"), Options::default())
        .context("opening the store")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(async move {
        let server = Arc::new(api::ApiServer::new(store, cidr));
        let listener = tokio::net::TcpListener::bind(args.bind_address)
            .await
            .with_context(|| format!("listening on {}", args.bind_address))?;
        let addr = listener.local_addr()?;
        server
            .bootstrap(Some(addr))
            .await
            .map_err(|e| anyhow::anyhow!(e.message))
            .context("bootstrapping")?;
        if let Some(path) = &args.write_kubeconfig {
            std::fs::write(path, api::kubeconfig(&format!("http://{addr}")))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        skiff_control::controllers::spawn(server.clone());
        tracing::info!(%addr, "serving the Kubernetes API");
        println!("listening on {addr}");
        axum::serve(listener, api::router(server)).with_graceful_shutdown(shutdown()).await.context("serving")
    })
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
