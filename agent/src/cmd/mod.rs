//! The agent's subcommands.

pub mod datapath;
pub mod run;
pub mod service_proxy;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

/// Installs SIGTERM and SIGINT handlers now and returns a future that completes on either.
/// Installing first matters: a signal that arrives before the handler would kill the process.
pub fn wait_for_shutdown() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

/// This node's name: `given`, or the host name.
pub fn node_name(given: Option<String>) -> anyhow::Result<String> {
    match given {
        Some(name) => Ok(name),
        None => Ok(nix::unistd::gethostname().context("host name")?.to_string_lossy().into_owned()),
    }
}

/// The interface of this network namespace that holds `ip` (the node's uplink, by default).
pub fn interface_with(ip: std::net::Ipv4Addr) -> anyhow::Result<String> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
    for ifa in addrs {
        if ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()).is_some_and(|a| a.ip() == ip) {
            return Ok(ifa.interface_name);
        }
    }
    anyhow::bail!("no interface holds {ip} in this network namespace (give --uplink)")
}

/// Where north-south traffic enters the node and how flows to other nodes' backends are SNATed
/// (`run` and `service-proxy` alike).
#[derive(Debug, Clone, clap::Args)]
pub struct UplinkArgs {
    /// The node's external interface, where the uplink XDP program serves NodePorts, external and
    /// load-balancer addresses (default: the interface holding --node-ip).
    #[arg(long = "uplink")]
    pub interface: Option<String>,
    /// Source ports for SNAT toward other nodes' backends when the client's own port is taken.
    #[arg(long, default_value = "32768-65535", value_parser = port_range)]
    pub snat_ports: (u16, u16),
}

impl UplinkArgs {
    /// The uplink: `--uplink`, else the interface holding `node_ip` in the calling thread's
    /// network namespace.
    pub fn interface(&self, node_ip: std::net::Ipv4Addr) -> anyhow::Result<String> {
        match &self.interface {
            Some(iface) => Ok(iface.clone()),
            None => interface_with(node_ip),
        }
    }
}

/// A port range `MIN-MAX`, as flags take it.
pub fn port_range(text: &str) -> Result<(u16, u16), String> {
    let (min, max) = text.split_once('-').ok_or_else(|| format!("{text:?} is not MIN-MAX"))?;
    let min: u16 = min.trim().parse().map_err(|_| format!("{min:?} is not a port"))?;
    let max: u16 = max.trim().parse().map_err(|_| format!("{max:?} is not a port"))?;
    if min == 0 || min > max {
        return Err(format!("{text:?}: need 1 <= MIN <= MAX"));
    }
    Ok((min, max))
}

/// Refuses any of `interfaces` that this network namespace does not have.
pub fn require_interfaces<'a>(interfaces: impl IntoIterator<Item = &'a String>) -> anyhow::Result<()> {
    for iface in interfaces {
        nix::net::if_::if_nametoindex(iface.as_str())
            .map_err(|_| anyhow::anyhow!("no interface named {iface:?} in this network namespace"))?;
    }
    Ok(())
}

/// Where the agent reports on itself (`run` and `service-proxy` alike).
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Unix socket for `skiff` on this node (default: /run/skiff/agent.sock for the default
    /// --pin-dir, else a socket named after the pin dir, which `skiff --pin-dir` finds).
    #[arg(long)]
    pub status_socket: Option<std::path::PathBuf>,
    /// TCP address for /metrics, /healthz and /readyz (Prometheus), or `off`.
    #[arg(long, default_value = "127.0.0.1:10249", value_parser = metrics_address)]
    pub metrics_address: MetricsAddress,
}

/// `--metrics-address`: an address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddress(pub Option<std::net::SocketAddr>);

fn metrics_address(text: &str) -> Result<MetricsAddress, String> {
    match text {
        "off" | "" => Ok(MetricsAddress(None)),
        _ => text
            .parse()
            .map(|a| MetricsAddress(Some(a)))
            .map_err(|_| format!("{text:?} is not ADDRESS:PORT or off")),
    }
}

impl StatusArgs {
    /// Binds the socket and the metrics port now (so a clash fails the start, not later) and
    /// serves both until `stop` completes.
    pub async fn serve<F, Fut>(
        &self,
        status: std::sync::Arc<skiff_agent::status::Status>,
        pin_dir: &std::path::Path,
        stop: F,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        use skiff_agent::{inspect::agent::socket_for, status};
        let socket = self.status_socket.clone().unwrap_or_else(|| socket_for(pin_dir));
        let unix = status::bind_unix(&socket)?;
        let mut tasks = vec![tokio::spawn({
            let status = status.clone();
            let stop = stop();
            async move {
                if let Err(e) = status::serve_unix(unix, status, stop).await {
                    tracing::warn!(error = %e, "status socket stopped");
                }
                let _ = std::fs::remove_file(&socket);
            }
        })];
        if let MetricsAddress(Some(addr)) = self.metrics_address {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for metrics (--metrics-address)"))?;
            let stop = stop();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = status::serve_tcp(status, listener, stop).await {
                    tracing::warn!(error = %e, "metrics endpoint stopped");
                }
            }));
        }
        Ok(tasks)
    }
}
