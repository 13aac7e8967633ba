//! The scheduler loop: pods without a node go through [`crate::scheduler`], in batches — each
//! pod decided and assumed onto its node at once (so the next decision sees the room it takes),
//! then the batch's bindings written concurrently (the store commits them together). A pod that
//! fits nowhere gets `PodScheduled=False` (reason Unschedulable, upstream's message) and a
//! FailedScheduling event, and is parked until a node or a pod changes — and at least every
//! minute — retrying no sooner than its back-off (1 s doubling to 10 s, like kube-scheduler's).
//! A failed binding forgets the assumption and backs off the same way.
//!
//! Pods due together are decided in priority order, higher first, then older first (upstream's
//! PrioritySort). A pod that fits nowhere and may preempt (`preemptionPolicy` not `Never`)
//! gets a node and minimal lower-priority victims from [`Cluster::preempt`]; it is nominated
//! there (`status.nominatedNodeName`, and in the snapshot at once, so pods of lower or equal
//! priority cannot take the room), the victims are evicted (`preempting.rs`), and the pod is
//! bound once they are gone — its nominated node is tried first. While lower-priority pods on
//! its nominated node are still terminating it waits instead of preempting again.

use std::collections::HashMap;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Pod, PodCondition},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change, key, key_of, split},
    clock, events, preempting,
    queue::{Backoff, Queue},
};
use crate::{api::ApiError, scheduler::Cluster, store::Store};

const COMPONENT: &str = "default-scheduler";
/// The one key this loop queues: "run a batch".
const BATCH: &str = "";
/// Pods decided before their bindings are written together.
const BATCH_SIZE: usize = 512;
const BACKOFF: Backoff =
    Backoff { base: std::time::Duration::from_secs(1), max: std::time::Duration::from_secs(10) };
/// The longest an unschedulable pod waits for a change before it is tried again anyway.
const PARKED_MAX: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Scheduler {
    cluster: Cluster,
    /// Pod keys waiting for a decision (due now or after a back-off).
    pending: Queue<String>,
    /// Unschedulable pods: when they were parked and when they may be tried again.
    parked: HashMap<String, (Timestamp, Timestamp)>,
}

/// Whether this scheduler should place `pod`.
fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduler_name.as_deref().is_none_or(|s| s == COMPONENT)
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
        && !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The order pods due together are decided in: higher priority first, then older first, as
/// upstream's PrioritySort queue (the name keeps it deterministic).
fn queue_order(pod: Option<&Pod>) -> (std::cmp::Reverse<i32>, Option<Timestamp>) {
    let priority = pod.and_then(|p| p.spec.as_ref()?.priority).unwrap_or(0);
    let created = pod.and_then(|p| p.metadata.creation_timestamp.as_ref()).map(|t| t.0);
    (std::cmp::Reverse(priority), created)
}

/// The node a pod's status nominates.
fn nominated_in_status(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.nominated_node_name.as_deref().filter(|n| !n.is_empty())
}

impl Scheduler {
    /// Unparks every unschedulable pod (no sooner than its back-off allows): the cluster changed.
    fn unpark(&mut self) {
        for (key, (_, not_before)) in self.parked.drain() {
            self.pending.push_at(key, not_before);
        }
    }

    pub fn observe(&mut self, change: &Change, _cache: &Cache, queue: &mut Queue<Work>) {
        match change {
            Change::Node(delta) => {
                match (&delta.new, &delta.old) {
                    (Some(node), _) => self.cluster.upsert_node(node.clone()),
                    (None, Some(old)) => {
                        self.cluster.remove_node(old.metadata.name.as_deref().unwrap_or_default());
                    }
                    (None, None) => {}
                }
                self.unpark();
            }
            Change::Pod(delta) => {
                match &delta.new {
                    Some(pod) => {
                        self.cluster.observe_pod(pod);
                        let k = key_of(&pod.metadata);
                        let (ns, name) = split(&k);
                        if wants_scheduling(pod) {
                            // Nominations survive a restart of the loops through the status.
                            if let Some(node) = nominated_in_status(pod)
                                && self.cluster.nominated_node(ns.unwrap_or_default(), name).is_none()
                            {
                                self.cluster.nominate(node, pod);
                            }
                            if !self.parked.contains_key(&k) {
                                self.pending.push(k);
                            }
                        } else {
                            self.cluster.unnominate(ns.unwrap_or_default(), name);
                            self.parked.remove(&k);
                        }
                    }
                    None => {
                        if let Some(old) = &delta.old {
                            let (ns, name) =
                                (old.metadata.namespace.as_deref(), old.metadata.name.as_deref());
                            let counted =
                                self.cluster.remove_pod(ns.unwrap_or_default(), name.unwrap_or_default());
                            self.cluster.unnominate(ns.unwrap_or_default(), name.unwrap_or_default());
                            self.parked.remove(&key_of(&old.metadata));
                            // A terminating pod's room is free only now (a preemptor waits for it).
                            if counted {
                                self.unpark();
                            }
                        }
                    }
                }
                // A pod that went away or finished frees room.
                let freed = |p: &Option<std::sync::Arc<Pod>>| {
                    p.as_ref().is_none_or(|p| {
                        p.metadata.deletion_timestamp.is_some()
                            || matches!(
                                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                                Some("Succeeded" | "Failed")
                            )
                    })
                };
                if delta.old.as_ref().is_some_and(|o| !freed(&Some(o.clone()))) && freed(&delta.new) {
                    self.unpark();
                }
            }
            _ => return,
        }
        if !self.pending.is_empty() {
            queue.push((Loop::Scheduler, BATCH.to_owned()));
        }
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        _key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let now = ctx.clock.now();
        // Parked too long: try again anyway.
        let stale: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, (since, _))| clock::after(*since, PARKED_MAX) <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.parked.remove(&k);
            self.pending.push(k);
        }
        let mut due: Vec<String> = std::iter::from_fn(|| self.pending.pop(now)).collect();
        due.sort_by_cached_key(|k| (queue_order(cache.pods.get(k).map(AsRef::as_ref)), k.clone()));
        let mut binds = Vec::new();
        let mut unschedulable = Vec::new();
        let mut due = due.into_iter();
        for k in due.by_ref() {
            if binds.len() + unschedulable.len() >= BATCH_SIZE {
                self.pending.push(k);
                break;
            }
            let Some(pod) = cache.pods.get(&k).filter(|p| wants_scheduling(p)) else { continue };
            let (ns, name) = split(&k);
            let nominated = self.cluster.nominated_node(ns.unwrap_or_default(), name).map(str::to_owned);
            let decision = match nominated {
                Some(node) if self.cluster.fits_on(&node, pod) => Ok(node),
                _ => self.cluster.schedule(pod),
            };
            match decision {
                Ok(node) => {
                    self.cluster.assume(&node, pod);
                    self.cluster.unnominate(ns.unwrap_or_default(), name);
                    binds.push((pod.clone(), node));
                }
                Err(fit) => unschedulable.push((pod.clone(), fit.to_string())),
            }
        }
        // Not reached in this batch: due again at once (the next batch sorts them again).
        for k in due {
            self.pending.push(k);
        }
        let results = join_all(binds.iter().map(|(pod, node)| bind(ctx, pod, node))).await;
        for ((pod, _), result) in binds.iter().zip(results) {
            let k = key_of(&pod.metadata);
            match result {
                Ok(()) => self.pending.succeeded(&k),
                Err(e) => {
                    let (ns, name) = split(&k);
                    self.cluster.forget(ns.unwrap_or_default(), name);
                    if e.reason != "Conflict" {
                        tracing::warn!(pod = %k, "binding failed: {}", e.message);
                    }
                    self.pending.failed(k, now, BACKOFF);
                }
            }
        }
        for (pod, message) in &unschedulable {
            let k = key_of(&pod.metadata);
            let nominated = self.preempt_for(ctx, cache, pod, now).await;
            // Parked rather than queued: it waits for a change (the back-off bounds how soon).
            let delay = self.pending.count_failure(&k, BACKOFF);
            self.parked.insert(k, (now, clock::after(now, delay)));
            mark_unschedulable(ctx, pod, message, nominated.as_deref(), now).await;
        }
        let next_parked = self.parked.values().map(|(since, _)| clock::after(*since, PARKED_MAX)).min();
        Ok([self.pending.next_due().map(|t| t.max(now)), next_parked].into_iter().flatten().min())
    }

    /// Preemption for a pod that fits nowhere: the node it is newly nominated to (its victims
    /// being evicted), or `None` (it may not preempt, it waits for earlier victims, or no
    /// eviction would make room).
    async fn preempt_for<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        pod: &Pod,
        now: Timestamp,
    ) -> Option<String> {
        if !self.cluster.could_preempt(pod) {
            return None;
        }
        let meta = &pod.metadata;
        let (ns, name) =
            (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default());
        let nominated = self.cluster.nominated_node(ns, name).or_else(|| nominated_in_status(pod));
        if nominated.is_some_and(|node| preempting::waiting_for_victims(cache, pod, node)) {
            return None;
        }
        let budgets = preempting::budgets(ctx, cache);
        let plan = self.cluster.preempt(pod, &budgets)?;
        self.cluster.nominate(&plan.node, pod);
        preempting::evict_victims(ctx, cache, pod, &plan, COMPONENT, now).await;
        Some(plan.node)
    }
}

async fn bind<S: Store + Clone>(ctx: &Ctx<S>, pod: &Pod, node: &str) -> Result<(), ApiError> {
    let (ns, name) = (
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    );
    ctx.server.bind_pod(ns, name, node).await?;
    let message = format!("Successfully assigned {} to {node}", key(Some(ns), name));
    events::record(ctx, &events::reference(pod), events::NORMAL, "Scheduled", &message, COMPONENT).await;
    Ok(())
}

/// `PodScheduled=False` with the reason (written only when it changes), the node the pod is
/// newly `nominated` to, and a FailedScheduling event (repeats are counted on one event).
async fn mark_unschedulable<S: Store + Clone>(
    ctx: &Ctx<S>,
    pod: &Pod,
    message: &str,
    nominated: Option<&str>,
    now: Timestamp,
) {
    events::record(ctx, &events::reference(pod), events::WARNING, "FailedScheduling", message, COMPONENT)
        .await;
    let mut updated = pod.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    let renominated = nominated.is_some_and(|n| status.nominated_node_name.as_deref() != Some(n));
    if let Some(node) = nominated {
        status.nominated_node_name = Some(node.to_owned());
    }
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let current = conditions.iter().find(|c| c.type_ == "PodScheduled");
    if !renominated && current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message)) {
        return;
    }
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_owned()),
        last_transition_time: Some(Time(now)),
        ..PodCondition::default()
    });
    let Ok(value) = serde_json::to_value(&updated) else { return };
    if let Err(e) = ctx.server.replace_as(value, true, COMPONENT).await {
        tracing::debug!("could not mark a pod unschedulable: {}", e.message);
    }
}
