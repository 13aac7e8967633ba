//! The lab's demo: skiff-echo as a Deployment behind a ClusterIP and a NodePort Service, and the
//! traffic that proves the data plane — from a client pod to the ClusterIP, and from the outside
//! namespace to the NodePort on every node — summarised by which pods (on which nodes) answered.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{
    kube,
    probe::{self, Answer},
    topology::{self, NodeSpec},
    up::{self, IMAGE},
};
use crate::progress::{Progress, step_with_progress};

pub const DEPLOYMENT: &str = "echo";
pub const REPLICAS: usize = 6;
/// The ClusterIP Service.
pub const SERVICE: &str = "echo";
/// The NodePort Service.
pub const NODEPORT_SERVICE: &str = "echo-nodeport";
pub const NODE_PORT: u16 = 30080;
/// skiff-echo's TCP echo port, and its NodePort.
pub const ECHO_PORT: u16 = 7000;
pub const ECHO_NODE_PORT: u16 = 30700;
const CLIENT_POD: &str = "lab-client";
/// Requests per path: enough for Maglev to spread them over several pods.
const REQUESTS: usize = 24;
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// `skiff.local/echo:<version>`, the image `cargo xtask echo-image` builds.
pub fn echo_image() -> String {
    format!("skiff.local/echo:{}", env!("CARGO_PKG_VERSION"))
}

fn manifests() -> Vec<Value> {
    let env = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let labels = json!({"app": DEPLOYMENT});
    let ports = |node_ports: bool| {
        let mut ports = vec![
            json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}),
            json!({"name": "echo", "port": ECHO_PORT, "targetPort": 7000, "protocol": "TCP"}),
            json!({"name": "udp", "port": 7001, "targetPort": 7001, "protocol": "UDP"}),
        ];
        if node_ports {
            for (port, node_port) in ports.iter_mut().zip([NODE_PORT, ECHO_NODE_PORT, ECHO_NODE_PORT + 1]) {
                port["nodePort"] = json!(node_port);
            }
        }
        ports
    };
    vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "namespace": "default"},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 2,
                        "containers": [{
                            "name": "echo", "image": echo_image(), "imagePullPolicy": "Never",
                            "env": [
                                env("POD_NAME", "metadata.name"), env("POD_NAMESPACE", "metadata.namespace"),
                                env("POD_IP", "status.podIP"), env("NODE_NAME", "spec.nodeName"),
                            ],
                            "ports": [{"containerPort": 8080}, {"containerPort": 7000}, {"containerPort": 7001, "protocol": "UDP"}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": "default"},
            "spec": {"selector": labels, "ports": ports(false)},
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NODEPORT_SERVICE, "namespace": "default"},
            "spec": {"type": "NodePort", "selector": labels, "ports": ports(true)},
        }),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": CLIENT_POD, "namespace": "default", "labels": {"app": CLIENT_POD}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "client", "image": IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "86400"]}],
            },
        }),
    ]
}

/// Applies the demo and waits until every replica is ready and the client pod runs.
pub fn deploy() -> anyhow::Result<()> {
    step_with_progress(
        &format!(
            "demo: Deployment {DEPLOYMENT} ({REPLICAS} replicas of {}), Services {SERVICE} and {NODEPORT_SERVICE}, pod {CLIENT_POD}",
            echo_image()
        ),
        |progress| {
            for m in manifests() {
                kube::apply(&m.to_string())?;
            }
            wait_ready(progress)
        },
    )
}

fn wait_ready(progress: &Progress) -> anyhow::Result<()> {
    up::poll("the demo ready", READY_TIMEOUT, || {
        let deploy: Value =
            serde_json::from_str(&kube::run(&["get", "deployment", DEPLOYMENT, "-o", "json"])?)?;
        let ready = deploy["status"]["readyReplicas"].as_u64().unwrap_or(0) as usize;
        let client = kube::pods()?.into_iter().find(|p| p.name == CLIENT_POD);
        let client_running = client.as_ref().is_some_and(|p| p.phase == "Running");
        let ready_endpoints = ready_endpoints(SERVICE)?;
        progress.set(format!(
            "{ready}/{REPLICAS} replicas ready, {ready_endpoints} endpoints ready, client {}",
            client.map_or("pending".to_owned(), |p| p.phase)
        ));
        Ok(ready == REPLICAS && ready_endpoints == REPLICAS && client_running)
    })
}

/// Ready endpoints in the Service's EndpointSlices.
fn ready_endpoints(service: &str) -> anyhow::Result<usize> {
    let slices = kube::items(&["endpointslices", "-l", &format!("kubernetes.io/service-name={service}")])?;
    Ok(slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"].as_bool().unwrap_or(true))
        .count())
}

/// The Service's ClusterIP.
pub fn cluster_ip(service: &str) -> anyhow::Result<Ipv4Addr> {
    let svc: Value = serde_json::from_str(&kube::run(&["get", "service", service, "-o", "json"])?)?;
    svc["spec"]["clusterIP"].as_str().context("no clusterIP")?.parse().context("clusterIP")
}

/// The client pod's network namespace (the agent pins it as `skiff-<pod uid>`) and its node.
pub fn client_netns() -> anyhow::Result<(PathBuf, String)> {
    let pod = kube::pods()?.into_iter().find(|p| p.name == CLIENT_POD).context("the client pod is gone")?;
    Ok((PathBuf::from(format!("/run/netns/skiff-{}", pod.uid)), pod.node.unwrap_or_default()))
}

/// One traffic path's result.
#[derive(Debug)]
pub struct PathResult {
    pub label: String,
    pub answers: Vec<Answer>,
    pub errors: Vec<String>,
}

/// Sends the proof traffic, retrying each path until its first request succeeds (the agents
/// program a new Service within moments, not instantly). Fails if any path loses a request.
pub fn prove(nodes: &[NodeSpec]) -> anyhow::Result<Vec<PathResult>> {
    step_with_progress(
        "traffic: a pod → the ClusterIP, the outside → the NodePort on every node",
        |progress| {
            let vip = cluster_ip(SERVICE)?;
            let (client_ns, client_node) = client_netns()?;
            let ext_ns = PathBuf::from("/run/netns").join(topology::EXT_NS);
            let mut paths = vec![(
                format!("pod {CLIENT_POD} ({client_node}) → ClusterIP {vip}:80"),
                client_ns,
                SocketAddr::from((vip, 80)),
            )];
            for node in nodes {
                paths.push((
                    format!("outside {} → NodePort {}:{NODE_PORT}", topology::EXT_IP, node.ip()),
                    ext_ns.clone(),
                    SocketAddr::from((node.ip(), NODE_PORT)),
                ));
            }
            let mut results = Vec::new();
            for (label, netns, addr) in paths {
                progress.set(label.clone());
                up::poll(&format!("a first answer on {label}"), Duration::from_secs(30), || {
                    Ok(probe::in_netns(&netns, || probe::http_get(addr))?.is_ok())
                })?;
                let mut result = PathResult { label, answers: Vec::new(), errors: Vec::new() };
                for outcome in probe::http_many(&netns, addr, REQUESTS)? {
                    match outcome {
                        Ok(a) => result.answers.push(a),
                        Err(e) => result.errors.push(format!("{e:#}")),
                    }
                }
                results.push(result);
            }
            Ok(results)
        },
    )
    .and_then(|results| {
        print_summary(&results);
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.errors.is_empty())
            .map(|r| format!("{}: {} of {REQUESTS} failed ({})", r.label, r.errors.len(), r.errors[0]))
            .collect();
        if !failed.is_empty() {
            bail!("traffic failed: {}", failed.join("; "));
        }
        Ok(results)
    })
}

fn print_summary(results: &[PathResult]) {
    eprintln!();
    eprintln!("{:<58} {:>9}  BY", "TRAFFIC (one new connection per request)", "ANSWERED");
    for r in results {
        let pods: BTreeMap<&str, ()> = r.answers.iter().map(|a| (a.pod.as_str(), ())).collect();
        let nodes: BTreeMap<&str, ()> = r.answers.iter().map(|a| (a.node.as_str(), ())).collect();
        eprintln!(
            "{:<58} {:>9}  {} pods on {} nodes",
            r.label,
            format!("{}/{}", r.answers.len(), r.answers.len() + r.errors.len()),
            pods.len(),
            nodes.len()
        );
    }
    // Per backend: how many answers each path got from it.
    let mut per_pod: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        for a in &r.answers {
            per_pod.entry((a.pod.clone(), a.node.clone())).or_insert_with(|| vec![0; results.len()])[i] += 1;
        }
    }
    eprintln!();
    let mut header = format!("{:<24} {:<14}", "BACKEND POD", "NODE");
    for i in 0..results.len() {
        header.push_str(&format!(" {:>6}", format!("path{}", i + 1)));
    }
    eprintln!("{header}");
    for ((pod, node), counts) in per_pod {
        let mut line = format!("{pod:<24} {node:<14}");
        for c in counts {
            line.push_str(&format!(" {c:>6}"));
        }
        eprintln!("{line}");
    }
    eprintln!("(path N = the Nth line of the table above)");
}

/// Whether the answers of every path together came from pods on more than one node.
pub fn spans_nodes(results: &[PathResult]) -> bool {
    results
        .iter()
        .all(|r| r.answers.iter().map(|a| &a.node).collect::<std::collections::BTreeSet<_>>().len() > 1)
}
