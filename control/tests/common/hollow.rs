//! Hollow nodes (kubemark's idea): Node objects whose "agent" is a loop in the test that does
//! exactly what the control plane sees of a real one — renews the node's Lease, reports pods
//! bound to it Running and Ready after a start-up delay (with an address), ends the containers of
//! pods that are not restarted forever (Jobs') after another delay, and finishes graceful
//! deletions — so the control loops can be exercised with many nodes and no containers.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct Options {
    /// From a pod's binding to it reporting Ready.
    pub start_delay: Duration,
    /// How often Leases are renewed.
    pub renew_every: Duration,
    /// Allocatable cpu and memory of each node.
    pub cpu: &'static str,
    pub memory: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            start_delay: Duration::from_millis(100),
            renew_every: Duration::from_millis(500),
            cpu: "4",
            memory: "16Gi",
        }
    }
}

/// Running hollow nodes; dropping them stops their agents.
pub struct Hollow {
    /// Nodes whose agent is stopped (no renewals, no pod handling).
    stopped: Arc<Mutex<HashSet<String>>>,
    /// Pods (namespace/name) the agents report not Ready although they run.
    unready: Arc<Mutex<HashSet<String>>>,
    client: Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `time` as a Kubernetes `Time` (whole seconds).
fn time(at: jiff::Timestamp) -> serde_json::Value {
    serde_json::to_value(Time(at)).expect("time")
}

/// `time` as a Kubernetes `MicroTime`, what Lease renewals carry.
fn micro_time(at: jiff::Timestamp) -> serde_json::Value {
    serde_json::to_value(MicroTime(at)).expect("micro time")
}

/// Registers `names` as Ready nodes (with `labels` on each) and runs their agents.
pub async fn start(client: &Client, names: &[&str], labels: serde_json::Value, options: Options) -> Hollow {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut host_ips = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let mut node_labels = json!({"kubernetes.io/hostname": name});
        if let (Some(l), Some(extra)) = (node_labels.as_object_mut(), labels.as_object()) {
            l.extend(extra.clone());
        }
        let host_ip = format!("192.168.{}.{}", i / 250, i % 250 + 1);
        let now = jiff::Timestamp::now();
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"podCIDR": format!("10.{}.{}.0/24", 100 + i / 256, i % 256)},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastHeartbeatTime": time(now), "lastTransitionTime": time(now)}],
                "allocatable": {"cpu": options.cpu, "memory": options.memory, "pods": "110"},
                "capacity": {"cpu": options.cpu, "memory": options.memory, "pods": "110"},
                "addresses": [{"type": "InternalIP", "address": host_ip}],
            },
        }))
        .expect("node");
        nodes.create(&PostParams::default(), &node).await.expect("create node");
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_time(now)},
        }))
        .expect("lease");
        leases.create(&PostParams::default(), &lease).await.expect("create lease");
        host_ips.insert((*name).to_owned(), host_ip);
    }
    let stopped: Arc<Mutex<HashSet<String>>> = Arc::default();
    let unready: Arc<Mutex<HashSet<String>>> = Arc::default();
    let ours: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let renew = tokio::spawn(renew_leases(leases, ours, stopped.clone(), options.renew_every));
    let agents =
        Agents { client: client.clone(), host_ips, stopped: stopped.clone(), unready: unready.clone() };
    let pods = tokio::spawn(run_pods(agents, options.start_delay));
    Hollow { stopped, unready, client: client.clone(), tasks: vec![renew, pods] }
}

async fn renew_leases(
    leases: Api<Lease>,
    ours: Vec<String>,
    stopped: Arc<Mutex<HashSet<String>>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let live: Vec<&String> = ours.iter().filter(|n| !lock(&stopped).contains(*n)).collect();
        for name in live {
            let patch = json!({"spec": {"renewTime": micro_time(jiff::Timestamp::now())}});
            if let Err(e) = leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                eprintln!("hollow {name}: renewing its Lease failed: {e}");
            }
        }
    }
}

/// What the pod-handling half of the agents shares.
struct Agents {
    client: Client,
    /// Our nodes and their addresses.
    host_ips: HashMap<String, String>,
    stopped: Arc<Mutex<HashSet<String>>>,
    unready: Arc<Mutex<HashSet<String>>>,
}

async fn run_pods(agents: Agents, start_delay: Duration) {
    let all: Api<Pod> = Api::all(agents.client.clone());
    // Watch errors (a dropped connection, an expired resourceVersion) are retried after a
    // backoff; the stream itself never ends.
    let mut events = watcher(all, watcher::Config::default()).default_backoff().applied_objects().boxed();
    let mut next_ip: u32 = 0x0af4_0002; // 10.244.0.2
    let mut started: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(pod) => pod,
            Err(e) => {
                eprintln!("hollow agents: pod watch failed: {e}");
                continue;
            }
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        let Some(host_ip) = agents.host_ips.get(&node) else { continue };
        if lock(&agents.stopped).contains(&node) {
            continue;
        }
        let (ns, name) = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let api: Api<Pod> = Api::namespaced(agents.client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            // Containers stopped: the agent finishes the deletion.
            let uid = pod.metadata.uid.clone();
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid, resource_version: None }),
                ..DeleteParams::default()
            };
            let _ = api.delete(&name, &params).await;
            continue;
        }
        let key = format!("{ns}/{name}/{}", pod.metadata.uid.clone().unwrap_or_default());
        if !started.insert(key) {
            continue;
        }
        let exit_code = run_to_completion(&pod);
        next_ip += 1;
        let ip = std::net::Ipv4Addr::from(next_ip).to_string();
        let host_ip = host_ip.clone();
        let (unready, stopped) = (agents.unready.clone(), agents.stopped.clone());
        tokio::spawn(async move {
            tokio::time::sleep(start_delay).await;
            if lock(&stopped).contains(&node) {
                return;
            }
            let ready = !lock(&unready).contains(&format!("{ns}/{name}"));
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status(&ip, &host_ip, ready)))
                .await;
            // A pod that is not restarted forever (a Job's) runs for another start-up delay.
            if let Some(exit_code) = exit_code {
                tokio::time::sleep(start_delay).await;
                if !lock(&stopped).contains(&node) {
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&finished(exit_code)))
                        .await;
                }
            }
        });
    }
}

/// For a pod whose restart policy is not `Always`: the exit code its containers end with, 1 when
/// their command line says `exit 1` and 0 otherwise.
fn run_to_completion(pod: &Pod) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    if spec.restart_policy.as_deref().unwrap_or("Always") == "Always" {
        return None;
    }
    let words =
        spec.containers.iter().flat_map(|c| c.command.iter().flatten().chain(c.args.iter().flatten()));
    Some(if words.cloned().collect::<Vec<_>>().join(" ").contains("exit 1") { 1 } else { 0 })
}

/// The status of a pod whose containers exited with `exit_code`.
fn finished(exit_code: i32) -> serde_json::Value {
    let now = time(jiff::Timestamp::now());
    let phase = if exit_code == 0 { "Succeeded" } else { "Failed" };
    json!({"status": {"phase": phase,
    "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "startedAt": now, "finishedAt": now}}}],
    "conditions": [
        {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
        {"type": "Ready", "status": "False", "lastTransitionTime": now},
    ]}})
}

fn status(ip: &str, host_ip: &str, ready: bool) -> serde_json::Value {
    let ready = if ready { "True" } else { "False" };
    let now = time(jiff::Timestamp::now());
    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip,
    "hostIPs": [{"ip": host_ip}], "startTime": now,
    "conditions": [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
        {"type": "Ready", "status": ready, "lastTransitionTime": now},
    ]}})
}

impl Hollow {
    /// Stops `node`'s agent: no more Lease renewals, its pods left as they are.
    pub fn stop(&self, node: &str) {
        lock(&self.stopped).insert(node.to_owned());
    }

    /// Reports the running pod `namespace/name` Ready or not (a readiness probe flipping).
    pub async fn set_ready(&self, namespace: &str, name: &str, ready: bool) {
        let key = format!("{namespace}/{name}");
        if ready {
            lock(&self.unready).remove(&key);
        } else {
            lock(&self.unready).insert(key);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = api.get(name).await.expect("pod");
        let status_now = pod.status.unwrap_or_default();
        let ip = status_now.pod_ip.expect("a running pod has an address");
        let host_ip = status_now.host_ip.expect("a running pod has a host address");
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status(&ip, &host_ip, ready)))
            .await
            .expect("status");
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
