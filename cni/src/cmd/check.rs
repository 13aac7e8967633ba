//! CHECK: the attachment is still as ADD left it (per its `prevResult`): the address recorded in
//! the pool, the host veth up with its route and the datapath's filter on its ingress, and inside the container
//! the interface up with its MAC, address and default route.

use std::net::Ipv4Addr;

use super::{GATEWAY, attachment};
use crate::{
    ipam::Pool,
    names, netlink,
    spec::{
        config::NetConf,
        env::Env,
        error::{CniError, Result, code},
        result::CniResult,
    },
};

fn failed(msg: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

pub fn check(env: &Env, conf: &NetConf) -> Result<()> {
    let previous = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult"))?;
    let previous = CniResult::from_json(previous)
        .ok_or_else(|| CniError::new(code::DECODE, "prevResult is not a CNI result"))?;
    let ip: Ipv4Addr = previous
        .ips
        .iter()
        .find_map(|c| c.address.strip_suffix("/32")?.parse().ok())
        .ok_or_else(|| failed("prevResult holds no /32 address of this plugin"))?;
    let att = attachment(env);
    let recorded = Pool::lock(conf.ipam()?, &conf.name)?.find(&att)?;
    if recorded != Some(ip) {
        return Err(failed(format!("the pool records {recorded:?} for this attachment, not {ip}")));
    }
    let host = names::host_veth(&att);
    netlink::run(async |h| {
        let link =
            netlink::link(h, &host).await?.ok_or_else(|| failed(format!("host veth {host} is missing")))?;
        if !netlink::is_up(&link) {
            return Err(failed(format!("host veth {host} is down")));
        }
        let routed = netlink::routes(h)
            .await?
            .iter()
            .any(|(dst, len, _, oif)| *dst == ip && *len == 32 && *oif == Some(link.header.index));
        if !routed {
            return Err(failed(format!("no route to {ip} via {host}")));
        }
        let programs = netlink::ingress_bpf_programs(h, link.header.index).await?;
        if !programs.iter().any(|p| p.starts_with(skiff_common::names::PROG_LB)) {
            return Err(failed(format!(
                "the Service datapath is not attached to {host} (ingress has {programs:?})"
            )));
        }
        Ok(())
    })?;
    let expected_mac = names::format_mac(&names::mac(&att, "pod"));
    let netns = env.netns()?;
    netlink::in_netns(netns, || {
        netlink::run(async |h| {
            let link = netlink::link(h, &env.ifname)
                .await?
                .ok_or_else(|| failed(format!("{} is missing in the container", env.ifname)))?;
            if !netlink::is_up(&link) {
                return Err(failed(format!("{} is down", env.ifname)));
            }
            if netlink::mac_of(&link).map(|m| names::format_mac(&m)) != Some(expected_mac.clone()) {
                return Err(failed(format!("{} does not have its MAC {expected_mac}", env.ifname)));
            }
            if !netlink::addresses(h, link.header.index).await?.contains(&(ip, 32)) {
                return Err(failed(format!("{} does not hold {ip}/32", env.ifname)));
            }
            let default = netlink::routes(h)
                .await?
                .iter()
                .any(|(dst, len, gw, _)| dst.is_unspecified() && *len == 0 && *gw == Some(GATEWAY));
            if !default {
                return Err(failed(format!("no default route via {GATEWAY}")));
            }
            Ok(())
        })
    })
}
