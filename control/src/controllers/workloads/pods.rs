//! What workload controllers need to know about a pod: whether it counts, whether it is ready or
//! available, and which pods to delete first when there are too many.

use std::{cmp::Ordering, collections::HashMap};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::after;

/// Annotation by which users ask for some pods to go before others on scale-down (lower first).
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Counts toward a controller's replicas: not finished (`Succeeded`/`Failed`) and not being
/// deleted. A terminating pod is on its way out, so its replacement may be created already.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Not in a terminal phase, whether or not it is being deleted: its containers may still run.
/// The Recreate strategy waits for no old pod to be in this state.
pub fn may_be_running(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition_since(pod).is_some()
}

/// `Some` when the pod is ready: the time it became ready, if the condition records one.
fn ready_condition_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

/// When a ready pod became ready (its `Ready` condition's `lastTransitionTime`).
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition_since(pod).flatten()
}

/// Ready for at least `min_ready_seconds` at `now`. With `min_ready_seconds` 0 ready suffices;
/// otherwise a ready pod without a transition time is never available (as upstream).
///
/// Upstream requires strictly more than `min_ready_seconds`; "at least" here means that at the
/// instant [`next_available_check`] names, the pod is available, so a caller woken at that time
/// makes progress instead of waking again.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_condition_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since.is_some_and(|t| after(t, min_ready_seconds) <= now),
    }
}

/// The time a ready pod that is not available yet will become available, so the caller can look
/// again then. `None` when it is available already, or when only a change to the pod (becoming
/// ready) could make it available, which the caller sees as an event anyway.
pub fn next_available_check(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Timestamp> {
    if min_ready_seconds <= 0 || is_available(pod, min_ready_seconds, now) {
        return None;
    }
    ready_since(pod).map(|t| after(t, min_ready_seconds))
}

/// The earlier of two optional times.
pub fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Upstream's phase order for deletion: pending pods go first, then unknown, then running.
fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    let annotations = pod.metadata.annotations.as_ref();
    annotations.and_then(|a| a.get(DELETION_COST_ANNOTATION)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().map(|c| c.restart_count).max().unwrap_or(0)
}

/// Orders two optional times so that a missing time comes first, then the later one: the
/// youngest (least proven) pod is the cheapest to lose.
fn missing_or_later_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// Compares two active pods for deletion (`Less` = delete first), with `colocated_*` the number
/// of the pods being ranked on the same node as each. The order is upstream's
/// `ActivePodsWithRanks` with the linear (not logarithmic) age comparison: unscheduled before
/// scheduled; Pending < Unknown < Running; not ready before ready; lower deletion cost first;
/// more pods on the same node first (spreads what remains); ready for less time first; more
/// container restarts first; newer (or unknown creation time) first.
fn deletion_order(a: &Pod, colocated_a: usize, b: &Pod, colocated_b: usize) -> Ordering {
    let (node_a, node_b) = (node_name(a), node_name(b));
    if node_a != node_b && (node_a.is_empty() || node_b.is_empty()) {
        return if node_a.is_empty() { Ordering::Less } else { Ordering::Greater };
    }
    let (ready_a, ready_b) = (is_ready(a), is_ready(b));
    phase_rank(a)
        .cmp(&phase_rank(b))
        .then(ready_a.cmp(&ready_b))
        .then(deletion_cost(a).cmp(&deletion_cost(b)))
        .then(colocated_b.cmp(&colocated_a))
        .then_with(|| match ready_a && ready_b {
            true => missing_or_later_first(ready_since(a), ready_since(b)),
            false => Ordering::Equal,
        })
        .then(max_restarts(b).cmp(&max_restarts(a)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            missing_or_later_first(created(a), created(b))
        })
}

/// `pods` (active ones) in the order a controller should delete them, first to go first.
pub fn in_deletion_order<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    let nodes: Vec<&str> = pods.iter().map(|p| node_name(p)).collect();
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for n in &nodes {
        *per_node.entry(n).or_default() += 1;
    }
    let mut ranked: Vec<(&Pod, usize)> =
        pods.iter().zip(&nodes).map(|(p, n)| (*p, per_node.get(n).copied().unwrap_or(0))).collect();
    ranked.sort_by(|(a, ra), (b, rb)| deletion_order(a, *ra, b, *rb));
    ranked.into_iter().map(|(p, _)| p).collect()
}
