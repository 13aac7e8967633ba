//! ADD: an address from the pool, a routed veth (host side without an address, a /32 route to
//! the pod), the Service datapath on the host side, then the pod side (its /32, a link-local
//! gateway with a permanent neighbour entry, the default route). Anything done before a failure
//! is undone before the error is returned.

use std::{fs::File, net::Ipv4Addr, path::Path};

use super::{GATEWAY, attachment};
use crate::{
    datapath,
    ipam::Pool,
    names, netlink,
    spec::{
        config::{Attachment, NetConf},
        env::Env,
        error::{CniError, Result, code},
        result::{CniResult, Interface, IpConfig, Route},
    },
};

pub fn add(env: &Env, conf: &NetConf) -> Result<CniResult> {
    if conf.load_balancer {
        datapath::available(&conf.bpf_pin_dir)?;
    }
    let ipam = conf.ipam()?;
    let netns_path = env.netns()?;
    let netns = netlink::open_netns(netns_path)?;
    let att = attachment(env);
    let host = names::host_veth(&att);
    let exists = netlink::in_netns(netns_path, || {
        netlink::run(async |h| Ok(netlink::link_index(h, &env.ifname).await?.is_some()))
    })?;
    if exists {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            format!("interface {} already exists in {}", env.ifname, netns_path.display()),
        ));
    }
    let ip = Pool::lock(ipam, &conf.name)?.allocate(&att)?;
    pause_at("allocated");
    match wire(env, conf, &att, &host, &netns, netns_path, ip) {
        Ok(result) => Ok(merge_previous(conf, result)),
        Err(err) => {
            // Leave nothing half-done: the veth (and with it routes and filter), the address.
            let _ = netlink::run(async |h| netlink::delete_link(h, &host).await);
            let _ = Pool::lock(ipam, &conf.name).and_then(|p| p.release(&att));
            Err(err)
        }
    }
}

/// Creates the attachment's veth (host side `host`, the other in the pod's namespace `netns` at
/// `netns_path`) and configures both sides for the pod's address `ip`.
fn wire(
    env: &Env,
    conf: &NetConf,
    att: &Attachment,
    host: &str,
    netns: &File,
    netns_path: &Path,
    ip: Ipv4Addr,
) -> Result<CniResult> {
    let (host_mac, pod_mac) = (names::mac(att, "host"), names::mac(att, "pod"));
    netlink::run(async |h| {
        // A veth of this attachment left by an ADD killed half-way goes first.
        netlink::delete_link(h, host).await?;
        let spec =
            netlink::VethSpec { host, host_mac, peer: &env.ifname, peer_mac: pod_mac, mtu: conf.mtu, netns };
        netlink::create_veth(h, &spec).await?;
        let index = netlink::link_index(h, host)
            .await?
            .ok_or_else(|| CniError::new(code::NETLINK, format!("{host} vanished after its creation")))?;
        // Routed: the node forwards the pod's packets; replies of translated flows and hairpin
        // traffic arrive with sources strict reverse-path filtering would drop, and a reply to a
        // NodePort client leaves the pod's veth with the node's own address as its source, which
        // the kernel takes for a martian unless the veth accepts local sources.
        netlink::sysctl(host, "forwarding", "1")?;
        netlink::sysctl(host, "rp_filter", "0")?;
        netlink::sysctl(host, "accept_local", "1")?;
        netlink::set_up(h, index).await?;
        netlink::route_to_host(h, ip, index).await
    })?;
    pause_at("veth");
    // The load balancer is on the veth before the pod side is configured: no packet the pod can
    // send escapes it (attaching takes well under a millisecond: see datapath.rs).
    if conf.load_balancer {
        datapath::attach(&conf.bpf_pin_dir, host)?;
    }
    pause_at("attached");
    netlink::in_netns(netns_path, || {
        netlink::run(async |h| {
            let index = netlink::link_index(h, &env.ifname).await?.ok_or_else(|| {
                CniError::new(code::NETLINK, format!("{} is missing in the container", env.ifname))
            })?;
            netlink::add_address(h, index, ip, 32).await?;
            netlink::set_up(h, index).await?;
            netlink::route_to_host(h, GATEWAY, index).await?;
            netlink::permanent_neighbour(h, index, GATEWAY, host_mac).await?;
            netlink::default_route(h, GATEWAY, index).await
        })
    })?;
    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: host.to_owned(),
                mac: names::format_mac(&host_mac),
                mtu: Some(conf.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: env.ifname.clone(),
                mac: names::format_mac(&pod_mac),
                mtu: Some(conf.mtu),
                sandbox: netns_path.display().to_string(),
            },
        ],
        ips: vec![IpConfig {
            address: format!("{ip}/32"),
            gateway: Some(GATEWAY.to_string()),
            interface: Some(1),
        }],
        routes: vec![Route { dst: "0.0.0.0/0".into(), gw: Some(GATEWAY.to_string()) }],
        dns: conf.dns.clone(),
    })
}

/// Crash-test hook: with `SKIFF_CNI_PAUSE_AT=<step>` in its environment, ADD stops at that step
/// — after writing the step's name to the file `SKIFF_CNI_PAUSE_MARKER` — and waits to be killed.
/// The crash tests SIGKILL it there and check that DEL and GC reclaim everything.
fn pause_at(step: &str) {
    if std::env::var("SKIFF_CNI_PAUSE_AT").as_deref() == Ok(step) {
        if let Ok(marker) = std::env::var("SKIFF_CNI_PAUSE_MARKER") {
            let _ = std::fs::write(marker, step);
        }
        loop {
            std::thread::park();
        }
    }
}

/// After other plugins (if any ran first), this plugin's interfaces, addresses and routes are
/// added to theirs.
fn merge_previous(conf: &NetConf, mine: CniResult) -> CniResult {
    let Some(mut previous) = conf.prev_result.as_ref().and_then(CniResult::from_json) else { return mine };
    let offset = previous.interfaces.len();
    previous.interfaces.extend(mine.interfaces);
    previous.ips.extend(mine.ips.into_iter().map(|mut ip| {
        ip.interface = ip.interface.map(|i| i + offset);
        ip
    }));
    previous.routes.extend(mine.routes);
    if previous.dns == Default::default() {
        previous.dns = mine.dns;
    }
    previous
}
