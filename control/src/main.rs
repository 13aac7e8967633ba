//! `skiff-control`: skiff's control plane.

mod cli_backup;
mod cli_pki;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use skiff_control::{
    api, controllers, secure,
    store::{
        Store,
        embedded::{EmbeddedStore, Options},
        etcd,
    },
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
    /// Create the cluster's CA, certificates and kubeconfigs (kept where still valid).
    Init(cli_pki::InitArgs),
    /// Check and renew the cluster's certificates.
    #[command(subcommand)]
    Certs(cli_pki::CertsCommand),
    /// Bootstrap tokens for joining nodes.
    #[command(subcommand)]
    Token(cli_pki::TokenCommand),
    /// Back up the cluster: the running API server's store, or etcd (a snapshot).
    Backup(cli_backup::BackupArgs),
    /// Restore a backup into a stopped control plane's store (or a new etcd data dir).
    Restore(cli_backup::RestoreArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory holding the store (the embedded one; with --etcd-servers nothing is stored here).
    #[arg(long, default_value = "/var/lib/skiff-control")]
    data_dir: PathBuf,
    /// Store the cluster in etcd at these client URLs (comma-separated, e.g.
    /// http://10.0.0.5:2379) instead of the embedded store, so that several API servers can serve
    /// one cluster; the control loops then run on one of them at a time (leader election).
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// Where the cluster's keys live in etcd.
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    bind_address: SocketAddr,
    /// PKI root (`skiff-control init`): the API is served over HTTPS with its
    /// `pki/apiserver.{crt,key}`, client certificates its CA signed are authenticated, and
    /// anonymous requests are refused (except /healthz, /livez, /readyz, /version). When the
    /// directory holds no CA yet, the PKI is created there for this server's address.
    #[arg(long, default_value = skiff_control::pki::DEFAULT_ROOT)]
    pki_dir: PathBuf,
    /// Static bearer tokens (kube-apiserver's format: token,user,uid,"group1,group2").
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// CIDR ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Write the admin kubeconfig, pointed at the address this server listens on, here once it
    /// listens (0600).
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Seconds a node's Lease may go unrenewed before the node is marked Unknown and tainted
    /// unreachable.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Seconds pods stay on an unreachable or not-ready node when they carry no toleration of
    /// their own for it.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: u64,
    /// Addresses LoadBalancer Services get, as comma-separated FIRST-LAST ranges or CIDRs
    /// (e.g. 192.168.200.10-192.168.200.50); none: LoadBalancer Services get no address.
    #[arg(long, value_delimiter = ',')]
    load_balancer_pool: Vec<String>,
    /// Pod addresses of the cluster: each node without a pod CIDR gets a block of this range
    /// (none: nodes bring their own, e.g. `skiff-agent run --pod-cidr`).
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// Prefix length of each node's pod CIDR block.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// This process's identity in leader election (default: host name and data dir).
    #[arg(long)]
    leader_identity: Option<String>,
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

/// A pool range: `FIRST-LAST` or a CIDR.
fn parse_range(text: &str) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    if let Some((first, last)) = text.split_once('-') {
        let (first, last): (Ipv4Addr, Ipv4Addr) = (
            first.trim().parse().context("bad first address")?,
            last.trim().parse().context("bad last address")?,
        );
        anyhow::ensure!(first <= last, "the first address is after the last");
        return Ok((first, last));
    }
    let (ip, bits) = text.split_once('/').context("expected FIRST-LAST or ADDRESS/BITS")?;
    let ip: Ipv4Addr = ip.parse().context("bad address")?;
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 32).context("bad prefix length")?;
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    let first = u32::from(ip) & mask;
    Ok((Ipv4Addr::from(first), Ipv4Addr::from(first | !mask)))
}

fn loops_config(args: &ServeArgs) -> anyhow::Result<controllers::Config> {
    let mut lb_pool = Vec::new();
    for range in &args.load_balancer_pool {
        lb_pool.push(parse_range(range).with_context(|| format!("--load-balancer-pool {range}"))?);
    }
    let pod_cidrs = match &args.cluster_cidr {
        None => None,
        Some(text) => {
            let cluster = parse_cidr(text).with_context(|| format!("--cluster-cidr {text}"))?;
            anyhow::ensure!(
                (cluster.1..=30).contains(&args.node_cidr_mask_size),
                "--node-cidr-mask-size {} must be between the cluster prefix ({}) and 30",
                args.node_cidr_mask_size,
                cluster.1
            );
            Some(controllers::PodCidrs { cluster, node_mask: args.node_cidr_mask_size })
        }
    };
    Ok(controllers::Config {
        node_monitor_grace: Duration::from_secs(args.node_monitor_grace_period),
        default_toleration: Duration::from_secs(args.default_unreachable_toleration_seconds),
        lb_pool,
        pod_cidrs,
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Init(args) => return cli_pki::init(&args),
        Command::Certs(cmd) => return cli_pki::certs(&cmd),
        Command::Token(cmd) => return cli_pki::token(&cmd),
        Command::Backup(args) => return cli_backup::backup(&args),
        Command::Restore(args) => return cli_backup::restore(&args),
    };
    let cidr = parse_cidr(&args.service_cluster_ip_range)
        .with_context(|| format!("--service-cluster-ip-range {}", args.service_cluster_ip_range))?;
    let loops = loops_config(&args)?;
    let identity = args.leader_identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}@{}", host.trim(), args.data_dir.display())
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    if args.etcd_servers.is_empty() {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
        let store = EmbeddedStore::open(&args.data_dir.join("store.redb"), Options::default())
            .context("opening the store")?;
        rt.block_on(serve(store, args, cidr, loops, identity))
    } else {
        rt.block_on(async {
            let options = etcd::Options { prefix: args.etcd_prefix.clone(), ..etcd::Options::default() };
            let store = etcd::EtcdStore::open(&args.etcd_servers, options)
                .await
                .with_context(|| format!("opening the store in etcd at {}", args.etcd_servers.join(",")))?;
            serve(store, args, cidr, loops, identity).await
        })
    }
}

/// Serves the API from `store` with the control loops (under leader election as `identity`)
/// until SIGTERM or Ctrl-C.
async fn serve<S: Store + Clone>(
    store: S,
    args: ServeArgs,
    cidr: (Ipv4Addr, u8),
    loops: controllers::Config,
    identity: String,
) -> anyhow::Result<()> {
    let server = Arc::new(api::ApiServer::new(store, cidr));
    let listener = tokio::net::TcpListener::bind(args.bind_address)
        .await
        .with_context(|| format!("listening on {}", args.bind_address))?;
    let addr = listener.local_addr()?;
    server.bootstrap(Some(addr)).await.map_err(|e| anyhow::anyhow!(e.message)).context("bootstrapping")?;
    let pki = skiff_control::pki::Pki::new(&args.pki_dir);
    if secure::ensure_pki(&pki, addr, &args.service_cluster_ip_range)? {
        tracing::info!(dir = %args.pki_dir.display(), "created the cluster PKI");
    }
    let stack = secure::prepare(&server, &pki, args.token_auth_file.as_deref())?;
    if let Some(path) = &args.write_kubeconfig {
        let text = secure::admin_kubeconfig(&pki, &format!("https://{addr}"))?;
        skiff_control::pki::files::write_secret(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    controllers::spawn(server.clone(), loops, controllers::leader::Election::new(identity));
    println!("listening on {addr}");
    tracing::info!(%addr, "serving the Kubernetes API over HTTPS");
    secure::serve(listener, server, stack, shutdown()).await
}

/// Ctrl-C or SIGTERM (what systemd and container runtimes send) ends serving gracefully.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ranges_are_read_from_first_last_pairs_and_cidrs() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert_eq!(
            parse_range("192.0.2.10-192.0.2.20").expect("range"),
            (ip("192.0.2.10"), ip("192.0.2.20"))
        );
        assert_eq!(parse_range("192.0.2.9/30").expect("cidr"), (ip("192.0.2.8"), ip("192.0.2.11")));
        assert_eq!(parse_range("198.51.100.7/32").expect("one"), (ip("198.51.100.7"), ip("198.51.100.7")));
        for bad in ["192.0.2.20-192.0.2.10", "192.0.2.1", "192.0.2.0/33", "x-192.0.2.1", "192.0.2.0/x"] {
            assert!(parse_range(bad).is_err(), "{bad} accepted");
        }
    }
}
