//! The scheduler loop: pods without a node go through [`crate::scheduler`], in batches — each
//! pod decided and assumed onto its node at once (so the next decision sees the room it takes),
//! then the batch's bindings written concurrently (the store commits them together). A pod that
//! fits nowhere gets `PodScheduled=False` (reason Unschedulable, upstream's message) and a
//! FailedScheduling event, and is parked until a node or a pod changes — and at least every
//! minute — retrying no sooner than its back-off (1 s doubling to 10 s, like kube-scheduler's).
//! A failed binding forgets the assumption and backs off the same way.

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
    clock, events,
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
                        if wants_scheduling(pod) {
                            if !self.parked.contains_key(&k) {
                                self.pending.push(k);
                            }
                        } else {
                            self.parked.remove(&k);
                        }
                    }
                    None => {
                        if let Some(old) = &delta.old {
                            let (ns, name) =
                                (old.metadata.namespace.as_deref(), old.metadata.name.as_deref());
                            self.cluster.remove_pod(ns.unwrap_or_default(), name.unwrap_or_default());
                            self.parked.remove(&key_of(&old.metadata));
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
        let mut binds = Vec::new();
        let mut unschedulable = Vec::new();
        while binds.len() + unschedulable.len() < BATCH_SIZE {
            let Some(k) = self.pending.pop(now) else { break };
            let Some(pod) = cache.pods.get(&k).filter(|p| wants_scheduling(p)) else { continue };
            match self.cluster.schedule(pod) {
                Ok(node) => {
                    self.cluster.assume(&node, pod);
                    binds.push((pod.clone(), node));
                }
                Err(fit) => unschedulable.push((pod.clone(), fit.to_string())),
            }
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
            // Parked rather than queued: it waits for a change (the back-off bounds how soon).
            let delay = self.pending.count_failure(&k, BACKOFF);
            self.parked.insert(k, (now, clock::after(now, delay)));
            mark_unschedulable(ctx, pod, message, now).await;
        }
        let next_parked = self.parked.values().map(|(since, _)| clock::after(*since, PARKED_MAX)).min();
        Ok([self.pending.next_due().map(|t| t.max(now)), next_parked].into_iter().flatten().min())
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

/// `PodScheduled=False` with the reason (written only when it changes) and a FailedScheduling
/// event (repeats are counted on one event).
async fn mark_unschedulable<S: Store + Clone>(ctx: &Ctx<S>, pod: &Pod, message: &str, now: Timestamp) {
    events::record(ctx, &events::reference(pod), events::WARNING, "FailedScheduling", message, COMPONENT)
        .await;
    let mut updated = pod.clone();
    let conditions =
        updated.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
    let current = conditions.iter().find(|c| c.type_ == "PodScheduled");
    if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message)) {
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
