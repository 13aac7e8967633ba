//! Taking the eBPF datapath off a node, for an agent that switches to the iptables mode: the load
//! balancer's filters on the pod veths, then everything pinned under the pin dir (a pinned link
//! detaches when its pin goes, maps and programs are freed when nothing holds them).

use std::path::Path;

use aya::programs::links::PinnedLink;
use skiff_common::names;

use super::DatapathError;

/// What [`remove_all`] took away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub veth_filters: usize,
    pub links: usize,
    pub pins: usize,
}

/// The host ends of the pod veths skiff-cni made, in the calling thread's network namespace.
pub fn pod_veths() -> Vec<String> {
    skiff_cni::netlink::run(async |h| skiff_cni::netlink::link_names(h).await)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| skiff_cni::names::is_host_veth(n))
        .collect()
}

/// Removes the datapath: call on a thread in the node's network namespace (the veths are there;
/// the pins are on the host's bpffs either way).
pub fn remove_all(pin_dir: &Path) -> Result<Removed, DatapathError> {
    let mut removed = Removed::default();
    for veth in pod_veths() {
        if skiff_cni::datapath::detach(&veth).is_ok() {
            removed.veth_filters += 1;
        }
    }
    let bpffs_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DatapathError::Bpffs { path, source }
    };
    let links = pin_dir.join(names::PIN_LINKS_DIR);
    for entry in std::fs::read_dir(&links).into_iter().flatten().flatten() {
        let path = entry.path();
        match PinnedLink::from_pin(&path) {
            Ok(link) => {
                link.unpin().map_err(bpffs_err(&path))?;
                removed.links += 1;
            }
            Err(_) => std::fs::remove_file(&path).map_err(bpffs_err(&path))?,
        }
    }
    for dir in [links, pin_dir.join(names::PIN_PROGS_DIR), pin_dir.to_owned()] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_file() {
                std::fs::remove_file(&path).map_err(bpffs_err(&path))?;
                removed.pins += 1;
            }
        }
    }
    Ok(removed)
}
