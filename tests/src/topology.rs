//! Two namespaces joined by one veth pair.

use std::net::Ipv4Addr;

use crate::{NetNs, Result};

/// `client` ── veth ── `server`, both ends named [`PairTopology::IFACE`], addresses in
/// 198.18.0.0/24 (RFC 2544's benchmarking range, never routed anywhere).
///
/// Quiet by construction, so a test can count packets exactly: IPv6 is off (no router or neighbour
/// solicitations, no MLD) and both sides have permanent neighbour entries (no ARP).
#[derive(Debug)]
pub struct PairTopology {
    pub client: NetNs,
    pub server: NetNs,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
}

impl PairTopology {
    /// Interface name on both sides.
    pub const IFACE: &'static str = "eth0";
    pub const CLIENT_MAC: &'static str = "02:5b:00:00:00:01";
    pub const SERVER_MAC: &'static str = "02:5b:00:00:00:02";
    /// Ethernet + IPv4 + UDP headers: the frame size of a UDP datagram with an empty payload.
    pub const UDP_FRAME_OVERHEAD: usize = 14 + 20 + 8;

    /// Builds the pair; `label` makes the namespace names readable (`skt-<pid>-<n>-<label>-c`).
    pub fn new(label: &str) -> Result<Self> {
        Self::build(NetNs::new(&format!("{label}-c"))?, NetNs::new(&format!("{label}-s"))?)
    }

    /// Builds the pair in two namespaces with fixed names (the lab's singletons).
    pub fn with_names(client: &str, server: &str) -> Result<Self> {
        Self::build(NetNs::with_name(client)?, NetNs::with_name(server)?)
    }

    fn build(client: NetNs, server: NetNs) -> Result<Self> {
        let topo = PairTopology {
            client,
            server,
            client_ip: Ipv4Addr::new(198, 18, 0, 1),
            server_ip: Ipv4Addr::new(198, 18, 0, 2),
        };
        for ns in [&topo.client, &topo.server] {
            // Before the veth exists, so it is born without IPv6.
            ns.sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
            ns.sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
        }
        let iface = Self::IFACE;
        topo.client.ip(&[
            "link",
            "add",
            iface,
            "address",
            Self::CLIENT_MAC,
            "type",
            "veth",
            "peer",
            "name",
            iface,
            "address",
            Self::SERVER_MAC,
            "netns",
            topo.server.name(),
        ])?;
        let sides = [
            (&topo.client, topo.client_ip, topo.server_ip, Self::SERVER_MAC),
            (&topo.server, topo.server_ip, topo.client_ip, Self::CLIENT_MAC),
        ];
        for (ns, own, peer, peer_mac) in sides {
            ns.ip(&["addr", "add", &format!("{own}/24"), "dev", iface])?;
            ns.ip(&[
                "neigh",
                "replace",
                &peer.to_string(),
                "lladdr",
                peer_mac,
                "dev",
                iface,
                "nud",
                "permanent",
            ])?;
            ns.ip(&["link", "set", iface, "up"])?;
        }
        topo.client.wait_link_up(iface)?;
        topo.server.wait_link_up(iface)?;
        Ok(topo)
    }
}

/// A pod: its namespace, address and the name of its veth's node end.
#[derive(Debug)]
pub struct Pod {
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    pub node_iface: String,
}

/// A node namespace with `n` pod namespaces, each joined to it by a routed veth (no bridge), the
/// way skiff's CNI wires pods: pod `i` is 198.18.(i+1).2/24 with its default route via the node's
/// end, 198.18.(i+1).1, named `p<i>`. The node forwards, with reverse-path filtering off (like
/// Cilium, since load-balanced and hairpin flows arrive with rewritten addresses), and IPv6 off
/// everywhere so traffic is only what tests send.
#[derive(Debug)]
pub struct StarTopology {
    pub node: NetNs,
    pub pods: Vec<Pod>,
}

impl StarTopology {
    pub fn new(label: &str, pods: usize) -> Result<Self> {
        let node = NetNs::new(&format!("{label}-node"))?;
        for key in
            ["net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6", "net/ipv4/ip_forward"]
        {
            node.sysctl(key, "1")?;
        }
        for key in ["net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"] {
            node.sysctl(key, "0")?;
        }
        let mut topo = StarTopology { node, pods: Vec::with_capacity(pods) };
        for i in 0..pods {
            let ns = NetNs::new(&format!("{label}-p{i}"))?;
            ns.sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
            ns.sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
            let node_iface = format!("p{i}");
            let subnet = i + 1;
            let ip = Ipv4Addr::new(198, 18, subnet as u8, 2);
            let gateway = Ipv4Addr::new(198, 18, subnet as u8, 1);
            topo.node.ip(&[
                "link",
                "add",
                &node_iface,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ])?;
            topo.node.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &node_iface])?;
            topo.node.ip(&["link", "set", &node_iface, "up"])?;
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            ns.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
            topo.pods.push(Pod { ns, ip, node_iface });
        }
        for pod in &topo.pods {
            topo.node.wait_link_up(&pod.node_iface)?;
            pod.ns.wait_link_up("eth0")?;
        }
        Ok(topo)
    }
}
