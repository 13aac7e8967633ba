//! The CronJob controller's decision, as a pure function of the CronJob, its Jobs and the time:
//! whether a scheduled time has come that no Job was started for, what the concurrency policy
//! says about it, which finished Jobs fall out of the history limits, and the status.
//!
//! Jobs are named `<cronjob>-<scheduled time in minutes since the epoch>`, as upstream names
//! them, so a second attempt at the same time finds the Job instead of starting another. With
//! `Forbid`, a time that comes while a Job runs stays unmet: it starts when that Job finishes,
//! unless `startingDeadlineSeconds` has passed by then, so runs never overlap.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use k8s_openapi::{
    api::{
        batch::v1::{CronJob, CronJobStatus, Job},
        core::v1::ObjectReference,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use super::{
    cron::Schedule,
    job::{self, Note},
};
use crate::controllers::workloads::owner;

/// The annotation on a CronJob's Job naming the time it was scheduled for.
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed times beyond which an event says so (and older ones are no longer walked one by one).
const TOO_MANY_MISSED: usize = 100;

/// What one CronJob should do now: delete, then create, then write `status`. Deletions are
/// background deletions, each worth a `SuccessfulDelete` event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CronPlan {
    /// Jobs to delete (beyond the history limits, or replaced).
    pub delete: Vec<String>,
    pub create: Option<Job>,
    pub status: CronJobStatus,
    pub notes: Vec<Note>,
    /// The next scheduled time: plan again then.
    pub next_check: Option<Timestamp>,
}

/// The CronJob's time zone: `spec.timeZone`, else the system's (as kube-controller-manager's).
pub fn zone(cj: &CronJob) -> Result<TimeZone, String> {
    match cj.spec.time_zone.as_deref() {
        Some(name) => TimeZone::get(name).map_err(|_| format!("unknown time zone {name}")),
        None => Ok(TimeZone::system()),
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        // No resourceVersion: the reference would change with every status write of the Job.
        ..ObjectReference::default()
    }
}

fn note(warning: bool, reason: &str, message: String) -> Note {
    Note { warning, reason: reason.into(), message }
}

/// Whether a finished Job succeeded.
fn succeeded(job: &Job) -> bool {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Complete" && c.status == "True")
}

fn name(job: &Job) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

/// The latest scheduled time in `(since, now]`, and how many there were (counting stops being
/// exact past [`TOO_MANY_MISSED`]).
fn latest_unmet(
    schedule: &Schedule,
    zone: &TimeZone,
    since: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let (mut cursor, mut latest, mut missed) = (since, None, 0);
    while let Some(t) = schedule.next_after(cursor, zone).filter(|t| *t <= now) {
        latest = Some(t);
        missed += 1;
        cursor = t;
        if missed == TOO_MANY_MISSED {
            // Every schedule but a leap-day one fires within a year: skip ahead to it.
            let year_ago = now.checked_sub(SignedDuration::from_hours(366 * 24)).unwrap_or(now);
            cursor = cursor.max(year_ago);
        }
    }
    (latest, missed)
}

/// Decides for `cj`, given the Jobs it controls.
pub fn plan(cj: &CronJob, jobs: &[&Job], now: Timestamp) -> Result<CronPlan, String> {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let spec = cj.spec.clone();
    let old = cj.status.clone().unwrap_or_default();
    let mut out = CronPlan::default();

    let live: Vec<&Job> = jobs.iter().copied().filter(|j| j.metadata.deletion_timestamp.is_none()).collect();
    let (finished, active): (Vec<&Job>, Vec<&Job>) =
        live.iter().partition(|j| job::finished_time(j).is_some());
    let was_active: Vec<&str> = old.active.iter().flatten().filter_map(|r| r.name.as_deref()).collect();
    for j in finished.iter().filter(|j| was_active.contains(&name(j).as_str())) {
        let result = if succeeded(j) { "Complete" } else { "Failed" };
        out.notes.push(note(
            false,
            "SawCompletedJob",
            format!("Saw completed job: {}, status: {result}", name(j)),
        ));
    }
    let last_success = finished
        .iter()
        .filter(|j| succeeded(j))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .chain(old.last_successful_time.as_ref().map(|t| t.0))
        .max();

    // History: the newest finished Jobs of each outcome are kept.
    for (ok, limit) in [
        (true, spec.successful_jobs_history_limit.unwrap_or(3)),
        (false, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&&Job> = finished.iter().filter(|j| succeeded(j) == ok).collect();
        done.sort_by_key(|j| (job::finished_time(j), name(j)));
        let excess = done.len().saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        out.delete.extend(done.iter().take(excess).map(|j| name(j)));
    }

    let mut active_refs: BTreeMap<String, ObjectReference> =
        active.iter().map(|j| (name(j), reference(j))).collect();
    let mut last_schedule = old.last_schedule_time.clone();
    let finish =
        |out: &mut CronPlan, active_refs: BTreeMap<String, ObjectReference>, last_schedule: Option<Time>| {
            out.status = CronJobStatus {
                active: (!active_refs.is_empty()).then(|| active_refs.into_values().collect()),
                last_schedule_time: last_schedule,
                last_successful_time: last_success.map(Time),
            };
        };
    if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        finish(&mut out, active_refs, last_schedule);
        return Ok(out);
    }

    let schedule = Schedule::parse(&spec.schedule)?;
    let zone = zone(cj)?;
    out.next_check = schedule.next_after(now, &zone);
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut since = last_schedule.as_ref().map_or(created, |t| t.0);
    if let Some(deadline) = spec.starting_deadline_seconds {
        since = since.max(now.checked_sub(SignedDuration::from_secs(deadline)).unwrap_or(since));
    }
    let (latest, missed) = latest_unmet(&schedule, &zone, since, now);
    let Some(scheduled) = latest else {
        finish(&mut out, active_refs, last_schedule);
        return Ok(out);
    };
    if missed > TOO_MANY_MISSED {
        out.notes.push(note(
            true,
            "TooManyMissedTimes",
            format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
        ));
    }
    let job_name = format!(
        "{}-{}",
        cj.metadata.name.as_deref().unwrap_or_default(),
        scheduled.as_second().div_euclid(60)
    );
    if jobs.iter().any(|j| name(j) == job_name) {
        // Started already (the status write after it was lost).
        last_schedule = Some(Time(scheduled));
        finish(&mut out, active_refs, last_schedule);
        return Ok(out);
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active_refs.is_empty() => {
            out.notes.push(note(
                false,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            finish(&mut out, active_refs, last_schedule);
            return Ok(out);
        }
        "Replace" => {
            out.delete.extend(std::mem::take(&mut active_refs).into_keys());
        }
        _ => {}
    }
    let template = spec.job_template;
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_ANNOTATION.into(),
        scheduled.to_zoned(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
    );
    out.create = Some(Job {
        metadata: ObjectMeta {
            name: Some(job_name.clone()),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner::controller_ref("batch/v1", "CronJob", &cj.metadata)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    });
    out.notes.push(note(false, "SuccessfulCreate", format!("Created job {job_name}")));
    last_schedule = Some(Time(scheduled));
    finish(&mut out, active_refs, last_schedule);
    Ok(out)
}
