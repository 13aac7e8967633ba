//! `cargo xtask lab e2e` (CI): `up --nodes 2`; an HTTP server pod pinned to node 1 and a
//! `sleep` pod pinned to node 2, both Running; pod-to-pod across the nodes — ping from the sleep
//! pod's network namespace, and a client pod on node 2 fetching from the server, its output read
//! back through `kubectl logs`; the host reaching a pod through its route; `down`, which checks
//! that nothing is left. Teardown runs whether or not the checks pass.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::json;

use super::{
    down,
    kube::{self, PodView},
    state,
    up::{self, IMAGE},
};
use crate::step::{self, step};

const NODES: u8 = 2;
const BODY: &str = "hello from skiff-lab-n1";

pub fn run() -> anyhow::Result<()> {
    skiff_tests::require_root()?;
    if state::load()?.is_some() || !down::leftovers().is_empty() {
        bail!("a lab is up or partly there; `cargo xtask lab down` first (e2e needs a fresh one)");
    }
    let lab = up::run(NODES)?;
    let result = checks();
    if result.is_err() {
        up::print_log_tails(&lab);
    }
    let teardown = step("lab down", down::teardown);
    result?;
    teardown?;
    eprintln!("\nlab e2e passed: pods on both nodes, pod-to-pod ping and TCP across nodes, nothing left.");
    Ok(())
}

fn checks() -> anyhow::Result<()> {
    let [n1, n2] = ["skiff-lab-n1", "skiff-lab-n2"];
    let server_cmd =
        format!("mkdir -p /www && echo '{BODY}' > /www/index.html && exec httpd -f -p 8080 -h /www");
    let (server, sleeper) = step("a server pod on n1 and a sleep pod on n2, Running", || {
        kube::apply(&pod("server", n1, &["sh", "-c", &server_cmd], "Always").to_string())?;
        kube::apply(&pod("sleeper", n2, &["sleep", "3600"], "Always").to_string())?;
        Ok((wait_phase("server", "Running")?, wait_phase("sleeper", "Running")?))
    })?;
    let server_ip = server.ip.clone().context("server pod has no IP")?;
    eprintln!(
        "    server {} on {}, sleeper {} on {}",
        server_ip,
        server.node.as_deref().unwrap_or("?"),
        sleeper.ip.as_deref().unwrap_or("?"),
        sleeper.node.as_deref().unwrap_or("?")
    );
    step(&format!("ping {server_ip} (n1) from the sleep pod's namespace (n2)"), || {
        let netns = format!("--net=/run/netns/skiff-{}", sleeper.uid);
        step::run(Command::new("nsenter").args([
            &netns,
            "/bin/busybox",
            "ping",
            "-c",
            "3",
            "-W",
            "2",
            &server_ip,
        ]))
    })?;
    step(&format!("TCP: a client pod on n2 fetches http://{server_ip}:8080/"), || {
        // A few tries: httpd may still be starting. (busybox wget's -T crashes; `timeout` instead.)
        let fetch = format!(
            "for i in 1 2 3 4 5; do timeout 5 wget -q -O - http://{server_ip}:8080/ && exit 0; sleep 1; done; exit 1"
        );
        kube::apply(&pod("client", n2, &["sh", "-c", &fetch], "Never").to_string())?;
        if let Err(err) = wait_phase("client", "Succeeded") {
            let logs = kube::run(&["logs", "client"]).unwrap_or_default();
            bail!("{err:#}; the client pod's log: {logs:?}");
        }
        let logs = kube::run(&["logs", "client"])?;
        if logs.trim() != BODY {
            bail!("the client pod printed {logs:?}, expected {BODY:?}");
        }
        eprintln!("    client pod's log: {}", logs.trim());
        Ok(())
    })?;
    step(&format!("the host reaches {server_ip} through its route to n1's pod CIDR"), || {
        step::run(
            Command::new("ping").args(["-c", "2", "-W", "2", &server_ip]).stdout(std::process::Stdio::null()),
        )
    })
}

fn pod(name: &str, node: &str, command: &[&str], restart: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": name, "image": IMAGE, "imagePullPolicy": "Never", "command": command}],
        },
    })
}

fn wait_phase(name: &str, phase: &str) -> anyhow::Result<PodView> {
    let mut found = None;
    up::poll(&format!("pod {name} {phase}"), Duration::from_secs(60), || {
        let pod = kube::pods()?.into_iter().find(|p| p.name == name);
        if let Some(p) = &pod
            && (p.phase == "Failed" && phase != "Failed")
        {
            bail!("pod {name} failed");
        }
        found = pod.filter(|p| p.phase == phase);
        Ok(found.is_some())
    })?;
    found.context("pod vanished")
}
