//! STATUS, GC and VERSION.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::{
    datapath,
    ipam::Pool,
    names, netlink,
    spec::{
        SUPPORTED_VERSIONS,
        config::NetConf,
        error::{CniError, Result, code},
    },
};

/// STATUS: ready for ADDs only with the datapath loaded and an address left.
pub fn status(conf: &NetConf) -> Result<()> {
    if conf.load_balancer {
        datapath::available(&conf.bpf_pin_dir)?;
    }
    let free = Pool::lock(conf.ipam()?, &conf.name)?.free()?;
    if free == 0 {
        return Err(CniError::new(code::UNAVAILABLE, "the pod address pool is exhausted"));
    }
    Ok(())
}

/// GC: everything of an attachment not in `cni.dev/valid-attachments` goes — addresses and host
/// veths (found by their names, so even those whose ADD died before recording anything; their
/// routes and datapath filters go with them).
pub fn gc(conf: &NetConf) -> Result<()> {
    let valid = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "GC needs cni.dev/valid-attachments"))?;
    Pool::lock(conf.ipam()?, &conf.name)?.gc(valid)?;
    let keep: BTreeSet<String> = valid.iter().map(names::host_veth).collect();
    netlink::run(async |h| {
        for name in netlink::link_names(h).await? {
            if names::is_host_veth(&name) && !keep.contains(&name) {
                netlink::delete_link(h, &name).await?;
            }
        }
        Ok(())
    })
}

/// VERSION: the versions this plugin speaks, in the format of the version `asked` about.
pub fn version(asked: &str) -> Value {
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
}
