//! `--proxy-mode`: which dataplane carries this node's Services — eBPF (TC on pod veths, XDP on
//! the uplink) or iptables (kube-proxy's layout, the baseline) — and the switch between them:
//! each mode starts by removing whatever the other one left on the node.

use std::{net::Ipv4Addr, path::Path};

use super::{
    Dataplane,
    iptables::{self, Iptables, IptablesDataplane, RuleConfig, Variant},
};
use crate::{
    datapath::{Datapath, DatapathConfig, cleanup},
    kubelet::netns,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProxyMode {
    #[default]
    Ebpf,
    Iptables,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ModeArgs {
    /// The Service dataplane: eBPF, or iptables with kube-proxy's rule layout (the baseline).
    #[arg(long, value_enum, default_value_t = ProxyMode::Ebpf)]
    pub proxy_mode: ProxyMode,
    /// iptables mode: which iptables (the system's default, or legacy / nft explicitly).
    #[arg(long, value_enum, default_value_t = Variant::System)]
    pub iptables: Variant,
    /// iptables mode: traffic to a ClusterIP from outside this CIDR is masqueraded (kube-proxy's
    /// `--cluster-cidr`).
    #[arg(long)]
    pub cluster_cidr: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    #[error("removing the iptables mode's rules")]
    Iptables(#[from] iptables::IptablesError),
    #[error("the eBPF datapath")]
    Datapath(#[from] crate::datapath::DatapathError),
    #[error("entering the node's network namespace")]
    Netns(#[source] std::io::Error),
    #[error("putting the load balancer on pod veth {veth}")]
    Veth {
        veth: String,
        #[source]
        source: skiff_cni::spec::error::CniError,
    },
}

/// The node's Service dataplane in the chosen mode.
#[derive(Debug)]
pub enum Proxy {
    Ebpf(Box<Datapath>),
    Iptables(IptablesDataplane),
}

impl Proxy {
    pub fn dataplane(&mut self) -> &mut dyn Dataplane {
        match self {
            Proxy::Ebpf(dp) => dp.dataplane(),
            Proxy::Iptables(ipt) => ipt,
        }
    }

    pub fn is_ebpf(&self) -> bool {
        matches!(self, Proxy::Ebpf(_))
    }
}

/// Sets the node up for `mode`: the other mode's state removed, this one's loaded. With eBPF the
/// load balancer also goes onto pod veths that have none or an older program (pods made in
/// iptables mode, an agent upgrade). `node_netns`: the node's namespace when the agent runs
/// outside it.
pub fn prepare(
    mode: &ModeArgs,
    config: &DatapathConfig,
    node_netns: Option<&Path>,
    nodeport_addresses: Vec<Ipv4Addr>,
) -> Result<Proxy, ModeError> {
    let ipt = Iptables::new(mode.iptables, node_netns.map(Path::to_owned));
    match mode.proxy_mode {
        ProxyMode::Ebpf => {
            if iptables::cleanup(&ipt)? {
                tracing::info!("removed the iptables mode's chains and jumps");
            }
            let dp = Datapath::load(config)?;
            let pin_dir = config.pin_dir.clone();
            let veths = netns::on_thread(node_netns, move || -> Result<usize, ModeError> {
                let veths = cleanup::pod_veths();
                for veth in &veths {
                    skiff_cni::datapath::reattach(&pin_dir, veth)
                        .map_err(|source| ModeError::Veth { veth: veth.clone(), source })?;
                }
                Ok(veths.len())
            })
            .map_err(ModeError::Netns)??;
            tracing::info!(veths, "load balancer on every pod veth");
            Ok(Proxy::Ebpf(Box::new(dp)))
        }
        ProxyMode::Iptables => {
            let pin_dir = config.pin_dir.clone();
            let removed = netns::on_thread(node_netns, move || cleanup::remove_all(&pin_dir))
                .map_err(ModeError::Netns)??;
            if removed != cleanup::Removed::default() {
                tracing::info!(?removed, "removed the eBPF datapath");
            }
            let rules = RuleConfig { nodeport_addresses, cluster_cidr: mode.cluster_cidr.clone() };
            Ok(Proxy::Iptables(IptablesDataplane::new(ipt, rules)))
        }
    }
}
