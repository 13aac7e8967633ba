//! The DaemonSet loop: one pod of each DaemonSet on every node that should run it, rolled node
//! by node when the template changes; [`super::workloads::daemonset::plan`] decides, this loop
//! feeds it from the cache, carries it out and keeps the failed-pod back-off. Pods are created
//! pinned to their node and bound by the scheduler, in slow-start batches (1, 2, 4, …) that stop
//! at the first failure, so a broken template costs one request.
//!
//! A node's labels and taints decide which DaemonSets belong on it, so a node that appears,
//! goes, or changes either queues every DaemonSet; its status updates (heartbeats) queue none.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Node, Pod},
};

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change, Delta, key, key_of},
    clock, events,
    queue::{Backoff, Queue},
    workloads::{
        daemonset::{self, DsPlan},
        owner, selector,
    },
    writes,
};
use crate::{
    api::{ApiError, deletion::Options},
    store::Store,
};

const COMPONENT: &str = "daemonset-controller";

/// How long a node's failed daemon pods wait before the next one is deleted (and so replaced),
/// against a kubelet that keeps rejecting them: upstream's 1 s doubling to 15 min.
const FAILED_BACKOFF: Backoff = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(15 * 60) };

#[derive(Debug, Default)]
pub struct DaemonSets {
    /// `<ds uid>/<observedGeneration>/<node>` → the current delay and when the last failed pod
    /// there was deleted (upstream's key: a new generation starts afresh).
    failed: HashMap<String, (Duration, Timestamp)>,
}

/// The DaemonSets that may care about `pod`: its controller, or (an orphan) those selecting it.
fn interested(pod: &Pod, cache: &Cache) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref();
    match owner::controller_of(&pod.metadata) {
        Some(r) if r.kind == "DaemonSet" => vec![key(ns, &r.name)],
        Some(_) => Vec::new(),
        None => cache
            .daemonsets
            .in_namespace(ns.unwrap_or_default())
            .filter(|ds| selector::matches(&ds.spec.selector, pod.metadata.labels.as_ref()))
            .map(|ds| key_of(&ds.metadata))
            .collect(),
    }
}

/// Whether a node change can change which DaemonSets belong on it.
fn placement_changed(delta: &Delta<Node>) -> bool {
    let (Some(old), Some(new)) = (&delta.old, &delta.new) else { return true };
    let taints = |n: &Node| n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    old.metadata.labels != new.metadata.labels || taints(old) != taints(new)
}

fn backoff_key(ds: &DaemonSet, node: &str) -> String {
    let uid = ds.metadata.uid.as_deref().unwrap_or_default();
    let generation = ds.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
    format!("{uid}/{generation}/{node}")
}

impl DaemonSets {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        match change {
            Change::DaemonSet(delta) => {
                if let Some(ds) = delta.latest() {
                    queue.push((Loop::DaemonSet, key_of(&ds.metadata)));
                }
            }
            Change::Pod(delta) => {
                for pod in [&delta.old, &delta.new].into_iter().flatten() {
                    for ds in interested(pod, cache) {
                        queue.push((Loop::DaemonSet, ds));
                    }
                }
            }
            Change::Node(delta) if placement_changed(delta) => {
                for ds in cache.daemonsets.iter() {
                    queue.push((Loop::DaemonSet, key_of(&ds.metadata)));
                }
            }
            _ => {}
        }
    }

    /// When `node`'s failed pods of `ds` may next be deleted.
    fn held_until(&self, ds: &DaemonSet, node: &str) -> Option<Timestamp> {
        let (delay, last) = self.failed.get(&backoff_key(ds, node))?;
        Some(clock::after(*last, *delay))
    }

    /// Records that a failed pod on `node` was deleted at `now` (upstream's `Backoff.Next`).
    fn failed_pod_deleted(&mut self, ds: &DaemonSet, node: &str, now: Timestamp) {
        let entry = self.failed.entry(backoff_key(ds, node)).or_insert((Duration::ZERO, now));
        let delay = if entry.0.is_zero() || expired(entry.1, now) {
            FAILED_BACKOFF.base
        } else {
            entry.0.saturating_mul(2).min(FAILED_BACKOFF.max)
        };
        *entry = (delay, now);
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        ds_key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let now = ctx.clock.now();
        self.failed.retain(|_, (_, last)| !expired(*last, now));
        let Some(ds) = cache.daemonsets.get(ds_key) else { return Ok(None) };
        if selector::is_empty(&ds.spec.selector) && ds.metadata.deletion_timestamp.is_none() {
            let message = "This daemon set is selecting all pods. A non-empty selector is required.";
            let reference = events::reference(&**ds);
            events::record(ctx, &reference, events::WARNING, "SelectingAll", message, COMPONENT).await;
            return Ok(None);
        }
        let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
        let nodes: Vec<&Node> = cache.nodes.iter().map(|n| &**n).collect();
        // Its own pods and the orphans it might adopt: the only ones the plan looks at.
        let uid = ds.metadata.uid.as_deref().unwrap_or_default();
        let pods: Vec<&Pod> = cache.pods.claimable(ns, uid).map(|p| &**p).collect();
        let plan = daemonset::plan(ds, &nodes, &pods, now, &|node| self.held_until(ds, node));

        let pod = |name: &str| cache.pods.get(&key(Some(ns), name));
        for p in plan.adopt.iter().filter_map(|n| pod(n)) {
            writes::adopt(ctx, &**p, daemonset::controller_ref(ds), COMPONENT).await?;
        }
        for p in plan.release.iter().filter_map(|n| pod(n)) {
            writes::release(ctx, &**p, &**ds, COMPONENT).await?;
        }
        let pods: Vec<Pod> = plan.create.iter().map(|n| daemonset::pod_for_node(ds, n, &plan.hash)).collect();
        writes::create_pods(ctx, &events::reference(&**ds), &pods, COMPONENT).await?;
        self.delete_pods(ctx, ds, &plan, cache, now).await?;
        if let Some(status) = plan.status.filter(|s| ds.status.as_ref() != Some(s)) {
            let mut updated = (**ds).clone();
            updated.status = Some(status);
            writes::replace(ctx, &updated, true, COMPONENT).await?;
        }
        Ok(plan.next_check)
    }

    /// Records the plan's finished pods (an event each; a failed one moves its node's back-off
    /// on), then deletes the plan's pods concurrently, an event for each.
    async fn delete_pods<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        ds: &DaemonSet,
        plan: &DsPlan,
        cache: &Cache,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let reference = events::reference(ds);
        let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
        for f in &plan.finished {
            // Upstream's reasons and messages.
            let (kind, reason, state, then) = if f.failed {
                (events::WARNING, "FailedDaemonPod", "failed", "will try to kill it")
            } else {
                (events::NORMAL, "SucceededDaemonPod", "succeeded", "will try to delete it")
            };
            let message = format!("Found {state} daemon pod {ns}/{} on node {}, {then}", f.pod, f.node);
            events::record(ctx, &reference, kind, reason, &message, COMPONENT).await;
            if f.failed {
                self.failed_pod_deleted(ds, &f.node, now);
            }
        }
        let doomed: Vec<&Arc<Pod>> =
            plan.delete.iter().filter_map(|n| cache.pods.get(&key(Some(ns), n))).collect();
        let options = Options::default();
        let deleted =
            join_all(doomed.iter().map(|p| writes::delete::<S, Pod>(ctx, &p.metadata, &options))).await;
        for (p, result) in doomed.iter().zip(deleted) {
            result?;
            let message = format!("Deleted pod: {}", p.metadata.name.as_deref().unwrap_or_default());
            events::record(ctx, &reference, events::NORMAL, "SuccessfulDelete", &message, COMPONENT).await;
        }
        Ok(())
    }
}

/// Upstream forgets a back-off entry untouched for twice the longest delay.
fn expired(last: Timestamp, now: Timestamp) -> bool {
    clock::after(last, FAILED_BACKOFF.max.saturating_mul(2)) < now
}
