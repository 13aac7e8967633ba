//! The disruption loop: keeps every PodDisruptionBudget's status current as its pods come, go
//! and change readiness — `expectedPods`, `currentHealthy`, `desiredHealthy`,
//! `disruptionsAllowed` (what `kubectl get pdb` shows) and the `DisruptionAllowed` condition —
//! and drops `disruptedPods` entries once their pod is terminating or two minutes have passed
//! (an evicted pod that never went away counts as healthy again). Counting is the eviction
//! API's own (`api/disruption.rs`), so the two never disagree.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        core::v1::Pod,
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus},
    },
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change, key_of},
    queue::Queue,
    writes,
};
use crate::{
    api::{
        ApiError,
        disruption::{DISRUPTED_FOR_S, covers, desired_healthy, ready, terminating, unfinished},
    },
    store::Store,
};

const COMPONENT: &str = "disruption-controller";

#[derive(Debug, Default)]
pub struct Disruption;

/// The status `budget` should have given the pods of its namespace, and when an entry of
/// `disruptedPods` expires (look again then).
pub fn status(
    budget: &PodDisruptionBudget,
    pods: &[&Pod],
    now: Timestamp,
) -> (PodDisruptionBudgetStatus, Option<Timestamp>) {
    let old = budget.status.clone().unwrap_or_default();
    let covered: Vec<&Pod> = pods.iter().copied().filter(|p| covers(budget, p) && unfinished(p)).collect();
    let by_name = |name: &str| covered.iter().find(|p| p.metadata.name.as_deref() == Some(name));
    let lifetime = SignedDuration::from_secs(DISRUPTED_FOR_S);
    let mut next = None;
    let disrupted: BTreeMap<String, Time> = old
        .disrupted_pods
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| {
            let expires = at.0.checked_add(lifetime).unwrap_or(Timestamp::MAX);
            let live = by_name(name).is_some_and(|p| !terminating(p)) && expires > now;
            if live {
                next = Some(next.map_or(expires, |n: Timestamp| n.min(expires)));
            }
            live
        })
        .collect();
    let expected = i32::try_from(covered.len()).unwrap_or(i32::MAX);
    let healthy = covered
        .iter()
        .filter(|p| {
            ready(p) && !terminating(p) && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or(""))
        })
        .count();
    let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let desired = desired_healthy(budget, expected);
    let allowed = (healthy - desired).max(0);
    let (state, reason, message) = if allowed > 0 {
        ("True", "SufficientPods", String::new())
    } else {
        (
            "False",
            "InsufficientPods",
            format!("The disruption budget needs {desired} healthy pods and has {healthy} currently"),
        )
    };
    let generation = budget.metadata.generation;
    let old_condition = old.conditions.iter().flatten().find(|c| c.type_ == "DisruptionAllowed");
    let condition = Condition {
        type_: "DisruptionAllowed".into(),
        status: state.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        // Unchanged state keeps its transition time.
        last_transition_time: match old_condition {
            Some(c) if c.status == state => c.last_transition_time.clone(),
            _ => Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
        },
    };
    let status = PodDisruptionBudgetStatus {
        current_healthy: Some(healthy),
        desired_healthy: Some(desired),
        expected_pods: Some(expected),
        disruptions_allowed: Some(allowed),
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: generation,
        conditions: Some(vec![condition]),
    };
    (status, next)
}

impl Disruption {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        match change {
            Change::PodDisruptionBudget(delta) => {
                if let Some(b) = delta.latest() {
                    queue.push((Loop::Disruption, key_of(&b.metadata)));
                }
            }
            Change::Pod(delta) => {
                for pod in [&delta.old, &delta.new].into_iter().flatten() {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
                    for b in cache.budgets.in_namespace(ns).filter(|b| covers(b, pod)) {
                        queue.push((Loop::Disruption, key_of(&b.metadata)));
                    }
                }
            }
            _ => {}
        }
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        budget_key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let Some(budget) = cache.budgets.get(budget_key) else { return Ok(None) };
        let ns = budget.metadata.namespace.as_deref().unwrap_or_default();
        let pods: Vec<&Pod> = cache.pods.in_namespace(ns).map(|p| &**p).collect();
        let (status, next) = status(budget, &pods, ctx.clock.now());
        if budget.status.as_ref() != Some(&status) {
            let mut updated = (**budget).clone();
            updated.status = Some(status);
            writes::replace(ctx, &updated, true, COMPONENT).await?;
        }
        Ok(next)
    }
}
