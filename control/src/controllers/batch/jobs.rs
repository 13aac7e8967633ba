//! The Job loop: runs each Job's pods to completion as [`super::job::plan`] decides, deletes
//! Jobs whose `ttlSecondsAfterFinished` has passed, and releases the tracking finalizer of pods
//! whose Job is gone or going (so the garbage collector and the agents can finish them off).

use std::collections::HashMap;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};

use super::job::{self, has_tracking_finalizer};
use crate::{
    api::{
        ApiError,
        deletion::{Options, Propagation},
    },
    controllers::{
        Ctx, Loop, Work,
        cache::{Cache, Change, key, key_of},
        events,
        queue::Queue,
        workloads::owner,
        writes,
    },
    store::Store,
};

const COMPONENT: &str = "job-controller";

#[derive(Debug, Default)]
pub struct Jobs {
    /// Job key → its latest pod failure seen. Failed pods may be gone by the time the
    /// replacement is due (deleted pods are), so the back-off remembers, as upstream's does.
    failures: HashMap<String, Timestamp>,
}

/// The Job controlling `pod`, if one does.
fn job_of(pod: &Pod) -> Option<String> {
    let r = owner::controller_of(&pod.metadata).filter(|r| r.kind == "Job" && r.api_version == "batch/v1")?;
    Some(key(pod.metadata.namespace.as_deref(), &r.name))
}

/// A pod holding the tracking finalizer that no live Job will ever count.
fn stranded(pod: &Pod, cache: &Cache) -> bool {
    has_tracking_finalizer(&pod.metadata)
        && match job_of(pod).and_then(|k| cache.jobs.get(&k)) {
            None => true,
            Some(j) => {
                j.metadata.deletion_timestamp.is_some()
                    || owner::controller_of(&pod.metadata).map(|r| r.uid.as_str())
                        != j.metadata.uid.as_deref()
            }
        }
}

impl Jobs {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        match change {
            Change::Job(delta) => {
                if let Some(j) = delta.latest() {
                    queue.push((Loop::Job, key_of(&j.metadata)));
                    // Its pods: a Job being deleted releases them.
                    if let Some(uid) = j.metadata.uid.as_deref() {
                        for pod in cache.pods.controlled_by(uid).filter(|p| stranded(p, cache)) {
                            queue.push((Loop::JobPod, key_of(&pod.metadata)));
                        }
                    }
                }
            }
            Change::Pod(delta) => {
                for pod in [&delta.old, &delta.new].into_iter().flatten() {
                    if let Some(j) = job_of(pod) {
                        queue.push((Loop::Job, j));
                    }
                }
                if let Some(pod) = delta.new.as_ref().filter(|p| stranded(p, cache)) {
                    queue.push((Loop::JobPod, key_of(&pod.metadata)));
                }
            }
            _ => {}
        }
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        job_key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let Some(j) = cache.jobs.get(job_key) else {
            self.failures.remove(job_key);
            return Ok(None);
        };
        if j.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let ns = j.metadata.namespace.as_deref().unwrap_or_default();
        let uid = j.metadata.uid.as_deref().unwrap_or_default();
        let pods: Vec<&Pod> = cache.pods.controlled_by(uid).map(|p| &**p).collect();
        let plan = job::plan(j, &pods, self.failures.get(job_key).copied(), ctx.clock.now());
        if let Some(at) = plan.last_failure {
            self.failures.insert(job_key.to_owned(), at);
        }
        let reference = events::reference(&**j);

        // Newly finished pods are recorded before their finalizers go, so none is lost.
        if j.status.as_ref() != Some(&plan.status) {
            let mut updated = (**j).clone();
            updated.status = Some(plan.status.clone());
            writes::replace(ctx, &updated, true, COMPONENT).await?;
        }
        let pod = |name: &str| cache.pods.get(&key(Some(ns), name));
        let released =
            join_all(plan.unfinalize.iter().filter_map(|n| pod(n)).map(|p| unfinalize(ctx, p))).await;
        released.into_iter().collect::<Result<Vec<()>, _>>()?;

        let doomed: Vec<&Pod> = plan.delete.iter().filter_map(|n| pod(n)).map(|p| &**p).collect();
        if !plan.count_deleted {
            // Pods the Job stops by choice are not failures: released first, never counted.
            let tracked = doomed.iter().filter(|p| has_tracking_finalizer(&p.metadata));
            let released = join_all(tracked.map(|p| unfinalize(ctx, p))).await;
            released.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        let options = Options::default();
        let deleted =
            join_all(doomed.iter().map(|p| writes::delete::<S, Pod>(ctx, &p.metadata, &options))).await;
        for (p, result) in doomed.iter().zip(deleted) {
            result?;
            let message = format!("Deleted pod: {}", p.metadata.name.as_deref().unwrap_or_default());
            events::record(ctx, &reference, events::NORMAL, "SuccessfulDelete", &message, COMPONENT).await;
        }
        let new: Vec<Pod> = plan.create.iter().map(|i| job::pod_for(j, *i)).collect();
        writes::create_pods(ctx, &reference, &new, COMPONENT).await?;
        for n in &plan.notes {
            let kind = if n.warning { events::WARNING } else { events::NORMAL };
            events::record(ctx, &reference, kind, &n.reason, &n.message, COMPONENT).await;
        }
        if plan.expired {
            // As the TTL-after-finished controller: foreground, so the pods go first.
            let options = Options { propagation: Propagation::Foreground, ..Options::default() };
            writes::delete::<S, Job>(ctx, &j.metadata, &options).await?;
        }
        Ok(plan.next_check)
    }

    /// Releases a pod no live Job will count.
    pub async fn release<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        pod_key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        match cache.pods.get(pod_key) {
            Some(p) if stranded(p, cache) => unfinalize(ctx, p).await.map(|()| None),
            _ => Ok(None),
        }
    }
}

/// Removes the tracking finalizer from `pod`, unless it changed meanwhile.
async fn unfinalize<S: Store + Clone>(ctx: &Ctx<S>, pod: &Pod) -> Result<(), ApiError> {
    let mut updated = pod.clone();
    if let Some(f) = updated.metadata.finalizers.as_mut() {
        f.retain(|f| f != job::TRACKING_FINALIZER);
    }
    updated.metadata.finalizers = updated.metadata.finalizers.filter(|f| !f.is_empty());
    match writes::replace(ctx, &updated, false, COMPONENT).await {
        // Gone already: nothing holds it.
        Err(e) if e.code == 404 => Ok(()),
        other => other.map(drop),
    }
}
