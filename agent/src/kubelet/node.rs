//! The node's registration and heartbeat: the Node object (labels, podCIDR, addresses, capacity,
//! allocatable, node info, conditions) applied at start and its status refreshed periodically,
//! and the Lease in `kube-node-lease` renewed every 10 s (what the control plane's node
//! lifecycle controller watches).

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Node},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::host::{self, Host};

/// The namespace node leases live in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The field manager of everything the agent writes.
pub const MANAGER: &str = "skiff-agent";

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub internal_ip: Ipv4Addr,
    /// The pod CIDR when configured here (else the control plane assigns one).
    pub pod_cidr: Option<String>,
    pub max_pods: u32,
    /// Where pod data lives (its filesystem decides disk pressure).
    pub data_dir: PathBuf,
    pub lease_duration: Duration,
    /// How often the lease is renewed and the status refreshed (10 s in Kubernetes).
    pub heartbeat: Duration,
    pub runtime_version: String,
    /// The port of the agent's log endpoint (the kubelet's 10250).
    pub kubelet_port: u16,
}

impl NodeConfig {
    pub fn new(name: &str, internal_ip: Ipv4Addr) -> Self {
        Self {
            name: name.to_owned(),
            internal_ip,
            pod_cidr: None,
            max_pods: 110,
            data_dir: PathBuf::from("/var/lib/skiff"),
            lease_duration: Duration::from_secs(40),
            heartbeat: Duration::from_secs(10),
            runtime_version: "containerd://unknown".into(),
            kubelet_port: 10250,
        }
    }
}

fn quantity_bytes(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
    previous: Option<&Value>,
) -> Value {
    let status = if status { "True" } else { "False" };
    // The transition time moves only when the status does.
    let since = previous
        .filter(|p| p["status"] == status)
        .and_then(|p| p["lastTransitionTime"].as_str().map(str::to_owned))
        .unwrap_or_else(|| now.to_owned());
    json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": since})
}

/// The Node's status as this host and `ready` say (keeping transition times from `current`).
pub fn status(config: &NodeConfig, host: &Host, ready: bool, current: Option<&Node>) -> Value {
    let now = Timestamp::now().round(jiff_unit()).map(|t| t.to_string()).unwrap_or_default();
    let previous: Vec<Value> = current
        .and_then(|n| n.status.as_ref()?.conditions.as_ref())
        .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
        .unwrap_or_default();
    let prev = |kind: &str| previous.iter().find(|c| c["type"] == kind);
    let (memory, disk) = (host.memory_pressure(), host.disk_pressure());
    let conditions = vec![
        condition(
            "MemoryPressure",
            memory,
            if memory { "KubeletHasInsufficientMemory" } else { "KubeletHasSufficientMemory" },
            &format!("{} MiB available", host.memory_available_bytes >> 20),
            &now,
            prev("MemoryPressure"),
        ),
        condition(
            "DiskPressure",
            disk,
            if disk { "KubeletHasDiskPressure" } else { "KubeletHasNoDiskPressure" },
            &format!("{} MiB available", host.disk_available_bytes >> 20),
            &now,
            prev("DiskPressure"),
        ),
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "pids are plentiful",
            &now,
            prev("PIDPressure"),
        ),
        condition(
            "Ready",
            ready,
            if ready { "KubeletReady" } else { "KubeletNotReady" },
            if ready { "skiff-agent is posting ready status" } else { "skiff-agent is not ready" },
            &now,
            prev("Ready"),
        ),
    ];
    let allocatable_memory = host.memory_bytes.saturating_sub(host::MEMORY_PRESSURE_BYTES);
    json!({
        "capacity": {
            "cpu": host.cpus.to_string(),
            "memory": quantity_bytes(host.memory_bytes),
            "pods": config.max_pods.to_string(),
            "ephemeral-storage": quantity_bytes(host.disk_bytes),
        },
        "allocatable": {
            "cpu": host.cpus.to_string(),
            "memory": quantity_bytes(allocatable_memory),
            "pods": config.max_pods.to_string(),
            "ephemeral-storage": quantity_bytes(host.disk_bytes * (100 - host::DISK_PRESSURE_PERCENT) / 100),
        },
        "addresses": [
            {"type": "InternalIP", "address": config.internal_ip.to_string()},
            {"type": "Hostname", "address": config.name},
        ],
        "conditions": conditions,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {
            "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(),
            "systemUUID": "",
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim(),
            "kernelVersion": host::kernel_version(),
            "osImage": host::os_image(),
            "containerRuntimeVersion": config.runtime_version,
            "kubeletVersion": concat!("v1.33.0-skiff+", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    })
}

fn jiff_unit() -> k8s_openapi::jiff::Unit {
    k8s_openapi::jiff::Unit::Second
}

/// Registers and heartbeats one node.
#[derive(Debug, Clone)]
pub struct NodeAgent {
    nodes: Api<Node>,
    leases: Api<Lease>,
    config: NodeConfig,
}

impl NodeAgent {
    pub fn new(client: Client, config: NodeConfig) -> Self {
        Self { nodes: Api::all(client.clone()), leases: Api::namespaced(client, LEASE_NAMESPACE), config }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Applies the Node (labels, podCIDR) and posts its status; returns it.
    pub async fn register(&self, ready: bool) -> kube::Result<Node> {
        let mut spec = json!({});
        if let Some(cidr) = &self.config.pod_cidr {
            spec = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
        }
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.config.name,
                "labels": {
                    "kubernetes.io/hostname": self.config.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": spec,
        });
        self.nodes
            .patch(&self.config.name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&node))
            .await?;
        self.post_status(ready).await
    }

    /// Posts the node's status (conditions, capacity, addresses).
    pub async fn post_status(&self, ready: bool) -> kube::Result<Node> {
        let host = Host::read(&self.config.data_dir).or_else(|_| Host::read(std::path::Path::new("/")));
        let host = host.map_err(|e| kube::Error::Service(Box::new(e)))?;
        let current = self.nodes.get_opt(&self.config.name).await?;
        let status = status(&self.config, &host, ready, current.as_ref());
        let patch = json!({"status": status});
        self.nodes.patch_status(&self.config.name, &PatchParams::default(), &Patch::Merge(&patch)).await
    }

    /// Creates or renews the node's Lease.
    pub async fn renew_lease(&self) -> kube::Result<Lease> {
        let now = MicroTime(Timestamp::now());
        let seconds = self.config.lease_duration.as_secs() as i32;
        match self.leases.get_opt(&self.config.name).await? {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(now);
                spec.holder_identity = Some(self.config.name.clone());
                spec.lease_duration_seconds = Some(seconds);
                self.leases.replace(&self.config.name, &PostParams::default(), &lease).await
            }
            None => {
                let node = self.nodes.get(&self.config.name).await?;
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": {
                        "name": self.config.name,
                        "namespace": LEASE_NAMESPACE,
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.config.name, "uid": node.metadata.uid}],
                    },
                    "spec": {"holderIdentity": self.config.name, "leaseDurationSeconds": seconds, "renewTime": now},
                }))
                .map_err(kube::Error::SerdeError)?;
                self.leases.create(&PostParams::default(), &lease).await
            }
        }
    }

    /// Heartbeats until `shutdown` completes: the lease and the status every `heartbeat`.
    /// Failures are logged and retried at the next beat (the API server may be restarting).
    pub async fn run(&self, ready: impl Fn() -> bool, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    if let Err(e) = self.renew_lease().await {
                        tracing::warn!(node = %self.config.name, "renewing the node lease: {e}");
                    }
                    if let Err(e) = self.post_status(ready()).await {
                        tracing::warn!(node = %self.config.name, "posting node status: {e}");
                    }
                }
            }
        }
    }
}
