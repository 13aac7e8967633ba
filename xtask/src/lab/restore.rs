//! Backup and restore on a running lab: `skiff-control backup` through the API server, the
//! control plane stopped and its store deleted, `skiff-control restore`, the control plane
//! started again — and then the same Services (ClusterIPs, node ports), pods, EndpointSlices and
//! Nodes, with Service traffic still answered. The agents keep running throughout.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};

use super::{
    demo, kube, probe, procs,
    state::{self, LabState},
    topology::{self, LAB_DIR, NodeSpec},
    up,
};
use crate::step::{self, step};

/// What must come back: per object (kind/namespace/name), its uid and, for Services, the
/// ClusterIP and node ports.
fn identities() -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in kube::items(&["services,endpointslices,pods,nodes", "-A"])? {
        let meta = &item["metadata"];
        let name = format!(
            "{}/{}/{}",
            item["kind"].as_str().unwrap_or("?"),
            meta["namespace"].as_str().unwrap_or("-"),
            meta["name"].as_str().unwrap_or("?")
        );
        let mut identity = meta["uid"].as_str().unwrap_or_default().to_owned();
        if item["kind"] == "Service" {
            let ports: Vec<String> = item["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["nodePort"].as_u64().map(|n| n.to_string()))
                .collect();
            identity = format!(
                "{identity} {} {}",
                item["spec"]["clusterIP"].as_str().unwrap_or("-"),
                ports.join(",")
            );
        }
        out.insert(name, identity);
    }
    Ok(out)
}

fn answered(netns: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    let answers = probe::http_many(netns, addr, 10)?;
    let failed: Vec<String> =
        answers.iter().filter_map(|a| a.as_ref().err().map(|e| format!("{e:#}"))).collect();
    if !failed.is_empty() {
        bail!("{} of 10 requests to {addr} failed, e.g. {}", failed.len(), failed[0]);
    }
    Ok(())
}

pub fn backup_and_restore(client_ns: &Path, nodes: &[NodeSpec]) -> anyhow::Result<()> {
    let mut lab: LabState = state::load()?.context("no lab state")?;
    let backup = Path::new(LAB_DIR).join("backup.snap");
    let before = identities()?;
    step(&format!("skiff-control backup ({} objects that must come back)", before.len()), || {
        step::run(
            Command::new(topology::bin_dir().join("skiff-control"))
                .arg("backup")
                .arg(&backup)
                .arg("--kubeconfig")
                .arg(topology::kubeconfig()),
        )
    })?;
    let store = up::control_data().join("store.redb");
    step("stop skiff-control and delete its store", || {
        if let Some(pid) = lab.control_pid.take() {
            procs::stop(pid, LAB_DIR, Duration::from_secs(10));
        }
        std::fs::remove_file(&store).with_context(|| format!("deleting {}", store.display()))
    })?;
    step("skiff-control restore", || {
        step::run(
            Command::new(topology::bin_dir().join("skiff-control"))
                .arg("restore")
                .arg(&backup)
                .arg("--data-dir")
                .arg(up::control_data()),
        )
    })?;
    step("start skiff-control on the restored store", || up::serve_control(&mut lab))?;
    step("the Services (ClusterIPs, node ports), pods, EndpointSlices and Nodes came back", || {
        let after = identities()?;
        let missing: Vec<String> = before
            .iter()
            .filter(|(name, identity)| after.get(*name) != Some(identity))
            .map(|(name, identity)| format!("{name} was {identity}, now {:?}", after.get(name)))
            .collect();
        if !missing.is_empty() {
            bail!("not restored as they were: {}", missing.join("; "));
        }
        Ok(())
    })?;
    let vip = demo::cluster_ip(demo::SERVICE)?;
    let ext_ns = Path::new("/run/netns").join(topology::EXT_NS);
    step("Service traffic after the restore: pod → ClusterIP, outside → each NodePort", || {
        answered(client_ns, SocketAddr::from((vip, 80)))?;
        for node in nodes {
            answered(&ext_ns, SocketAddr::from((node.ip(), demo::NODE_PORT)))?;
        }
        Ok(())
    })
}
