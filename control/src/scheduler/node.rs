//! One node as the scheduler sees it: the Node object, parsed once when it changes (allocatable,
//! taints, cordon), and the running totals of the pods placed on it.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::Node;

use super::{
    pod::{Usage, stable_hash},
    ports::HostPort,
    resources::{Resources, allocatable},
    taints::{NodeTaint, node_taints},
};

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// A node and the pods on it. A `NodeInfo` may exist without its Node object: pods can be
/// reported on a node before the node itself (or after it is gone); they still count once the
/// node (re)appears, but such an entry is never a scheduling candidate. Cloned for what-if
/// checks (preemption, nominated pods).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    name: String,
    name_hash: u64,
    node: Option<Arc<Node>>,
    allocatable: Resources,
    allowed_pods: i64,
    taints: Vec<NodeTaint>,
    unschedulable: bool,
    requested: Resources,
    non_zero_milli_cpu: i64,
    non_zero_memory: i64,
    used_ports: Vec<HostPort>,
    pod_count: usize,
}

impl NodeInfo {
    /// An entry for `name` with no Node object and no pods yet.
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            name_hash: stable_hash(name.as_bytes()),
            node: None,
            allocatable: Resources::default(),
            allowed_pods: 0,
            taints: Vec::new(),
            unschedulable: false,
            requested: Resources::default(),
            non_zero_milli_cpu: 0,
            non_zero_memory: 0,
            used_ports: Vec::new(),
            pod_count: 0,
        }
    }

    /// Takes a new version of the Node object, re-deriving everything read from it.
    pub(crate) fn set_node(&mut self, node: Arc<Node>) {
        let status = node.status.as_ref();
        (self.allocatable, self.allowed_pods) = allocatable(status.and_then(|s| s.allocatable.as_ref()));
        self.taints = node_taints(&node);
        self.unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        self.node = Some(node);
    }

    /// Drops the Node object (the node was deleted); the pod totals stay.
    pub(crate) fn clear_node(&mut self) {
        self.node = None;
        self.allocatable = Resources::default();
        self.allowed_pods = 0;
        self.taints.clear();
        self.unschedulable = false;
    }

    /// Counts a pod placed here.
    pub(crate) fn add(&mut self, usage: &Usage) {
        self.requested.add(&usage.requests.fit);
        self.non_zero_milli_cpu = self.non_zero_milli_cpu.saturating_add(usage.requests.non_zero_milli_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_add(usage.requests.non_zero_memory);
        self.used_ports.extend(usage.ports.iter().cloned());
        self.pod_count += 1;
    }

    /// Stops counting a pod added before with the same `usage`.
    pub(crate) fn remove(&mut self, usage: &Usage) {
        self.requested.subtract(&usage.requests.fit);
        self.non_zero_milli_cpu = self.non_zero_milli_cpu.saturating_sub(usage.requests.non_zero_milli_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_sub(usage.requests.non_zero_memory);
        for port in &usage.ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        self.pod_count = self.pod_count.saturating_sub(1);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_hash(&self) -> u64 {
        self.name_hash
    }

    /// The Node object, when the node exists.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.as_ref().and_then(|n| n.metadata.labels.as_ref()).unwrap_or(&NO_LABELS)
    }

    /// `status.allocatable` without `pods`.
    pub fn allocatable(&self) -> &Resources {
        &self.allocatable
    }

    /// `status.allocatable.pods`: how many pods the node takes.
    pub fn allowed_pods(&self) -> i64 {
        self.allowed_pods
    }

    pub fn taints(&self) -> &[NodeTaint] {
        &self.taints
    }

    /// `spec.unschedulable` (cordoned).
    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }

    /// The sum of the requests of the pods here (what fit is checked against).
    pub fn requested(&self) -> &Resources {
        &self.requested
    }

    /// Cpu (millicores) and memory (bytes) of the pods here with the scoring defaults for
    /// missing requests.
    pub fn non_zero_requested(&self) -> (i64, i64) {
        (self.non_zero_milli_cpu, self.non_zero_memory)
    }

    /// The host ports the pods here bind.
    pub fn used_ports(&self) -> &[HostPort] {
        &self.used_ports
    }

    /// How many pods are here, assumed ones included.
    pub fn pod_count(&self) -> usize {
        self.pod_count
    }
}
