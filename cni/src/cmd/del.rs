//! DEL: idempotent. The host veth goes (its peer, the /32 route and the datapath's filter with
//! it), then the address; each step succeeds when its object is already gone, and the
//! container's namespace is not needed (it may be gone too).

use super::attachment;
use crate::{
    ipam::Pool,
    names, netlink,
    spec::{config::NetConf, env::Env, error::Result},
};

pub fn del(env: &Env, conf: &NetConf) -> Result<()> {
    let att = attachment(env);
    let host = names::host_veth(&att);
    netlink::run(async |h| netlink::delete_link(h, &host).await.map(drop))?;
    if let Some(ipam) = &conf.ipam {
        Pool::lock(ipam, &conf.name)?.release(&att)?;
    }
    Ok(())
}
