//! One scheduling decision: filter the nodes, score the ones that fit, pick the best.

use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use super::{
    affinity::NameSet,
    cluster::Cluster,
    fit_error::{FitError, Reason, TERMS_CONFLICT, Tally},
    pod::{Wanted, tie_breaker},
    score,
};

/// Below this many nodes every node is examined (upstream's `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this (`minFeasibleNodesPercentageToFind`).
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// One feasible node with its raw plugin scores, before normalization.
#[derive(Debug, Clone, Copy)]
struct Raw {
    slot: usize,
    /// LeastAllocated × weight + BalancedAllocation × weight (already 0..=100 each).
    resources: i64,
    taints: i64,
    affinity: i64,
    spread: i64,
}

impl Cluster {
    /// Chooses the node for `pod`, or says why none fits. Pure: the snapshot is not changed
    /// (only where the next search starts); the caller then [`assume`](Cluster::assume)s the
    /// pod onto the node and writes the binding.
    pub fn schedule(&self, pod: &Pod) -> Result<String, FitError> {
        if self.live_nodes == 0 {
            return Err(FitError::no_nodes());
        }
        let no_spec;
        let spec = match pod.spec.as_ref() {
            Some(spec) => spec,
            None => {
                no_spec = PodSpec::default();
                &no_spec
            }
        };
        let wanted = Wanted::new(pod, spec);
        let mut tally = Tally::default();
        let feasible = match &wanted.required.names {
            Some(NameSet::Conflict) => {
                return Err(FitError::before_filtering(self.live_nodes, TERMS_CONFLICT));
            }
            Some(NameSet::Only(names)) => self.feasible_among(names, &wanted, &mut tally),
            Some(NameSet::All) | None => self.feasible_sample(&wanted, &mut tally),
        };
        let best = match feasible.as_slice() {
            [] => return Err(tally.into_error(self.live_nodes)),
            [only] => *only,
            _ => self.best(&wanted, &feasible),
        };
        let info = self.slots[best].as_ref().expect("feasible slots hold nodes");
        Ok(info.name().to_string())
    }

    /// How many feasible nodes end the search (upstream's `numFeasibleNodesToFind`).
    pub(super) fn feasible_nodes_to_find(&self, nodes: usize) -> usize {
        if nodes < MIN_FEASIBLE_NODES_TO_FIND {
            return nodes;
        }
        let percentage = match self.percentage_of_nodes_to_score {
            0 => 50usize.saturating_sub(nodes / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE),
            p => p as usize,
        };
        (nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// The nodes that fit, examining nodes round-robin from where the last search stopped and
    /// stopping once enough fit (so all nodes get their turn, and big clusters cost a fraction).
    /// A pod that fits nowhere is checked against every node, so its `FitError` is complete.
    fn feasible_sample<'a>(&'a self, wanted: &'a Wanted<'_>, tally: &mut Tally<'a>) -> Vec<usize> {
        let slots = self.slots.len();
        let wanted_count = self.feasible_nodes_to_find(self.live_nodes);
        let start = self.next_start.load(Ordering::Relaxed) % slots;
        let mut feasible = Vec::with_capacity(wanted_count);
        let mut examined = slots;
        for (i, slot) in (start..slots).chain(0..start).enumerate() {
            let Some(info) = self.live(slot) else { continue };
            if self.fits(info, wanted, tally) {
                feasible.push(slot);
                if feasible.len() >= wanted_count {
                    examined = i + 1;
                    break;
                }
            }
        }
        self.next_start.store((start + examined) % slots, Ordering::Relaxed);
        feasible
    }

    /// The nodes that fit among those the pod names by `matchFields` (a DaemonSet pod's one
    /// node); every other node counts as rejected by NodeAffinity's prefilter.
    fn feasible_among<'a>(
        &'a self,
        names: &[&str],
        wanted: &'a Wanted<'_>,
        tally: &mut Tally<'a>,
    ) -> Vec<usize> {
        let mut feasible = Vec::new();
        let mut examined = 0;
        for slot in names.iter().filter_map(|name| self.slot_of(name)) {
            let Some(info) = self.live(slot) else { continue };
            examined += 1;
            if self.fits(info, wanted, tally) {
                feasible.push(slot);
            }
        }
        tally.add_many(Reason::NotInNameSet, self.live_nodes - examined);
        feasible
    }

    /// Scores the feasible nodes and returns the best one. Ties go to the node whose name hashes
    /// highest together with the pod's uid: stable for a given pod, different across pods.
    fn best(&self, wanted: &Wanted<'_>, feasible: &[usize]) -> usize {
        let same_workload = self.workload_counts(wanted);
        let mut raws = Vec::with_capacity(feasible.len());
        for &slot in feasible {
            let info = self.slots[slot].as_ref().expect("feasible slots hold nodes");
            raws.push(Raw {
                slot,
                resources: score::LEAST_ALLOCATED_WEIGHT * score::least_allocated(info, wanted)
                    + score::BALANCED_ALLOCATION_WEIGHT * score::balanced_allocation(info, wanted),
                taints: score::intolerable_taints(info, wanted),
                affinity: score::preferred_affinity(info, wanted),
                spread: same_workload.as_ref().map_or(0, |counts| score::spread_raw(counts[slot])),
            });
        }
        let max_taints = raws.iter().map(|r| r.taints).max().unwrap_or(0);
        let max_affinity = raws.iter().map(|r| r.affinity).max().unwrap_or(0);
        let min_spread = raws.iter().map(|r| r.spread).min().unwrap_or(0);
        let max_spread = raws.iter().map(|r| r.spread).max().unwrap_or(0);
        let total = |r: &Raw| {
            let spread = match same_workload {
                Some(_) => score::normalize_spread(r.spread, min_spread, max_spread),
                // Nothing to spread against: upstream skips the plugin (0 everywhere).
                None => 0,
            };
            r.resources
                + score::TAINT_TOLERATION_WEIGHT * score::normalize(r.taints, max_taints, true)
                + score::NODE_AFFINITY_WEIGHT * score::normalize(r.affinity, max_affinity, false)
                + score::SPREAD_WEIGHT * spread
        };
        let key = |r: &Raw| {
            let info = self.slots[r.slot].as_ref().expect("feasible slots hold nodes");
            (total(r), tie_breaker(wanted.tie_hash, info.name_hash()))
        };
        raws.iter().max_by_key(|r| key(r)).map_or(feasible[0], |r| r.slot)
    }

    /// Pods of the pod's workload per slot, when the pod has a workload; dense so the scoring
    /// loop indexes instead of hashing.
    fn workload_counts(&self, wanted: &Wanted<'_>) -> Option<Vec<u32>> {
        let workload = wanted.usage.workload.as_ref()?;
        let mut counts = vec![0; self.slots.len()];
        for (&slot, &n) in self.workloads.get(workload).into_iter().flatten() {
            counts[slot] = n;
        }
        Some(counts)
    }
}
