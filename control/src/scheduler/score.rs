//! The scores: among the nodes that fit, which is best? Each plugin gives 0..=100 per node and
//! the total is their weighted sum, with upstream's default weights.

use super::{node::NodeInfo, pod::Wanted, taints::intolerable_preferences};

/// The best score one plugin gives.
pub const MAX_NODE_SCORE: i64 = 100;

/// NodeResourcesFit (LeastAllocated over cpu and memory).
pub const LEAST_ALLOCATED_WEIGHT: i64 = 1;
/// NodeResourcesBalancedAllocation.
pub const BALANCED_ALLOCATION_WEIGHT: i64 = 1;
/// TaintToleration (`PreferNoSchedule` taints).
pub const TAINT_TOLERATION_WEIGHT: i64 = 3;
/// NodeAffinity (preferred terms).
pub const NODE_AFFINITY_WEIGHT: i64 = 2;
/// PodTopologySpread with its default system constraint by hostname.
pub const SPREAD_WEIGHT: i64 = 2;

/// Upstream's default `maxSkew` for the hostname system constraint; its scoring counts each
/// node as `matching pods + maxSkew - 1`, which softens the preference between nearly-equal nodes.
const HOSTNAME_MAX_SKEW: i64 = 3;

/// `(capacity - requested) / capacity` in 0..=100; 0 when the node is full or over.
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    match (capacity - requested).checked_mul(MAX_NODE_SCORE) {
        Some(scaled) => scaled / capacity,
        // Only beyond ~92 PB; 128-bit division is a slow library call, so not the common path.
        None => {
            let free = i128::from(capacity - requested) * i128::from(MAX_NODE_SCORE) / i128::from(capacity);
            i64::try_from(free).unwrap_or(0)
        }
    }
}

/// NodeResourcesFit, LeastAllocated: favours the node with the most cpu and memory left after
/// placing the pod (equal weights), counting 100m / 200Mi for each missing container request so
/// request-less pods spread too. Resources the node has none of are left out.
pub(crate) fn least_allocated(node: &NodeInfo, pod: &Wanted<'_>) -> i64 {
    let (used_cpu, used_memory) = node.non_zero_requested();
    let want = &pod.usage.requests;
    let have = node.allocatable();
    let mut sum = 0;
    let mut weights = 0;
    for (requested, capacity) in [
        (used_cpu.saturating_add(want.non_zero_milli_cpu), have.milli_cpu),
        (used_memory.saturating_add(want.non_zero_memory), have.memory),
    ] {
        if capacity != 0 {
            sum += least_requested(requested, capacity);
            weights += 1;
        }
    }
    if weights == 0 { 0 } else { sum / weights }
}

/// NodeResourcesBalancedAllocation: favours the node whose cpu and memory would be used in the
/// same proportion: `(1 - |cpu fraction - memory fraction| / 2) × 100`, from actual requests.
/// Pods that request neither get 0 everywhere (upstream skips them so they do not pile up on
/// one node).
pub(crate) fn balanced_allocation(node: &NodeInfo, pod: &Wanted<'_>) -> i64 {
    let want = &pod.usage.requests.fit;
    if want.milli_cpu == 0 && want.memory == 0 {
        return 0;
    }
    let (used, have) = (node.requested(), node.allocatable());
    // A ratio for ranking, in float64 like upstream; precision loss does not matter.
    let fraction = |requested: i64, capacity: i64| (requested as f64 / capacity as f64).min(1.0);
    let mut fractions = [0.0; 2];
    let mut n = 0;
    for (requested, capacity) in [
        (used.milli_cpu.saturating_add(want.milli_cpu), have.milli_cpu),
        (used.memory.saturating_add(want.memory), have.memory),
    ] {
        if capacity != 0 {
            fractions[n] = fraction(requested, capacity);
            n += 1;
        }
    }
    let deviation = if n == 2 { (fractions[0] - fractions[1]).abs() / 2.0 } else { 0.0 };
    // Truncated toward zero, as upstream's int64 conversion.
    ((1.0 - deviation) * MAX_NODE_SCORE as f64) as i64
}

/// TaintToleration's raw count for a node: its `PreferNoSchedule` taints the pod does not
/// tolerate. Normalized with [`normalize`] reversed (fewer is better).
pub(crate) fn intolerable_taints(node: &NodeInfo, pod: &Wanted<'_>) -> i64 {
    intolerable_preferences(node.taints(), &pod.tolerations)
}

/// NodeAffinity's raw score for a node: the summed weights of the preferred terms it matches.
/// Normalized with [`normalize`].
pub(crate) fn preferred_affinity(node: &NodeInfo, pod: &Wanted<'_>) -> i64 {
    // Checked first: reading the labels means following the node's `Arc<Node>`, a cache miss.
    if pod.preferred.is_empty() { 0 } else { pod.preferred.score(node.labels(), node.name()) }
}

/// Upstream's `DefaultNormalizeScore`: scales raw scores so the highest becomes 100; `reverse`
/// turns "more is worse" counts around. When every raw score is 0, all get 0 (or 100 reversed).
pub(crate) fn normalize(raw: i64, max: i64, reverse: bool) -> i64 {
    if max == 0 {
        return if reverse { MAX_NODE_SCORE } else { 0 };
    }
    let scaled = MAX_NODE_SCORE * raw / max;
    if reverse { MAX_NODE_SCORE - scaled } else { scaled }
}

/// PodTopologySpread's raw count for a node with `same_workload` pods of the pod's workload.
pub(crate) fn spread_raw(same_workload: u32) -> i64 {
    i64::from(same_workload) + HOSTNAME_MAX_SKEW - 1
}

/// PodTopologySpread's normalization over the nodes' raw counts (`min`..=`max`): the emptiest
/// node gets 100 and fuller ones proportionally less (`100 × (max + min - raw) / max`).
pub(crate) fn normalize_spread(raw: i64, min: i64, max: i64) -> i64 {
    if max == 0 { MAX_NODE_SCORE } else { MAX_NODE_SCORE * (max + min - raw) / max }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{container, node_from, node_info, pod, wanted};
    use serde_json::json;

    fn sized(cpu: &str, memory: &str) -> NodeInfo {
        node_info(node_from(
            "n",
            json!({"status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}}),
        ))
    }

    #[test]
    fn least_allocated_prefers_free_nodes() {
        let p = pod("p", json!({"containers": [container("1", "1Gi")]}));
        let w = wanted(&p);
        // 4 cpu / 4Gi: 3/4 of each left → 75.
        assert_eq!(least_allocated(&sized("4", "4Gi"), &w), 75);
        // 2 cpu / 8Gi: cpu 50, memory 87 → 68.
        assert_eq!(least_allocated(&sized("2", "8Gi"), &w), (50 + 87) / 2);
        // Over capacity scores 0 for that resource.
        assert_eq!(least_allocated(&sized("500m", "4Gi"), &w), 75 / 2);
        let mut busy = sized("4", "4Gi");
        busy.add(&w.usage);
        assert_eq!(least_allocated(&busy, &w), 50);
    }

    #[test]
    fn least_allocated_counts_defaults_for_missing_requests() {
        let p = pod("p", json!({"containers": [{"name": "c", "image": "i"}]}));
        let w = wanted(&p);
        // 100m of 1 cpu and 200Mi of 1000Mi: 90 and 80.
        assert_eq!(least_allocated(&sized("1", "1000Mi"), &w), 85);
    }

    #[test]
    fn balanced_allocation_prefers_even_use() {
        let p = pod("p", json!({"containers": [container("1", "1Gi")]}));
        let w = wanted(&p);
        assert_eq!(balanced_allocation(&sized("4", "4Gi"), &w), 100);
        // cpu 1/2, memory 1/8: deviation 0.1875 → 81.
        assert_eq!(balanced_allocation(&sized("2", "8Gi"), &w), 81);
        // Fractions are capped at 1.
        assert_eq!(balanced_allocation(&sized("500m", "1Gi"), &w), 100);
        let best_effort = pod("be", json!({"containers": [{"name": "c", "image": "i"}]}));
        assert_eq!(balanced_allocation(&sized("2", "8Gi"), &wanted(&best_effort)), 0);
    }

    #[test]
    fn taint_and_affinity_raw_scores() {
        let n = node_info(node_from(
            "n",
            json!({"metadata": {"labels": {"zone": "a"}}, "spec": {"taints": [
            {"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"},
            {"key": "c", "effect": "NoSchedule"}]}}),
        ));
        let p = pod(
            "p",
            json!({"containers": [], "tolerations": [{"key": "a", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 20, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}}),
        );
        let w = wanted(&p);
        assert_eq!(intolerable_taints(&n, &w), 1);
        assert_eq!(preferred_affinity(&n, &w), 20);
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize(5, 10, false), 50);
        assert_eq!(normalize(10, 10, false), 100);
        assert_eq!(normalize(0, 0, false), 0);
        assert_eq!(normalize(1, 4, true), 75);
        assert_eq!(normalize(0, 0, true), 100);
        assert_eq!(least_requested(i64::MAX / 4, i64::MAX / 2), 50, "huge capacities do not overflow");
        // Spread: counts 0, 1 and 4 → raw 2, 3, 6.
        let (min, max) = (spread_raw(0), spread_raw(4));
        assert_eq!(normalize_spread(spread_raw(0), min, max), 100);
        assert_eq!(normalize_spread(spread_raw(1), min, max), 83);
        assert_eq!(normalize_spread(spread_raw(4), min, max), 33);
        assert_eq!(normalize_spread(spread_raw(2), spread_raw(2), spread_raw(2)), 100);
    }
}
