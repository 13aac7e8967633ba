//! Resource amounts: what a node offers (`status.allocatable`) and what a pod asks for, computed
//! the way kube-scheduler computes them so that a pod fits here exactly where it would fit there.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, PodSpec, ResourceRequirements},
    apimachinery::pkg::api::resource::Quantity as ApiQuantity,
};

use super::quantity::Quantity;

/// The cpu a container without a cpu request is taken to use when nodes are *scored* (100m), so
/// that request-less pods still spread (upstream's `DefaultMilliCPURequest`). Fit ignores it.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a container without a memory request is taken to use when scoring (200Mi,
/// upstream's `DefaultMemoryRequest`).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 << 20;

/// Amounts of the resources the scheduler counts. Cpu is in millicores, memory and
/// ephemeral-storage in bytes, everything else in whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources (`example.com/foo`), huge pages and other countable resources, sorted
    /// by name.
    pub scalars: Vec<(String, i64)>,
}

/// How the scheduler treats a resource name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cpu,
    Memory,
    EphemeralStorage,
    Pods,
    /// Counted by name: extended resources, `hugepages-*`, `attachable-volumes-*`, and
    /// `kubernetes.io/`-prefixed ones (upstream's `IsScalarResourceName`).
    Scalar,
    /// Anything else (e.g. `storage`) plays no part in scheduling.
    Ignored,
}

fn kind(name: &str) -> Kind {
    match name {
        "cpu" => Kind::Cpu,
        "memory" => Kind::Memory,
        "ephemeral-storage" => Kind::EphemeralStorage,
        "pods" => Kind::Pods,
        _ if name.starts_with("hugepages-") || name.starts_with("attachable-volumes-") => Kind::Scalar,
        _ if name.contains("kubernetes.io/") => Kind::Scalar,
        _ if name.contains('/') && !name.starts_with("requests.") => Kind::Scalar,
        _ => Kind::Ignored,
    }
}

/// The integer amount of a quantity: millicores for cpu, whole units otherwise. A malformed or
/// negative quantity counts as zero: the API server's validation refuses such objects, and one
/// bad field should not stop the scheduler from placing everything else.
fn amount(kind: Kind, quantity: &ApiQuantity) -> i64 {
    match Quantity::parse(&quantity.0) {
        Ok(q) if kind == Kind::Cpu => q.milli_value(),
        Ok(q) => q.value(),
        Err(_) => 0,
    }
}

impl Resources {
    /// The amount of scalar resource `name` (zero when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalars.binary_search_by(|(n, _)| n.as_str().cmp(name)).map_or(0, |i| self.scalars[i].1)
    }

    /// True when nothing at all is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalars.iter().all(|(_, v)| *v == 0)
    }

    fn scalar_mut(&mut self, name: &str) -> &mut i64 {
        let i = match self.scalars.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => i,
            Err(i) => {
                self.scalars.insert(i, (name.to_string(), 0));
                i
            }
        };
        &mut self.scalars[i].1
    }

    /// Adds `value` of resource `name`; `pods` and ignored names change nothing.
    fn add_named(&mut self, name: &str, value: i64) {
        match kind(name) {
            Kind::Cpu => self.milli_cpu = self.milli_cpu.saturating_add(value),
            Kind::Memory => self.memory = self.memory.saturating_add(value),
            Kind::EphemeralStorage => self.ephemeral_storage = self.ephemeral_storage.saturating_add(value),
            Kind::Scalar => {
                let slot = self.scalar_mut(name);
                *slot = slot.saturating_add(value);
            }
            Kind::Pods | Kind::Ignored => {}
        }
    }

    /// Adds every amount of `other`.
    pub(crate) fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(other.ephemeral_storage);
        for (name, value) in &other.scalars {
            let slot = self.scalar_mut(name);
            *slot = slot.saturating_add(*value);
        }
    }

    /// Takes away every amount of `other` (which was added before); scalars that reach zero go.
    pub(crate) fn subtract(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(other.ephemeral_storage);
        for (name, value) in &other.scalars {
            let slot = self.scalar_mut(name);
            *slot = slot.saturating_sub(*value);
        }
        self.scalars.retain(|(_, v)| *v != 0);
    }

    /// Raises each amount to at least the one in `other`.
    fn raise_to(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, value) in &other.scalars {
            let slot = self.scalar_mut(name);
            *slot = (*slot).max(*value);
        }
    }
}

/// What a node offers: its `status.allocatable`, and how many pods it takes (`pods`).
pub(crate) fn allocatable(list: Option<&BTreeMap<String, ApiQuantity>>) -> (Resources, i64) {
    let mut resources = Resources::default();
    let mut pods = 0;
    for (name, quantity) in list.into_iter().flatten() {
        match kind(name) {
            Kind::Pods => pods = amount(Kind::Pods, quantity),
            k => resources.add_named(name, amount(k, quantity)),
        }
    }
    (resources, pods)
}

/// A pod's requests, in the two forms the scheduler needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PodRequests {
    /// What the pod needs to fit: requests as written (zero when unset).
    pub fit: Resources,
    /// Cpu (millicores) and memory (bytes) for scoring, with the 100m / 200Mi defaults standing in
    /// for each container's missing request.
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
}

/// Computes a pod's requests like upstream's `PodRequests`: the larger of the sum over app
/// containers (plus sidecars, i.e. init containers with `restartPolicy: Always`) and the largest
/// need of any init container while it runs (itself plus the sidecars started before it);
/// pod-level `spec.resources` replace the cpu/memory totals when set; `spec.overhead` is added.
pub(crate) fn pod_requests(spec: &PodSpec) -> PodRequests {
    let fit = aggregate(spec, false);
    let scored = aggregate(spec, true);
    PodRequests { fit, non_zero_milli_cpu: scored.milli_cpu, non_zero_memory: scored.memory }
}

fn aggregate(spec: &PodSpec, with_defaults: bool) -> Resources {
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c, with_defaults));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let own = container_requests(c, with_defaults);
        if c.restart_policy.as_deref() == Some("Always") {
            total.add(&own);
            sidecars.add(&own);
            init_peak.raise_to(&sidecars);
        } else {
            let mut running = own;
            running.add(&sidecars);
            init_peak.raise_to(&running);
        }
    }
    total.raise_to(&init_peak);
    if let Some(pod_level) = spec.resources.as_ref() {
        for (name, value) in effective_requests(pod_level) {
            match kind(name) {
                Kind::Cpu => total.milli_cpu = amount(Kind::Cpu, value),
                Kind::Memory => total.memory = amount(Kind::Memory, value),
                _ => {}
            }
        }
    }
    for (name, quantity) in spec.overhead.iter().flatten() {
        total.add_named(name, amount(kind(name), quantity));
    }
    total
}

/// The requests the API server would have stored: each limit without a request also sets the
/// request (Kubernetes' defaulting; skiff's admission does not write it, so it is applied here).
fn effective_requests(r: &ResourceRequirements) -> impl Iterator<Item = (&String, &ApiQuantity)> {
    let requests = r.requests.iter().flatten();
    let limits_only = r
        .limits
        .iter()
        .flatten()
        .filter(move |(name, _)| !r.requests.as_ref().is_some_and(|req| req.contains_key(*name)));
    requests.chain(limits_only)
}

fn container_requests(c: &Container, with_defaults: bool) -> Resources {
    let mut out = Resources::default();
    let (mut has_cpu, mut has_memory) = (false, false);
    for (name, quantity) in c.resources.iter().flat_map(effective_requests) {
        let k = kind(name);
        has_cpu |= k == Kind::Cpu;
        has_memory |= k == Kind::Memory;
        out.add_named(name, amount(k, quantity));
    }
    if with_defaults {
        if !has_cpu {
            out.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has_memory {
            out.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::pod;
    use serde_json::json;

    fn requests(spec: serde_json::Value) -> PodRequests {
        let p = pod("p", spec);
        pod_requests(p.spec.as_ref().expect("spec"))
    }

    fn container(requests: serde_json::Value) -> serde_json::Value {
        json!({"name": "c", "image": "i", "resources": {"requests": requests}})
    }

    #[test]
    fn sums_containers_and_adds_overhead() {
        let r = requests(json!({
            "containers": [container(json!({"cpu": "250m", "memory": "64Mi", "example.com/gpu": "1"})),
                           container(json!({"cpu": "0.5", "ephemeral-storage": "1Gi", "example.com/gpu": "2"}))],
            "overhead": {"cpu": "10m", "memory": "1Mi"},
        }));
        assert_eq!(r.fit.milli_cpu, 760);
        assert_eq!(r.fit.memory, 65 << 20);
        assert_eq!(r.fit.ephemeral_storage, 1 << 30);
        assert_eq!(r.fit.scalar("example.com/gpu"), 3);
        assert_eq!(r.non_zero_milli_cpu, 760);
        assert_eq!(r.non_zero_memory, (64 << 20) + DEFAULT_MEMORY_REQUEST + (1 << 20));
    }

    #[test]
    fn init_containers_count_by_their_peak() {
        // Sum of app containers 300m/100Mi; the big init container needs 1 cpu but little memory.
        let r = requests(json!({
            "initContainers": [container(json!({"cpu": "1", "memory": "10Mi"})),
                               container(json!({"cpu": "100m", "memory": "50Mi"}))],
            "containers": [container(json!({"cpu": "200m", "memory": "60Mi"})),
                           container(json!({"cpu": "100m", "memory": "40Mi"}))],
        }));
        assert_eq!(r.fit.milli_cpu, 1000);
        assert_eq!(r.fit.memory, 100 << 20);
    }

    #[test]
    fn sidecars_add_to_everything_after_them() {
        // The sidecar (restartPolicy Always) runs beside the second init container and the app.
        let mut sidecar = container(json!({"cpu": "500m"}));
        sidecar["restartPolicy"] = json!("Always");
        let r = requests(json!({
            "initContainers": [container(json!({"cpu": "700m"})), sidecar,
                               container(json!({"cpu": "800m"}))],
            "containers": [container(json!({"cpu": "100m"}))],
        }));
        // Peaks: 700m alone, then 500m + 800m = 1300m; app phase 100m + 500m = 600m.
        assert_eq!(r.fit.milli_cpu, 1300);
    }

    #[test]
    fn missing_requests_are_zero_for_fit_and_defaults_for_scoring() {
        let r = requests(json!({"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]}));
        assert!(r.fit.is_zero());
        assert_eq!(r.non_zero_milli_cpu, 2 * DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.non_zero_memory, 2 * DEFAULT_MEMORY_REQUEST);
        // An explicit zero is a request of zero, not a missing one.
        let r = requests(json!({"containers": [container(json!({"cpu": "0", "memory": "0"}))]}));
        assert_eq!((r.non_zero_milli_cpu, r.non_zero_memory), (0, 0));
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        let r = requests(json!({"containers": [{"name": "a", "image": "i", "resources": {
            "limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "1"}}}]}));
        assert_eq!(r.fit.milli_cpu, 1000);
        assert_eq!(r.fit.memory, 1 << 30);
    }

    #[test]
    fn pod_level_resources_replace_container_totals() {
        let r = requests(json!({
            "resources": {"requests": {"cpu": "3"}},
            "containers": [container(json!({"cpu": "1", "memory": "1Gi"}))],
        }));
        assert_eq!(r.fit.milli_cpu, 3000);
        assert_eq!(r.fit.memory, 1 << 30);
        assert_eq!(r.non_zero_milli_cpu, 3000);
    }

    #[test]
    fn malformed_and_unknown_resources_count_as_nothing() {
        let r = requests(json!({"containers": [container(json!({
            "cpu": "lots", "memory": "-1", "storage": "5Gi", "requests.example.com/x": "1"}))]}));
        assert!(r.fit.is_zero(), "{:?}", r.fit);
    }

    #[test]
    fn allocatable_reads_pods_and_scalars() {
        let list: BTreeMap<String, ApiQuantity> = [
            ("cpu", "3900m"),
            ("memory", "7Gi"),
            ("pods", "110"),
            ("hugepages-2Mi", "1Gi"),
            ("example.com/foo", "4"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
        .collect();
        let (r, pods) = allocatable(Some(&list));
        assert_eq!((r.milli_cpu, r.memory, pods), (3900, 7 << 30, 110));
        assert_eq!(r.scalar("hugepages-2Mi"), 1 << 30);
        assert_eq!(r.scalar("example.com/foo"), 4);
        assert_eq!(r.scalar("example.com/bar"), 0);
    }

    #[test]
    fn subtract_undoes_add() {
        let mut node = Resources::default();
        let pod =
            requests(json!({"containers": [container(json!({"cpu": "1", "example.com/foo": "2"}))]})).fit;
        node.add(&pod);
        node.add(&pod);
        node.subtract(&pod);
        assert_eq!(node, pod);
        node.subtract(&pod);
        assert_eq!(node, Resources::default());
    }
}
