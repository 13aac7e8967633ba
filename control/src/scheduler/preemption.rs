//! Preemption (upstream's DefaultPreemption PostFilter), the pure half: for a pod that fits no
//! node, which node could take it if some lower-priority pods left, and which pods exactly?
//! The caller nominates the pod to that node and deletes the victims.
//!
//! Per node, as upstream's `SelectVictimsOnNode`:
//!
//! 1. Every pod of lower priority is a potential victim. Remove them all (what-if copy of the
//!    node); if the pod still does not fit (an untolerated taint, affinity, or not enough room
//!    even then), the node is no candidate.
//! 2. Split the potential victims, most important first (higher priority, then name), into
//!    those whose eviction would break a PodDisruptionBudget (the budget's allowed disruptions,
//!    decremented pod by pod, drop below 0) and the rest.
//! 3. Reprieve: add each back — the budget-breaking ones first, then the rest, each group most
//!    important first — and keep it if the pod still fits; otherwise it is a victim. So the
//!    victims are minimal and the most important pods stay.
//!
//! Among the candidate nodes the pick is, as upstream's `pickOneNodeForPreemption`: fewest
//! budget violations, then the lowest highest-victim priority, then the smallest sum of victim
//! priorities (each offset to be positive, so more victims always weigh more), then fewest
//! victims; the node name breaks ties. Pods nominated to a node with at least the pod's
//! priority count as placed there throughout (see `nominated.rs`).
//!
//! Pods with `preemptionPolicy: Never` never preempt, as upstream. Differences from upstream:
//! every node is examined (no candidate sampling; preemption is rare), importance ties go by
//! name rather than start time, lower-priority pods nominated to the chosen node keep their
//! nomination (upstream clears it; here they simply fail there and preempt elsewhere), and the
//! FitError message has no ` preemption: …` suffix.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;

use super::{
    cluster::{Cluster, Placed},
    fit_error::Tally,
    pod::Wanted,
};

/// A PodDisruptionBudget as preemption sees it.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    /// How many more of its pods may be disrupted now (may be ≤ 0).
    pub allowed: i32,
    /// The pods it covers, as `namespace/name`.
    pub pods: BTreeSet<String>,
}

/// The chosen node and the pods to evict from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    pub node: String,
    /// `namespace/name` of each victim, most important first.
    pub victims: Vec<String>,
    /// How many victims' evictions break a budget.
    pub budget_violations: usize,
}

/// A potential victim on one node.
struct Potential<'c> {
    key: &'c str,
    placed: &'c Placed,
}

/// What a candidate is ranked by (smaller is better).
type Rank = (usize, i32, i64, usize);

/// Whether `pod` may preempt at all: not with `preemptionPolicy: Never`.
pub fn may_preempt(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) != Some("Never")
}

impl Cluster {
    /// A cheap first check: `pod` may preempt and some placed pod has a lower priority. When
    /// false, [`preempt`](Self::preempt) finds nothing; callers skip gathering budgets.
    pub fn could_preempt(&self, pod: &Pod) -> bool {
        let lowest = self.priorities.keys().next();
        pod.spec.is_some() && may_preempt(pod) && lowest.is_some_and(|&p| p < super::pod::priority(pod))
    }

    /// Where `pod` could run after evicting lower-priority pods, and whom to evict; `None`
    /// when no eviction of lower-priority pods makes room (or the pod never preempts).
    /// `budgets` are the PodDisruptionBudgets of the cluster.
    pub fn preempt(&self, pod: &Pod, budgets: &[Budget]) -> Option<Preemption> {
        if !self.could_preempt(pod) {
            return None;
        }
        let wanted = Wanted::new(pod, pod.spec.as_ref()?);
        let mut lower: HashMap<usize, Vec<Potential<'_>>> = HashMap::new();
        for (key, placed) in &self.pods {
            if placed.usage.priority < wanted.usage.priority && *key != wanted.key {
                lower.entry(placed.slot).or_default().push(Potential { key, placed });
            }
        }
        let mut best: Option<(Rank, Preemption)> = None;
        for (slot, mut potential) in lower {
            let Some(info) = self.live(slot) else { continue };
            // Most important first: higher priority, then name (deterministic).
            potential.sort_by(|a, b| {
                b.placed.usage.priority.cmp(&a.placed.usage.priority).then_with(|| a.key.cmp(b.key))
            });
            let Some((victims, violations)) = self.victims_on(info, &wanted, &potential, budgets) else {
                continue;
            };
            if victims.is_empty() {
                continue;
            }
            let highest = victims.iter().map(|v| v.placed.usage.priority).max().unwrap_or(i32::MIN);
            let sum: i64 =
                victims.iter().map(|v| i64::from(v.placed.usage.priority) + i64::from(i32::MAX) + 1).sum();
            let rank = (violations, highest, sum, victims.len());
            let candidate = Preemption {
                node: info.name().to_owned(),
                victims: victims.iter().map(|v| v.key.to_owned()).collect(),
                budget_violations: violations,
            };
            let better = best.as_ref().is_none_or(|(r, c)| (rank, &candidate.node) < (*r, &c.node));
            if better {
                best = Some((rank, candidate));
            }
        }
        best.map(|(_, c)| c)
    }

    /// The minimal victims on one node (most important first) and how many of them break a
    /// budget; `None` when the pod would not fit even with every potential victim gone.
    fn victims_on<'p, 'c>(
        &self,
        info: &super::NodeInfo,
        wanted: &Wanted<'_>,
        potential: &'p [Potential<'c>],
        budgets: &[Budget],
    ) -> Option<(Vec<&'p Potential<'c>>, usize)> {
        let mut what_if = info.clone();
        for p in potential {
            what_if.remove(&p.placed.usage);
        }
        if !self.fits(&what_if, wanted, &mut Tally::default()) {
            return None;
        }
        let mut allowed: Vec<i32> = budgets.iter().map(|b| b.allowed).collect();
        let (mut violating, mut harmless) = (Vec::new(), Vec::new());
        for p in potential {
            let mut breaks = false;
            for (i, budget) in budgets.iter().enumerate() {
                if budget.pods.contains(p.key) {
                    allowed[i] -= 1;
                    breaks |= allowed[i] < 0;
                }
            }
            if breaks { violating.push(p) } else { harmless.push(p) }
        }
        let mut victims = Vec::new();
        let mut violations = 0;
        for (p, breaks) in violating.iter().map(|p| (*p, true)).chain(harmless.iter().map(|p| (*p, false))) {
            what_if.add(&p.placed.usage);
            if !self.fits(&what_if, wanted, &mut Tally::default()) {
                what_if.remove(&p.placed.usage);
                victims.push(p);
                violations += usize::from(breaks);
            }
        }
        victims.sort_by(|a, b| {
            b.placed.usage.priority.cmp(&a.placed.usage.priority).then_with(|| a.key.cmp(b.key))
        });
        Some((victims, violations))
    }
}
