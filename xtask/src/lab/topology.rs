//! The lab's names, addresses and directories, and the host-side network (bridge, namespaces,
//! veths, routes, the iptables rule).
//!
//! ```text
//!  host: skiff-control on https://10.100.0.1:6443 (PKI in /run/skiff-lab/pki), admin
//!        kubeconfig /run/skiff-lab/kubeconfig; agents join with a bootstrap token
//!        (/run/skiff-lab/bootstrap.conf) and keep their own in /run/skiff-lab/nK/kubelet.conf
//!  ═══════════════ bridge skiff-lab0, 10.100.0.1/24 ════════════════════════
//!        │ skl-n1               │ skl-n2        …          │ skl-ext
//!  ┌─────┴─────────────┐  ┌─────┴─────────────┐  ┌─────────┴─────────┐
//!  │ skiff-lab-n1      │  │ skiff-lab-n2      │  │ skiff-lab-ext     │
//!  │ eth0 10.100.0.11  │  │ eth0 10.100.0.12  │  │ eth0 10.100.0.200 │
//!  │ containerd, agent │  │ containerd, agent │  │ "the outside"     │
//!  │ pods 10.244.x/24  │  │ pods 10.244.y/24  │  └───────────────────┘
//!  └───────────────────┘  └───────────────────┘
//! ```
//!
//! Node K's namespace, node name and bpffs pin dir carry `nK`; its files live in
//! `/run/skiff-lab/nK/`. Everything is under /run: none of it survives a reboot, and neither do
//! the namespaces and processes it belongs to.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use skiff_tests::wire;

use crate::step;

pub const LAB_DIR: &str = "/run/skiff-lab";
pub const PIN_ROOT: &str = "/sys/fs/bpf/skiff-lab";
pub const BRIDGE: &str = "skiff-lab0";
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
pub const PREFIX_LEN: u8 = 24;
pub const API_PORT: u16 = 6443;
pub const EXT_NS: &str = "skiff-lab-ext";
pub const EXT_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 200);
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const LB_POOL: &str = "10.100.0.240-10.100.0.250";
/// Namespaces and links of the lab all start with this.
pub const NAME_PREFIX: &str = "skiff-lab";
/// Host ends of the lab's veths (interface names are at most 15 bytes).
pub const VETH_PREFIX: &str = "skl-";
/// Marks the lab's iptables rule.
pub const IPTABLES_COMMENT: &str = "skiff-lab";

/// Node `k` (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub index: u8,
}

impl NodeSpec {
    pub fn name(&self) -> String {
        format!("{NAME_PREFIX}-n{}", self.index)
    }
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 100, 0, 10 + self.index)
    }
    pub fn dir(&self) -> PathBuf {
        Path::new(LAB_DIR).join(format!("n{}", self.index))
    }
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(PIN_ROOT).join(format!("n{}", self.index))
    }
    /// The agent's status socket (`skiff … --agent-socket`), inside the lab dir so `down`
    /// removes it whatever happened to the agent.
    pub fn status_socket(&self) -> PathBuf {
        self.dir().join("agent.sock")
    }
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(self.name())
    }
    pub fn containerd_dir(&self) -> PathBuf {
        self.dir().join("containerd")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.containerd_dir().join("containerd.sock")
    }
    /// The agent's `--root-dir` (pods' logs and volumes, CNI cache).
    pub fn agent_root(&self) -> PathBuf {
        self.dir().join("agent")
    }
    /// The node's kubeconfig, written by its agent when it joins: its own client certificate
    /// (`system:node:<name>`), its key made on the node.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("kubelet.conf")
    }
    pub fn cgroup_root(&self) -> String {
        format!("/{NAME_PREFIX}/n{}", self.index)
    }
    fn veth(&self) -> String {
        format!("{VETH_PREFIX}n{}", self.index)
    }
}

/// The admin's kubeconfig (a copy of the PKI's `admin.conf`).
pub fn kubeconfig() -> PathBuf {
    Path::new(LAB_DIR).join("kubeconfig")
}

/// The bootstrap token's kubeconfig agents join with.
pub fn bootstrap_kubeconfig() -> PathBuf {
    Path::new(LAB_DIR).join("bootstrap.conf")
}

/// The lab's PKI root (`skiff-control init --pki-dir`).
pub fn pki_dir() -> PathBuf {
    Path::new(LAB_DIR).join("pki")
}

pub fn bin_dir() -> PathBuf {
    Path::new(LAB_DIR).join("bin")
}

pub fn api_address() -> String {
    format!("{HOST_IP}:{API_PORT}")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    step::run(Command::new("ip").args(args).stdout(std::process::Stdio::null()))
}

/// The bridge with the host's lab address, and the iptables rule letting bridged lab traffic
/// through FORWARD when br_netfilter hands it to iptables on a host whose policy is DROP.
pub fn create_bridge() -> anyhow::Result<()> {
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{HOST_IP}/{PREFIX_LEN}"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    step::run(Command::new("iptables").args(iptables_rule("-I")))
}

pub fn iptables_rule(op: &str) -> Vec<String> {
    [
        op,
        "FORWARD",
        "-i",
        BRIDGE,
        "-o",
        BRIDGE,
        "-m",
        "comment",
        "--comment",
        IPTABLES_COMMENT,
        "-j",
        "ACCEPT",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A namespace `ns` joined to the bridge by a veth (`host_end` on the bridge, `eth0` inside) with
/// `addr`, a default route via the host and forwarding on.
///
/// The veth is made to behave like a wire, as the nodes' uplink XDP programs expect (see
/// `skiff_tests::wire`): `eth0` sends complete checksums, and the host end runs a pass-everything
/// XDP program (its link pinned under [`PIN_ROOT`]) so that what a node sends back with `XDP_TX`
/// is polled at once.
pub fn create_attached_ns(ns: &str, host_end: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
    ip(&["link", "set", host_end, "master", BRIDGE, "up"])?;
    ip(&["-n", ns, "addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &HOST_IP.to_string()])?;
    wire::checksums_complete(Some(ns), "eth0")
        .with_context(|| format!("checksum offload off on {ns}'s eth0"))?;
    std::fs::create_dir_all(PIN_ROOT).with_context(|| format!("creating {PIN_ROOT}"))?;
    wire::XdpPass::attach(host_end)
        .and_then(|pass| pass.pin(&Path::new(PIN_ROOT).join(format!("wire-{host_end}"))))
        .with_context(|| format!("XDP pass program on {host_end}"))?;
    step::run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]))
        .with_context(|| format!("forwarding on in {ns}"))
}

pub fn create_node_ns(node: &NodeSpec) -> anyhow::Result<()> {
    create_attached_ns(&node.name(), &node.veth(), node.ip())
}

pub fn create_ext_ns() -> anyhow::Result<()> {
    create_attached_ns(EXT_NS, &format!("{VETH_PREFIX}ext"), EXT_IP)
}

/// A host route to a node's pods, so the host (and through it the external namespace) reaches
/// pod addresses; it goes with the bridge.
pub fn route_to_pods(cidr: &str, node: &NodeSpec) -> anyhow::Result<()> {
    ip(&["route", "replace", cidr, "via", &node.ip().to_string(), "dev", BRIDGE])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_addresses_and_dirs_follow_the_index() {
        let node = NodeSpec { index: 3 };
        assert_eq!(node.name(), "skiff-lab-n3");
        assert_eq!(node.ip(), Ipv4Addr::new(10, 100, 0, 13));
        assert_eq!(node.dir(), Path::new("/run/skiff-lab/n3"));
        assert_eq!(node.pin_dir(), Path::new("/sys/fs/bpf/skiff-lab/n3"));
        assert_eq!(node.cgroup_root(), "/skiff-lab/n3");
        assert!(node.veth().len() <= 15, "interface names are at most 15 bytes");
    }

    #[test]
    fn the_largest_lab_stays_clear_of_the_external_and_load_balancer_addresses() {
        let last = NodeSpec { index: 9 }.ip();
        assert!(last < EXT_IP && last < Ipv4Addr::new(10, 100, 0, 240));
    }
}
