//! The CronJob loop: starts each CronJob's Jobs on schedule as [`super::cronjob::plan`] decides,
//! prunes finished Jobs past the history limits, and wakes at the next scheduled time.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;

use super::cronjob;
use crate::{
    api::{ApiError, deletion::Options},
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

const COMPONENT: &str = "cronjob-controller";

#[derive(Debug, Default)]
pub struct CronJobs;

impl CronJobs {
    pub fn observe(&mut self, change: &Change, _cache: &Cache, queue: &mut Queue<Work>) {
        match change {
            Change::CronJob(delta) => {
                if let Some(cj) = delta.latest() {
                    queue.push((Loop::CronJob, key_of(&cj.metadata)));
                }
            }
            Change::Job(delta) => {
                for j in [&delta.old, &delta.new].into_iter().flatten() {
                    if let Some(r) = owner::controller_of(&j.metadata).filter(|r| r.kind == "CronJob") {
                        queue.push((Loop::CronJob, key(j.metadata.namespace.as_deref(), &r.name)));
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
        cj_key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let Some(cj) = cache.cronjobs.get(cj_key) else { return Ok(None) };
        let uid = cj.metadata.uid.as_deref().unwrap_or_default();
        let jobs: Vec<&Job> = cache.jobs.controlled_by(uid).map(|j| &**j).collect();
        let reference = events::reference(&**cj);
        let plan = match cronjob::plan(cj, &jobs, ctx.clock.now()) {
            Ok(plan) => plan,
            Err(e) => {
                // Validation keeps bad schedules out; one stored before a zone vanished stays idle.
                let message = format!("unparseable schedule or time zone: {e}");
                events::record(ctx, &reference, events::WARNING, "UnparseableSchedule", &message, COMPONENT)
                    .await;
                return Ok(None);
            }
        };
        let ns = cj.metadata.namespace.as_deref();
        for name in &plan.delete {
            if let Some(j) = cache.jobs.get(&key(ns, name)) {
                writes::delete::<S, Job>(ctx, &j.metadata, &Options::default()).await?;
                let message = format!("Deleted job {name}");
                events::record(ctx, &reference, events::NORMAL, "SuccessfulDelete", &message, COMPONENT)
                    .await;
            }
        }
        if let Some(j) = &plan.create {
            match writes::create(ctx, j, COMPONENT).await {
                // Another attempt at this time got there first: the status below still holds.
                Err(e) if e.code == 409 => {}
                Err(e) => {
                    let message = format!("Error creating job: {}", e.message);
                    events::record(ctx, &reference, events::WARNING, "FailedCreate", &message, COMPONENT)
                        .await;
                    return Err(e);
                }
                Ok(_) => {}
            }
        }
        for n in &plan.notes {
            let kind = if n.warning { events::WARNING } else { events::NORMAL };
            events::record(ctx, &reference, kind, &n.reason, &n.message, COMPONENT).await;
        }
        if cj.status.as_ref() != Some(&plan.status) {
            let mut updated = (**cj).clone();
            updated.status = Some(plan.status);
            writes::replace(ctx, &updated, true, COMPONENT).await?;
        }
        Ok(plan.next_check)
    }
}
