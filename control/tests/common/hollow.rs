//! Hollow nodes (kubemark's idea): Node objects whose "agent" is a loop in the test that does
//! exactly what the control plane sees of a real one — renews the node's Lease, reports pods
//! bound to it Running and Ready after a start-up delay (with an address), and finishes graceful
//! deletions — so the control loops can be exercised with many nodes and no containers.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::{Node, Pod}};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
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
        Self { start_delay: Duration::from_millis(100), renew_every: Duration::from_millis(500), cpu: "4", memory: "16Gi" }
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

fn now() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Second).expect("round").to_string()
}

fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// Registers `names` as Ready nodes (with `labels` on each) and runs their agents.
pub async fn start(client: &Client, names: &[String], labels: serde_json::Value, options: Options) -> Hollow {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for (i, name) in names.iter().enumerate() {
        let mut node_labels = json!({"kubernetes.io/hostname": name});
        if let (Some(l), Some(extra)) = (node_labels.as_object_mut(), labels.as_object()) {
            l.extend(extra.clone());
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"podCIDR": format!("10.{}.{}.0/24", 100 + i / 256, i % 256)},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now()}],
                "allocatable": {"cpu": options.cpu, "memory": options.memory, "pods": "110"},
                "capacity": {"cpu": options.cpu, "memory": options.memory, "pods": "110"},
                "addresses": [{"type": "InternalIP", "address": format!("192.168.{}.{}", i / 250, i % 250 + 1)}],
            },
        }))
        .expect("node");
        nodes.create(&PostParams::default(), &node).await.expect("create node");
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
        }))
        .expect("lease");
        leases.create(&PostParams::default(), &lease).await.expect("create lease");
    }
    let hollow = Hollow {
        stopped: Arc::default(),
        unready: Arc::default(),
        client: client.clone(),
        tasks: Vec::new(),
    };
    let ours: Arc<HashSet<String>> = Arc::new(names.iter().cloned().collect());
    let renew = tokio::spawn(renew_leases(leases, ours.clone(), hollow.stopped.clone(), options.renew_every));
    let pods = tokio::spawn(run_pods(client.clone(), ours, hollow.stopped.clone(), hollow.unready.clone(), options));
    Hollow { tasks: vec![renew, pods], ..hollow }
}

async fn renew_leases(leases: Api<Lease>, ours: Arc<HashSet<String>>, stopped: Arc<Mutex<HashSet<String>>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let live: Vec<String> = ours.iter().filter(|n| !lock(&stopped).contains(*n)).cloned().collect();
        for name in live {
            let patch = json!({"spec": {"renewTime": micro_now()}});
            let _ = leases.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
    }
}

async fn run_pods(
    client: Client,
    ours: Arc<HashSet<String>>,
    stopped: Arc<Mutex<HashSet<String>>>,
    unready: Arc<Mutex<HashSet<String>>>,
    options: Options,
) {
    let all: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(all, watcher::Config::default()).applied_objects().boxed();
    let mut next_ip: u32 = 0x0af4_0002; // 10.244.0.2
    let mut started: HashSet<String> = HashSet::new();
    while let Ok(Some(pod)) = events.try_next().await {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        if !ours.contains(&node) || lock(&stopped).contains(&node) {
            continue;
        }
        let (ns, name) = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            // Containers stopped: the agent finishes the deletion.
            let _ = api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await;
            continue;
        }
        let key = format!("{ns}/{name}/{}", pod.metadata.uid.clone().unwrap_or_default());
        if !started.insert(key) {
            continue;
        }
        next_ip += 1;
        let ip = std::net::Ipv4Addr::from(next_ip).to_string();
        let (delay, unready, stopped, node) = (options.start_delay, unready.clone(), stopped.clone(), node.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if lock(&stopped).contains(&node) {
                return;
            }
            let ready = !lock(&unready).contains(&format!("{ns}/{name}"));
            let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status(&ip, ready))).await;
        });
    }
}

fn status(ip: &str, ready: bool) -> serde_json::Value {
    let ready = if ready { "True" } else { "False" };
    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now(),
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": now()},
            {"type": "Ready", "status": ready, "lastTransitionTime": now()},
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
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a running pod has an address");
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status(&ip, ready))).await.expect("status");
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
