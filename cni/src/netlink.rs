//! The rtnetlink operations the plugin needs, each run on a small current-thread runtime; work
//! inside a pod runs on a thread that has entered the pod's network namespace.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd as _,
    path::Path,
};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage},
        neighbour::NeighbourState,
        route::RouteScope,
    },
};

use crate::spec::error::{CniError, Result, code};

/// Runs `f` with a netlink handle in the current network namespace.
pub fn run<T>(f: impl AsyncFnOnce(&Handle) -> Result<T>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| CniError::io("starting the netlink runtime", e))?;
    rt.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| CniError::io("opening a netlink socket", e))?;
        let task = tokio::spawn(connection);
        let out = f(&handle).await;
        task.abort();
        out
    })
}

/// Runs `f` on a fresh thread of its own (scoped: `f` may borrow) that first enters the network
/// namespace `netns`; with `None` it stays in this process's, still on a fresh thread. The thread
/// ends with `f`, so no pooled thread is ever left in another namespace, and whatever `f` does to
/// its own thread (an unshare) ends with it. Fails if entering fails (an OS error) or the thread
/// panicked.
pub fn on_thread<T: Send>(netns: Option<&File>, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = netns {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
    })
}

/// Runs `f` in the network namespace at `netns` (on a thread of its own, which enters it).
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = open_netns(netns)?;
    on_thread(Some(&file), f).unwrap_or_else(|e| {
        // Only entering the namespace fails with an OS error; otherwise the thread panicked.
        Err(match e.raw_os_error() {
            Some(errno) => {
                CniError::new(code::IO, format!("entering the network namespace {}", netns.display()))
                    .details(nix::errno::Errno::from_raw(errno))
            }
            None => CniError::new(code::IO, "the namespace thread panicked"),
        })
    })
}

/// Opens a network namespace file; a missing one is an unknown container (code 3).
pub fn open_netns(netns: &Path) -> Result<File> {
    File::open(netns).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { code::UNKNOWN_CONTAINER } else { code::IO };
        CniError::new(code, format!("cannot open the network namespace {}", netns.display())).details(e)
    })
}

fn netlink(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> CniError {
    move |e| CniError::new(code::NETLINK, what.to_string()).details(e)
}

fn is_errno(err: &rtnetlink::Error, errno: nix::errno::Errno) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -(errno as i32))
}

/// The index of link `name`, if it exists.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    Ok(link(handle, name).await?.map(|l| l.header.index))
}

/// Link `name`, if it exists.
pub async fn link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("looking up {name}"))(e)),
    }
}

/// Every link's name (for sweeping leftovers).
pub async fn link_names(handle: &Handle) -> Result<Vec<String>> {
    let mut links = handle.link().get().execute();
    let mut names = Vec::new();
    while let Some(link) = links.try_next().await.map_err(netlink("listing links"))? {
        names.extend(link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }));
    }
    Ok(names)
}

pub fn mac_of(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => mac.as_slice().try_into().ok(),
        _ => None,
    })
}

pub fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

/// A veth pair: `host` here, `peer` created directly inside the namespace `netns` (so its name
/// never clashes with anything on the host).
#[derive(Debug)]
pub struct VethSpec<'a> {
    pub host: &'a str,
    pub host_mac: [u8; 6],
    pub peer: &'a str,
    pub peer_mac: [u8; 6],
    pub mtu: u32,
    pub netns: &'a File,
}

pub async fn create_veth(handle: &Handle, spec: &VethSpec<'_>) -> Result<()> {
    let peer = LinkUnspec::new_with_name(spec.peer)
        .address(spec.peer_mac.to_vec())
        .mtu(spec.mtu)
        .setns_by_fd(spec.netns.as_raw_fd())
        .build();
    let message = LinkVeth::new(spec.host, spec.peer)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .address(spec.host_mac.to_vec())
        .mtu(spec.mtu)
        .build();
    handle.link().add(message).execute().await.map_err(|e| {
        let code =
            if is_errno(&e, nix::errno::Errno::EEXIST) { code::INTERFACE_EXISTS } else { code::NETLINK };
        CniError::new(code, format!("creating the veth pair {} / {}", spec.host, spec.peer)).details(e)
    })
}

pub async fn set_up(handle: &Handle, index: u32) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink("setting a link up"))
}

/// Deletes link `name`; `false` if there was none.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool> {
    let Some(index) = link_index(handle, name).await? else { return Ok(false) };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(false),
        Err(e) => Err(netlink(format!("deleting {name}"))(e)),
    }
}

/// `ip/32 dev <index> scope link` (replacing any route to that address).
pub async fn route_to_host(handle: &Handle, ip: Ipv4Addr, index: u32) -> Result<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    handle.route().add(route).replace().execute().await.map_err(netlink(format!("adding a route to {ip}")))
}

/// The default route via `gateway` on `index`.
pub async fn default_route(handle: &Handle, gateway: Ipv4Addr, index: u32) -> Result<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(index)
        .build();
    handle.route().add(route).replace().execute().await.map_err(netlink("adding the default route"))
}

pub async fn add_address(handle: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    match handle.address().add(index, IpAddr::V4(ip), prefix).execute().await {
        Err(e) if !is_errno(&e, nix::errno::Errno::EEXIST) => {
            Err(netlink(format!("adding {ip}/{prefix}"))(e))
        }
        _ => Ok(()),
    }
}

/// A permanent neighbour entry: `ip` is at `mac` on `index` (no ARP needed for the gateway).
pub async fn permanent_neighbour(handle: &Handle, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
    handle
        .neighbours()
        .add(index, IpAddr::V4(ip))
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(netlink(format!("adding the neighbour entry for {ip}")))
}

/// IPv4 addresses on link `index`.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut stream = handle.address().get().set_link_index_filter(index).execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(netlink("listing addresses"))? {
        for attr in &msg.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                out.push((*ip, msg.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// IPv4 routes of the main table as (destination, prefix, gateway, output interface).
pub async fn routes(handle: &Handle) -> Result<Vec<(Ipv4Addr, u8, Option<Ipv4Addr>, Option<u32>)>> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    let mut stream = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(netlink("listing routes"))? {
        let (mut dst, mut gw, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        out.push((dst, msg.header.destination_prefix_length, gw, oif));
    }
    Ok(out)
}

/// Writes an interface sysctl (`/proc/sys/net/ipv4/conf/<iface>/<key>`).
pub fn sysctl(iface: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/{key}");
    std::fs::write(&path, value).map_err(|e| CniError::io(format!("writing {path}"), e))
}

/// The names of the BPF programs of the classic tc filters on the ingress of link `index`.
pub async fn ingress_bpf_programs(handle: &Handle, index: u32) -> Result<Vec<String>> {
    use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};
    let index =
        i32::try_from(index).map_err(|_| CniError::new(code::NETLINK, "interface index overflows"))?;
    let mut stream = handle.traffic_filter(index).get().ingress().execute();
    let mut names = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(netlink("listing tc filters"))? {
        for attr in &msg.attributes {
            if let TcAttribute::Options(options) = attr {
                names.extend(options.iter().filter_map(|o| match o {
                    TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => Some(name.clone()),
                    _ => None,
                }));
            }
        }
    }
    Ok(names)
}
