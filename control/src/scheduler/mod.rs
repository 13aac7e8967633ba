//! The scheduling algorithm: which node should a pending pod run on? Pure and synchronous; the
//! controller that watches Pods and Nodes feeds it and writes the bindings.
//!
//! # How the caller drives it
//!
//! A [`Cluster`] is the scheduler's snapshot: every node, parsed once per change (allocatable,
//! taints, labels, cordon), with the running totals of the pods on it (summed requests, used
//! host ports, pod count, pods per workload). The caller keeps it current one watch event at a
//! time — [`upsert_node`](Cluster::upsert_node) / [`remove_node`](Cluster::remove_node) for
//! Nodes, [`observe_pod`](Cluster::observe_pod) for each Pod version (bound → counted,
//! `Succeeded`/`Failed` → dropped) and [`remove_pod`](Cluster::remove_pod) for deletions — so a
//! decision never re-reads the world.
//!
//! For each pending pod: [`schedule`](Cluster::schedule) → node name, then at once
//! [`assume`](Cluster::assume) the pod there so the next decision already sees the room it
//! takes, then write the binding asynchronously. If the write fails,
//! [`forget`](Cluster::forget) drops the assumption; when the watch shows the pod bound, the
//! assumption becomes a plain record (`observe_pod` / [`add_pod`](Cluster::add_pod)), wherever
//! the pod really landed. Assumptions do not expire on their own: a failed binding must be
//! forgotten. Pods are identified by `namespace/name`.
//!
//! # Filters (can the pod run there?)
//!
//! Upstream kube-scheduler's default-profile filters, in its order; a node is rejected by the
//! first one that fails, with upstream's reason text:
//!
//! 1. NodeUnschedulable — a cordoned node, unless the pod tolerates
//!    `node.kubernetes.io/unschedulable:NoSchedule`: `node(s) were unschedulable`.
//! 2. NodeName — `spec.nodeName` names another node: `node(s) didn't match the requested node name`.
//! 3. TaintToleration — the first untolerated `NoSchedule`/`NoExecute` taint:
//!    `node(s) had untolerated taint {key: value}`. Node readiness is seen only through taints
//!    (`node.kubernetes.io/not-ready`, `…/unreachable`), as upstream: conditions are not read.
//! 4. NodeAffinity — `nodeSelector` and required node affinity (terms ORed, expressions ANDed;
//!    `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`; `matchFields` on `metadata.name`):
//!    `node(s) didn't match Pod's node affinity/selector`. Like upstream's PreFilter, when every
//!    required term names nodes by `metadata.name In` (DaemonSet pods), only those nodes are
//!    examined and the others count as `node(s) didn't satisfy plugin(s) [NodeAffinity]`.
//! 5. NodePorts — a wanted (protocol, hostIP, hostPort) is taken; `0.0.0.0` collides with any
//!    IP: `node(s) didn't have free ports for the requested pod ports`.
//! 6. NodeResourcesFit — `Too many pods` against `allocatable.pods`, and for each requested
//!    resource `Insufficient cpu` / `memory` / `ephemeral-storage` / `<extended resource>`,
//!    all that apply. A pod's request is `max(sum of app containers and sidecars, peak of any
//!    init container) + overhead` (pod-level `spec.resources` replace the cpu/memory totals);
//!    an unset request is 0 here. Limits without requests count as requests (the API server's
//!    defaulting, which skiff's admission does not write). Quantities are parsed exactly
//!    (cpu rounded up to the next millicore); a malformed one counts as 0.
//!
//! With no fitting node, [`FitError`] prints upstream's message, reasons counted over nodes and
//! sorted as upstream sorts its printed `"<count> <reason>"` strings (so the count leads):
//! `0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient cpu.`
//! With no nodes at all it is upstream's `no nodes available to schedule pods`.
//! [`FitError::reasons`] gives the counts for events. Upstream's trailing ` preemption: …` part
//! is not printed.
//!
//! # Priority, nominated pods and preemption
//!
//! Pods carry `spec.priority` (Priority admission fills it in). A pod nominated to a node
//! ([`Cluster::nominate`], after it preempted there) has the room there reserved: filtering a
//! pod of lower or equal priority on that node counts the nominee as placed (`nominated.rs`).
//! For a pod that fits nowhere, [`Cluster::preempt`] picks a node and the minimal set of
//! lower-priority victims, preferring fewer PodDisruptionBudget violations (`preemption.rs`
//! explains the selection); the caller evicts them and binds the pod once they are gone.
//!
//! [`placement`] runs the spec-only part of filters 2–4 (node name, affinity, taints) for one
//! node, for callers that decide where pods belong without scheduling them (the DaemonSet
//! controller).
//!
//! # Scores (which fitting node is best?)
//!
//! Each plugin gives 0..=100 per node; the total is the weighted sum (upstream's defaults):
//!
//! | plugin | weight | favours |
//! | --- | --- | --- |
//! | NodeResourcesFit (LeastAllocated) | 1 | most cpu+memory left; unset requests count 100m / 200Mi |
//! | NodeResourcesBalancedAllocation | 1 | cpu and memory used in equal proportion (not for pods requesting neither) |
//! | TaintToleration | 3 | fewer untolerated `PreferNoSchedule` taints (normalized, reversed) |
//! | NodeAffinity | 2 | higher summed weight of matching preferred terms (normalized) |
//! | spreading | 2 | fewer pods of the same workload on the node |
//!
//! Spreading stands in for PodTopologySpread's default system constraint by hostname (maxSkew
//! 3): a node's raw count is `same-workload pods + 2`, normalized as upstream
//! (`100 × (max + min − raw) / max`). The workload is the pod's controller (ownerReference with
//! `controller: true`) by uid, else its namespace and labels; a pod with neither is not spread.
//! Ties go to the node whose name hashes highest together with the pod's uid: deterministic,
//! yet equal nodes share the load across pods.
//!
//! # Sampling, like `percentageOfNodesToScore`
//!
//! Nodes are examined round-robin from where the previous search stopped, and the search stops
//! once `max(100, n × p%)` nodes fit, with upstream's adaptive `p = max(5, 50 − n/125)` (all nodes
//! below 100; 42% of 1,000). Only those are scored. A pod that fits nowhere has been checked
//! against every node, so its error counts all of them. [`Cluster::set_percentage_of_nodes_to_score`]
//! changes `p` (100: always every node).
//!
//! # Cost
//!
//! Per decision the pod is parsed once (requests, ports, tolerations, affinity); the per-node
//! loop compares integers and borrowed strings and allocates nothing, failures included.
//! Measured once by a throwaway run (10,000 pods of 100 ReplicaSets onto 1,000 nodes, each
//! scheduled then assumed; skiff-control at opt-level 3, on a 2-core machine busy with other
//! builds): about 25,000–45,000 pods/s with the adaptive sample, 12,000–19,000 pods/s scoring all
//! nodes; an unoptimized build manages about 3,000 pods/s.
//!
//! # Not covered
//!
//! Inter-pod affinity/anti-affinity, user-written `topologySpreadConstraints`, zone spreading,
//! volumes (binding, zones, limits), image locality, dynamic resources, scheduling gates,
//! and the alpha `Lt`/`Gt` toleration operators (they tolerate
//! nothing, as upstream with the gate off).

mod affinity;
mod cluster;
mod filter;
mod fit_error;
mod node;
mod nominated;
mod placement;
mod pod;
mod ports;
mod preemption;
#[cfg(test)]
mod preemption_tests;
mod quantity;
mod resources;
mod schedule;
mod score;
mod taints;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use cluster::Cluster;
pub use fit_error::{FitError, NO_NODES_MESSAGE};
pub use node::NodeInfo;
pub use placement::{Placement, placement};
pub use ports::HostPort;
pub use preemption::{Budget, Preemption, may_preempt};
pub use quantity::{Quantity, QuantityError};
pub use resources::{DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST, Resources};
pub use score::{
    BALANCED_ALLOCATION_WEIGHT, LEAST_ALLOCATED_WEIGHT, MAX_NODE_SCORE, NODE_AFFINITY_WEIGHT, SPREAD_WEIGHT,
    TAINT_TOLERATION_WEIGHT,
};
pub use taints::{Effect, NodeTaint, UNSCHEDULABLE_TAINT_KEY};
