//! Preemption's side of the scheduler loop: what the pure decision (`scheduler/preemption.rs`)
//! needs from the cluster — PodDisruptionBudgets and who is still leaving — and the writes that
//! carry a decision out, as upstream's DefaultPreemption does: each victim gets the
//! `DisruptionTarget` condition (reason `PreemptionByScheduler`), a `Preempted` event and a
//! graceful delete; the preemptor's `status.nominatedNodeName` is written by the loop with its
//! `PodScheduled=False` condition.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::{
    api::{core::v1::Pod, policy::v1::PodDisruptionBudget},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::{Ctx, cache::Cache, events, writes};
use crate::{
    api::{deletion, disruption, registry},
    scheduler::{Budget, Preemption},
    store::Store,
};

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether `pod`, nominated to `node`, should wait rather than preempt again: lower-priority
/// pods there are still terminating (upstream's `podEligibleToPreemptOthers`), so the room it
/// made is on its way.
pub fn waiting_for_victims(cache: &Cache, pod: &Pod, node: &str) -> bool {
    let mine = priority(pod);
    cache.pods_on(node).any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < mine)
}

/// Every PodDisruptionBudget with its allowance over the cached pods. Read from the store: the
/// cache does not hold budgets, and preemption is rare enough to afford the read.
pub fn budgets<S: Store + Clone>(ctx: &Ctx<S>, cache: &Cache) -> Vec<Budget> {
    let Ok(r) = registry::builtin("poddisruptionbudgets", "policy") else { return Vec::new() };
    let (stored, _) = ctx.server.store.list(&r.prefix());
    stored
        .iter()
        .filter_map(|o| serde_json::from_slice::<PodDisruptionBudget>(&o.value).ok())
        .map(|budget| {
            let namespace = budget.metadata.namespace.clone().unwrap_or_default();
            let (allowed, covered) =
                disruption::allowance(&budget, cache.pods.in_namespace(&namespace).map(Arc::as_ref));
            let pods = covered.iter().map(|p| super::cache::key_of(&p.metadata)).collect();
            Budget { allowed, pods }
        })
        .collect()
}

/// Evicts `plan`'s victims for `preemptor`: condition, event, graceful delete. Best effort per
/// victim (a victim gone meanwhile is fine); the preemptor retries once the room is there.
pub async fn evict_victims<S: Store + Clone>(
    ctx: &Ctx<S>,
    cache: &Cache,
    preemptor: &Pod,
    plan: &Preemption,
    component: &str,
    now: Timestamp,
) {
    let scheduler = preemptor.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(component);
    let uid = preemptor.metadata.uid.as_deref().unwrap_or_default();
    for key in &plan.victims {
        let Some(victim) = cache.pods.get(key) else { continue };
        mark_disruption_target(ctx, victim, scheduler, component, now).await;
        let message = format!("Preempted by pod {uid} on node {}", plan.node);
        events::record(
            ctx,
            &events::reference(victim.as_ref()),
            events::NORMAL,
            "Preempted",
            &message,
            component,
        )
        .await;
        if let Err(e) = writes::delete::<S, Pod>(ctx, &victim.metadata, &deletion::Options::default()).await {
            tracing::warn!(pod = %key, "preemption could not delete a victim: {}", e.message);
        }
    }
}

/// The `DisruptionTarget` condition upstream puts on a victim before deleting it.
async fn mark_disruption_target<S: Store + Clone>(
    ctx: &Ctx<S>,
    victim: &Pod,
    scheduler: &str,
    component: &str,
    now: Timestamp,
) {
    let mut updated = victim.clone();
    let conditions =
        updated.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(k8s_openapi::api::core::v1::PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("PreemptionByScheduler".into()),
        message: Some(format!("{scheduler}: preempting to accommodate a higher priority pod")),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    });
    if let Err(e) = writes::replace(ctx, &updated, true, component).await {
        tracing::debug!("could not mark a victim DisruptionTarget: {}", e.message);
    }
}
