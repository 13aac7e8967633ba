//! A store, an API server over it, the loops' manager and a clock the test moves.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use skiff_control::{
    api::{ApiServer, registry},
    controllers::{Config, Ctx, Manager, clock::ManualClock},
    store::{
        Store,
        embedded::{EmbeddedStore, Options},
    },
};

pub struct World {
    next_ip: std::sync::atomic::AtomicU32,
    pub server: Arc<ApiServer<EmbeddedStore>>,
    pub clock: ManualClock,
    pub manager: Manager<EmbeddedStore>,
}

/// 2026-01-01T00:00:00Z: the clock starts here.
pub fn epoch() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_767_225_600).expect("time")
}

impl World {
    pub async fn new(config: Config) -> World {
        let store = EmbeddedStore::in_memory(Options::default()).expect("store");
        let server = Arc::new(ApiServer::new(store, (std::net::Ipv4Addr::new(10, 96, 0, 0), 12)));
        server.bootstrap(None).await.expect("bootstrap");
        let clock = ManualClock::new(epoch());
        let ctx = Ctx { server: server.clone(), clock: Arc::new(clock.clone()), config: Arc::new(config) };
        let manager = Manager::new(ctx).expect("manager");
        World { next_ip: Default::default(), server, clock, manager }
    }

    /// Runs every reconcile due now; returns how many ran.
    pub async fn settle(&mut self) -> usize {
        self.manager.settle().await.expect("loops settle")
    }

    /// Settles the loops and runs the agents (`kubelet`) until both are idle.
    pub async fn converge(&mut self) {
        for _ in 0..100 {
            let ran = self.settle().await;
            if self.kubelet().await == 0 && ran == 0 {
                return;
            }
        }
        panic!("the loops did not converge");
    }

    /// Moves the clock on, then settles.
    pub async fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        self.settle().await;
    }

    /// The clock's time as Kubernetes writes it.
    pub fn now(&self) -> String {
        skiff_control::controllers::clock::format(skiff_control::controllers::clock::Clock::now(&self.clock))
    }

    pub async fn create(&self, object: Value) -> Value {
        let stored = self.server.create_as(object, "test").await.expect("create");
        skiff_control::api::decode_object(&stored).expect("decode")
    }

    /// Replaces the object (or with `status`, its status) with what `edit` makes of it.
    pub async fn edit(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: bool,
        edit: impl FnOnce(&mut Value),
    ) {
        let mut object = self.get(kind, namespace, name).unwrap_or_else(|| panic!("{kind} {name} exists"));
        edit(&mut object);
        self.server.replace_as(object, status, "test").await.expect("replace");
    }

    /// The object as stored, with its resourceVersion; `None` when absent.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let r = registry::RESOURCES.iter().find(|r| r.kind == kind).expect("kind");
        let stored = self.server.store.get(&r.key(namespace, name))?;
        let mut value = skiff_control::api::decode_object(&stored).expect("decode");
        value["metadata"]["resourceVersion"] = json!(stored.mod_revision.to_string());
        Some(value)
    }

    /// Every object of `kind` (in `namespace`, if given).
    pub fn list(&self, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let r = registry::RESOURCES.iter().find(|r| r.kind == kind).expect("kind");
        let prefix = namespace.map_or_else(|| r.prefix(), |ns| r.namespace_prefix(ns));
        let (objects, _) = self.server.store.list(&prefix);
        objects.iter().map(|o| skiff_control::api::decode_object(o).expect("decode")).collect()
    }

    /// Events about the object named `name` with `reason`.
    pub fn events(&self, name: &str, reason: &str) -> Vec<Value> {
        self.list("Event", None)
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
            .collect()
    }

    /// A Ready node named `name` (4 cpu, 8Gi), with its Lease renewed now.
    pub async fn node(&self, name: &str) {
        self.node_with(name, "4", json!({})).await;
    }

    /// A Ready node named `name` with `cpu` allocatable and `spec` (taints, …), its Lease renewed now.
    pub async fn node_with(&self, name: &str, cpu: &str, spec: Value) {
        let now = self.now();
        self.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}))
        .await;
        self.create(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro(&now)}}))
            .await;
    }

    /// Renews `name`'s Lease at the clock's time, as its agent would.
    pub async fn renew(&self, name: &str) {
        let now = micro(&self.now());
        self.edit("Lease", Some("kube-node-lease"), name, false, |l| l["spec"]["renewTime"] = json!(now))
            .await;
    }

    /// A pending pod (no node yet) with `labels` requesting `cpu`.
    pub async fn pending_pod(&self, name: &str, labels: Value, cpu: &str) -> Value {
        self.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}}))
        .await
    }

    /// What the agent of the pod's node would report: Running with `ip`, Ready or not.
    pub async fn report(&self, pod: &str, ip: &str, ready: bool) {
        let ready = if ready { "True" } else { "False" };
        self.edit("Pod", Some("default"), pod, true, |p| {
            p["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": ready}]});
        })
        .await;
    }

    /// One pass of every node's agent: pods bound to a node and not yet Ready are reported
    /// Running and Ready (each with its own address); pods being deleted are finished off; finished
    /// pods stay finished.
    /// Returns how many pods it touched.
    pub async fn kubelet(&self) -> usize {
        let mut touched = 0;
        for pod in self.list("Pod", None) {
            let (ns, name) = (
                pod["metadata"]["namespace"].as_str().unwrap_or(""),
                pod["metadata"]["name"].as_str().unwrap_or(""),
            );
            if pod["spec"]["nodeName"].as_str().is_none() {
                continue;
            }
            if pod["metadata"]["deletionTimestamp"].is_string() {
                let options = skiff_control::api::deletion::Options {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                let key = format!("/registry/core/pods/{ns}/{name}");
                self.server.delete_key(&key, &options).await.expect("finish deletion");
                touched += 1;
            } else if !matches!(pod["status"]["phase"].as_str(), Some("Running" | "Succeeded" | "Failed")) {
                let n = self.next_ip.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let ip = format!("10.244.{}.{}", n / 250, n % 250 + 1);
                let now = self.now();
                self.edit("Pod", Some(ns), name, true, |p| {
                    p["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]});
                })
                .await;
                touched += 1;
            }
        }
        touched
    }

    /// The node a pod is bound to.
    pub fn node_of(&self, pod: &str) -> Option<String> {
        self.get("Pod", Some("default"), pod)?["spec"]["nodeName"].as_str().map(str::to_owned)
    }

    /// A Running, Ready pod bound to `node`.
    pub async fn pod_on(&self, name: &str, node: &str, extra_spec: Value) -> Value {
        let mut spec = json!({"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        self.create(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
            "status": {"phase": "Running", "podIP": "10.244.0.10",
                "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .await
    }
}

/// An RFC 3339 time with microseconds, as Lease times are written.
pub fn micro(rfc3339: &str) -> String {
    rfc3339.trim_end_matches('Z').to_owned() + ".000000Z"
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}
