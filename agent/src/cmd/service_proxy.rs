//! `skiff-agent service-proxy`: the ClusterIP data plane fed from a Kubernetes API server.

use std::path::PathBuf;

use anyhow::Context as _;
use skiff_agent::{
    datapath::{self, DatapathConfig, LbCapacity, LogLevel},
    proxy::{
        ProxyContext, ServiceProxy,
        health::HealthChecks,
        mode::{self, ModeArgs, Proxy},
        watch,
    },
    status::Status,
};
use skiff_common::lb::LbConfig;

use super::wait_for_shutdown;

#[derive(Debug, clap::Args)]
pub struct ServiceProxyArgs {
    /// kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, for `internalTrafficPolicy: Local` (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Handle Services labelled `service.kubernetes.io/service-proxy-name=<this>` (default: only
    /// unlabelled Services).
    #[arg(long)]
    pub proxy_name: Option<String>,
    /// Host end of a pod veth to balance traffic from (repeatable).
    #[arg(long = "lb-iface", value_name = "IFACE")]
    pub lb_ifaces: Vec<String>,
    /// bpffs directory for pinned maps and links.
    #[arg(long, default_value = datapath::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Maglev table size per frontend (a prime).
    #[arg(long, default_value_t = LbConfig::DEFAULT.maglev_m)]
    pub maglev_size: u32,
    /// Frontend capacity (ClusterIP ports plus one marker per ClusterIP).
    #[arg(long, default_value_t = LbCapacity::default().max_services)]
    pub max_services: u32,
    /// Backend capacity.
    #[arg(long, default_value_t = LbCapacity::default().max_backends)]
    pub max_backends: u32,
    /// Conntrack entries per direction.
    #[arg(long, default_value_t = LbCapacity::default().max_ct)]
    pub max_conntrack: u32,
    /// Log level inside the eBPF programs.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub datapath_log_level: LogLevel,
    /// This node's address: NodePorts are served on it, and external flows to other nodes'
    /// backends are SNATed to it (without it, only ClusterIPs are served).
    #[arg(long)]
    pub node_ip: Option<std::net::Ipv4Addr>,
    // Without --node-ip, the uplink program is attached only where --uplink names it.
    #[command(flatten)]
    pub uplink: super::UplinkArgs,
    #[command(flatten)]
    pub mode: ModeArgs,
    #[command(flatten)]
    pub status: super::StatusArgs,
}

pub async fn run(args: ServiceProxyArgs) -> anyhow::Result<()> {
    super::require_interfaces(&args.lb_ifaces)?;
    let node_name = super::node_name(args.node_name)?;
    let client = client(args.kubeconfig.as_deref()).await?;

    let uplink = match args.node_ip {
        Some(ip) => Some(args.uplink.interface(ip)?),
        None => args.uplink.interface.clone(),
    };
    super::require_interfaces(&uplink)?;
    let lb = LbCapacity {
        config: LbConfig {
            maglev_m: args.maglev_size,
            node_addr_be: args.node_ip.map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
            snat_port_min: args.uplink.snat_ports.0,
            snat_port_max: args.uplink.snat_ports.1,
            netns_cookie: datapath::socklb::netns_cookie()
                .context("this namespace's cookie (SO_NETNS_COOKIE)")?,
            ..LbConfig::DEFAULT
        },
        max_services: args.max_services,
        max_backends: args.max_backends,
        max_ct: args.max_conntrack,
        ..LbCapacity::default()
    };
    let pin_dir = args.pin_dir.clone();
    let config = DatapathConfig { pin_dir: args.pin_dir, log_level: args.datapath_log_level, lb };
    let nodeport_addresses: Vec<_> = args.node_ip.into_iter().collect();
    let mut proxy = mode::prepare(&args.mode, &config, None, nodeport_addresses.clone())?;
    if let Proxy::Ebpf(dp) = &mut proxy {
        for iface in &args.lb_ifaces {
            dp.attach_lb(iface)?;
        }
        if let Some(iface) = &uplink {
            dp.attach_uplink(iface)?;
        }
        let cgroup = datapath::socklb::root_cgroup().context("no cgroup v2 hierarchy is mounted")?;
        dp.attach_socket_lb(&cgroup)?;
    }
    let mode = args.mode.proxy_mode;
    tracing::info!(node = %node_name, ?mode, interfaces = ?args.lb_ifaces, ?uplink, "service proxy started");
    let shutdown = wait_for_shutdown()?;
    let status = Status::new(
        &node_name,
        if proxy.is_ebpf() { "ebpf" } else { "iptables" },
        proxy.is_ebpf().then(|| pin_dir.clone()),
        Some(client.clone()),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let servers = args.status.serve(status.clone(), &pin_dir, until_stopped).await?;
    let ctx = ProxyContext { node_name, proxy_name: args.proxy_name, nodeport_addresses };
    let health = HealthChecks::new(std::net::Ipv4Addr::UNSPECIFIED);
    let mut feeder = watch::Feeder::new(ServiceProxy::new(ctx, proxy.dataplane()).with_health_checks(health))
        .with_status(status);
    tokio::select! {
        result = watch::run(client, &mut feeder) => result?,
        () = shutdown => tracing::info!("shutting down; the load balancer stays attached (pinned links)"),
    }
    let _ = stop.send(true);
    for task in servers {
        let _ = task.await;
    }
    Ok(())
}

/// An API client from `kubeconfig`, or the usual places ($KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(config(kubeconfig).await?).context("building the API client")
}

/// The client configuration [`client`] uses.
pub async fn config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let raw = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(raw, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using {}", path.display()))?
        }
        None => kube::Config::infer().await.context("finding a kubeconfig")?,
    })
}
