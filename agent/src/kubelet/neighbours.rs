//! Neighbour entries the kernel keeps resolved for the other nodes' addresses ("managed" entries,
//! Linux ≥ 5.16): the uplink program forwards frames to other nodes with XDP and looks their MAC
//! up in the kernel's FIB, which from XDP can only read a neighbour, never start resolving one. A
//! managed entry is probed by the kernel on its own, so the lookup finds a MAC even before any
//! other traffic went to that node.
//!
//! skiff owns exactly the managed entries on the uplink: it adds them for the nodes it routes
//! to and deletes the ones of nodes that are gone.

use std::{collections::BTreeSet, net::Ipv4Addr};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState,
    },
};

/// The managed neighbour entries on interface `ifindex`.
pub async fn managed(
    handle: &Handle,
    ifindex: u32,
) -> Result<Vec<(Ipv4Addr, NeighbourMessage)>, rtnetlink::Error> {
    let mut stream = handle.neighbours().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await? {
        if msg.header.ifindex != ifindex {
            continue;
        }
        let mut ip = None;
        let mut is_managed = false;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(a.to_owned()),
                NeighbourAttribute::ExtFlags(f) => is_managed = f.contains(NeighbourExtFlags::Managed),
                _ => {}
            }
        }
        if let (Some(ip), true) = (ip, is_managed) {
            out.push((ip, msg));
        }
    }
    Ok(out)
}

/// Makes the managed entries on `ifindex` exactly `want`. Failures are reported; the rest is
/// still applied.
pub async fn sync(handle: &Handle, ifindex: u32, want: &BTreeSet<Ipv4Addr>) -> Result<(), Vec<String>> {
    let have = managed(handle, ifindex).await.map_err(|e| vec![format!("listing neighbours: {e}")])?;
    let mut errors = Vec::new();
    for ip in want {
        if have.iter().any(|(h, _)| h == ip) {
            continue;
        }
        let mut req = handle.neighbours().add(ifindex, (*ip).into()).replace();
        // No link-layer address: the kernel resolves it and keeps it resolved.
        req.message_mut().header.state = NeighbourState::None;
        req.message_mut().attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        if let Err(e) = req.execute().await {
            errors.push(format!("managed neighbour {ip}: {e}"));
        }
    }
    for (ip, msg) in have {
        if !want.contains(&ip)
            && let Err(e) = handle.neighbours().del(msg).execute().await
        {
            errors.push(format!("deleting managed neighbour {ip}: {e}"));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}
