//! The Job controller's decision, as a pure function of the Job, its pods and the time.
//!
//! Finished pods are counted the way kube-controller-manager counts them, so no pod is counted
//! twice or lost when pods are deleted: every pod is created with the
//! [`TRACKING_FINALIZER`]; a pod seen finished is first recorded by uid in
//! `status.uncountedTerminatedPods`, then its finalizer is removed, and once the pod no longer
//! holds the finalizer (or is gone) its uid moves into `succeeded`/`failed`. Each step is a
//! separate write and each plan starts from what is stored, so a crash between steps is
//! harmless. A pod being deleted before it succeeded counts as failed (it is replaced at once).
//!
//! The terminal conditions come in two steps as upstream's do: `SuccessCriteriaMet` or
//! `FailureTarget` when the outcome is decided (remaining pods are then deleted), `Complete` or
//! `Failed` once every pod is finished and counted. `kubectl wait --for=condition=complete`
//! waits for the latter.

use std::collections::{BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods},
        core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use crate::controllers::workloads::{owner, pods};

/// On every pod a Job creates until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// An Indexed Job's pod's completion index (annotation and label).
pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The label Jobs select their pods by, with the Job's uid.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label naming a pod's Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The most pods one plan creates or deletes (upstream's burst); the rest come in the next plans.
const BURST: usize = crate::controllers::workloads::BURST_REPLICAS as usize;
/// The delay before a failed pod's replacement, doubled for every further failure …
const BACKOFF_BASE_S: i64 = 10;
/// … up to this.
const BACKOFF_MAX_S: i64 = 360;

/// Something worth an event on the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// What one Job should do now. Apply in field order: write `status` (it records newly finished
/// pods as uncounted) before removing finalizers, then delete, then create.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobPlan {
    pub status: JobStatus,
    /// Pods (by name) whose [`TRACKING_FINALIZER`] to remove: they are recorded in `status`.
    pub unfinalize: Vec<String>,
    /// Active pods to delete (too many, or the Job is finished or suspended).
    pub delete: Vec<String>,
    /// Whether the pods in `delete` count as failed: only when the Job has failed (its deadline
    /// or back-off limit). Otherwise (suspend, fewer wanted, success) the caller releases their
    /// tracking finalizer before deleting them, so they are never counted, as upstream does.
    pub count_deleted: bool,
    /// Pods to create, each from [`pod_for`]: `Some(index)` for an Indexed Job.
    pub create: Vec<Option<i32>>,
    pub notes: Vec<Note>,
    /// The Job finished longer ago than `ttlSecondsAfterFinished`: delete it.
    pub expired: bool,
    /// When time alone changes the plan (a deadline, a back-off, a TTL): plan again then.
    pub next_check: Option<Timestamp>,
    /// The latest pod failure known (for the caller to remember: failed pods can vanish).
    pub last_failure: Option<Timestamp>,
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// `Some(true)` succeeded, `Some(false)` failed (or deleted before it succeeded), `None` active.
pub fn outcome(pod: &Pod) -> Option<bool> {
    match phase(pod) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if pod.metadata.deletion_timestamp.is_some() => Some(false),
        _ => None,
    }
}

pub fn has_tracking_finalizer(meta: &ObjectMeta) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER)
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(INDEX_ANNOTATION)?.parse().ok()
}

/// When a finished pod finished, as upstream reads it: its Ready condition turning False, else
/// its containers' latest `finishedAt`, else when it was deleted.
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_ref()).into_iter().flatten();
    let unready = conditions
        .filter(|c| c.type_ == "Ready" && c.status == "False")
        .find_map(|c| c.last_transition_time.as_ref());
    let containers = status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten();
    let terminated =
        containers.filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0));
    // A deletion timestamp lies a grace period after the deletion itself.
    let deleted = pod.metadata.deletion_timestamp.as_ref().map(|t| {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
        t.0.checked_sub(SignedDuration::from_secs(grace)).unwrap_or(t.0)
    });
    unready.map(|t| t.0).or_else(|| terminated.max()).or(deleted)
}

/// `"0-2,4"` for {0, 1, 2, 4}: how `status.completedIndexes` is written.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in set {
        run = match run {
            Some((a, b)) if b + 1 == i => Some((a, i)),
            Some((a, b)) => {
                out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    out.join(",")
}

/// The set `status.completedIndexes` names (unreadable parts are skipped).
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

fn condition(conditions: &[JobCondition], type_: &str) -> Option<JobCondition> {
    conditions.iter().find(|c| c.type_ == type_ && c.status == "True").cloned()
}

fn new_condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets `type_` to True (if it is not already), replacing an earlier False entry.
fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    if condition(conditions, type_).is_none() {
        conditions.retain(|c| c.type_ != type_);
        conditions.push(new_condition(type_, reason, message, now));
    }
}

/// When a finished Job finished (its Complete or Failed condition), if it has.
pub fn finished_time(job: &Job) -> Option<Timestamp> {
    finished_at_of(job.status.as_ref()?.conditions.as_deref()?)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn non_zero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// How the pods stand, after moving counted uids out of `uncountedTerminatedPods`.
struct Tally<'a> {
    succeeded: i32,
    failed: i32,
    uncounted_succeeded: Vec<String>,
    uncounted_failed: Vec<String>,
    completed: BTreeSet<i32>,
    active: Vec<&'a Pod>,
    unfinalize: Vec<String>,
    /// Pods still holding the finalizer (recorded or not).
    tracked: usize,
}

fn tally<'a>(job: &Job, pods: &[&'a Pod]) -> Tally<'a> {
    let status = job.status.clone().unwrap_or_default();
    let uncounted = status.uncounted_terminated_pods.unwrap_or_default();
    let by_uid: HashMap<&str, &Pod> =
        pods.iter().filter_map(|p| Some((p.metadata.uid.as_deref()?, *p))).collect();
    let still_held =
        |uid: &String| by_uid.get(uid.as_str()).is_some_and(|p| has_tracking_finalizer(&p.metadata));
    let mut t = Tally {
        succeeded: status.succeeded.unwrap_or(0),
        failed: status.failed.unwrap_or(0),
        uncounted_succeeded: Vec::new(),
        uncounted_failed: Vec::new(),
        completed: parse_indexes(status.completed_indexes.as_deref().unwrap_or("")),
        active: Vec::new(),
        unfinalize: Vec::new(),
        tracked: 0,
    };
    for uid in uncounted.succeeded.unwrap_or_default() {
        if still_held(&uid) { t.uncounted_succeeded.push(uid) } else { t.succeeded += 1 }
    }
    for uid in uncounted.failed.unwrap_or_default() {
        if still_held(&uid) { t.uncounted_failed.push(uid) } else { t.failed += 1 }
    }
    for pod in pods {
        let outcome = outcome(pod);
        if outcome.is_none() {
            t.active.push(pod);
        }
        if !has_tracking_finalizer(&pod.metadata) {
            continue;
        }
        t.tracked += 1;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let recorded = t.uncounted_succeeded.contains(&uid) || t.uncounted_failed.contains(&uid);
        match outcome {
            _ if recorded => t.unfinalize.push(name),
            Some(true) => {
                t.completed.extend(index_of(pod));
                t.uncounted_succeeded.push(uid);
                t.unfinalize.push(name);
            }
            Some(false) => {
                t.uncounted_failed.push(uid);
                t.unfinalize.push(name);
            }
            None => {}
        }
    }
    t
}

/// Decides for `job`, given the pods it controls and the latest failure of one of them that the
/// caller remembers.
pub fn plan(job: &Job, pods: &[&Pod], remembered_failure: Option<Timestamp>, now: Timestamp) -> JobPlan {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let t = tally(job, pods);
    // A time ahead of ours (another machine's clock) counts as now, so skew cannot stall a Job.
    let last_failure = pods
        .iter()
        .filter(|p| outcome(p) == Some(false))
        .filter_map(|p| finished_at(p))
        .max()
        .map(|t| t.min(now));
    let mut out = JobPlan {
        unfinalize: t.unfinalize.clone(),
        last_failure: last_failure.max(remembered_failure),
        ..JobPlan::default()
    };
    let mut conditions = old.conditions.clone().unwrap_or_default();

    let succeeded_total = if indexed {
        count(t.completed.len())
    } else {
        t.succeeded.saturating_add(count(t.uncounted_succeeded.len()))
    };
    let failed_total = t.failed.saturating_add(count(t.uncounted_failed.len()));
    let restarts: i32 =
        if spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure") {
            let statuses = t.active.iter().filter_map(|p| p.status.as_ref()?.container_statuses.as_ref());
            statuses.flatten().map(|c| c.restart_count).sum()
        } else {
            0
        };
    let finished = condition(&conditions, "Complete").is_some() || condition(&conditions, "Failed").is_some();
    let suspended = spec.suspend == Some(true);
    let mut start_time = old.start_time.clone();

    // Decide the outcome: once decided (an interim condition is stored) it stays decided.
    let mut failure = condition(&conditions, "FailureTarget")
        .map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default()));
    let mut success = condition(&conditions, "SuccessCriteriaMet").is_some();
    if !finished && failure.is_none() && !success {
        let deadline = spec
            .active_deadline_seconds
            .zip(start_time.as_ref())
            .map(|(s, t)| t.0.checked_add(SignedDuration::from_secs(s)).unwrap_or(Timestamp::MAX));
        if failed_total.saturating_add(restarts) > spec.backoff_limit.unwrap_or(6) {
            failure =
                Some(("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into()));
        } else if let Some(deadline) = deadline.filter(|_| !suspended) {
            if now >= deadline {
                failure =
                    Some(("DeadlineExceeded".into(), "Job was active longer than specified deadline".into()));
            } else {
                out.next_check = Some(deadline);
            }
        }
        success = failure.is_none()
            && match (indexed, spec.completions) {
                (_, Some(c)) => succeeded_total >= c,
                (_, None) => succeeded_total > 0 && t.active.is_empty(),
            };
    }

    let everything_counted = t.active.is_empty()
        && t.tracked == 0
        && t.uncounted_succeeded.is_empty()
        && t.uncounted_failed.is_empty();
    let active_names =
        |pods: &[&Pod]| pods.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
    let mut completion_time = old.completion_time.clone();
    if finished {
        out.delete = active_names(&t.active);
    } else if let Some((reason, message)) = &failure {
        set_condition(&mut conditions, "FailureTarget", reason, message, now);
        out.delete = active_names(&t.active);
        out.count_deleted = true;
        if everything_counted {
            set_condition(&mut conditions, "Failed", reason, message, now);
            out.notes.push(Note { warning: true, reason: reason.clone(), message: message.clone() });
        }
    } else if success {
        let message = "Reached expected number of succeeded pods";
        set_condition(&mut conditions, "SuccessCriteriaMet", "CompletionsReached", message, now);
        out.delete = active_names(&t.active);
        if everything_counted {
            set_condition(&mut conditions, "Complete", "CompletionsReached", message, now);
            completion_time = Some(Time(now));
            out.notes.push(Note {
                warning: false,
                reason: "Completed".into(),
                message: "Job completed".into(),
            });
        }
    } else if suspended {
        out.delete = active_names(&t.active);
        if condition(&conditions, "Suspended").is_none() {
            set_condition(&mut conditions, "Suspended", "JobSuspended", "Job suspended", now);
            out.notes.push(Note {
                warning: false,
                reason: "Suspended".into(),
                message: "Job suspended".into(),
            });
        }
        start_time = None;
    } else {
        if let Some(c) = conditions.iter_mut().find(|c| c.type_ == "Suspended" && c.status == "True") {
            *c = JobCondition {
                status: "False".into(),
                ..new_condition("Suspended", "JobResumed", "Job resumed", now)
            };
            out.notes.push(Note { warning: false, reason: "Resumed".into(), message: "Job resumed".into() });
            start_time = None;
        }
        if start_time.is_none() {
            start_time = Some(Time(now));
            if let Some(s) = spec.active_deadline_seconds {
                out.next_check = now.checked_add(SignedDuration::from_secs(s)).ok();
            }
        }
        let (create, delete) = if indexed {
            indexed_work(&spec, parallelism, &t)
        } else {
            let want = match spec.completions {
                Some(c) => parallelism.min(c.saturating_sub(succeeded_total)).max(0),
                // A work queue: once one pod succeeded no more start, and those running finish.
                None if succeeded_total > 0 => count(t.active.len()).min(parallelism),
                None => parallelism,
            };
            let active = count(t.active.len());
            let doomed = pods::in_deletion_order(&t.active);
            let delete = doomed.iter().take(usize::try_from(active - want).unwrap_or(0));
            let create = usize::try_from(want - active).unwrap_or(0).min(BURST + 1);
            (vec![None; create], active_names(&delete.copied().collect::<Vec<_>>()))
        };
        // A huge parallelism is worked off in bursts, so one Job cannot stall every loop.
        if create.len() > BURST || delete.len() > BURST {
            out.next_check = Some(now);
        }
        let (create, delete): (Vec<_>, Vec<_>) =
            (create.into_iter().take(BURST).collect(), delete.into_iter().take(BURST).collect());
        out.delete = delete;
        if !create.is_empty() {
            // Replacements of failed pods wait 10 s, 20 s, 40 s, … after the latest failure.
            let exponent = u32::try_from(failed_total.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
            let delay = (BACKOFF_BASE_S << exponent).min(BACKOFF_MAX_S);
            let ready_at =
                out.last_failure.and_then(|t| t.checked_add(SignedDuration::from_secs(delay)).ok());
            match ready_at.filter(|at| failed_total > 0 && *at > now) {
                Some(at) => out.next_check = pods::earliest(out.next_check, Some(at)),
                None => out.create = create,
            }
        }
    }

    if let (Some(ttl), Some(done)) = (spec.ttl_seconds_after_finished, finished_at_of(&conditions)) {
        let expires = done.checked_add(SignedDuration::from_secs(ttl.into())).unwrap_or(Timestamp::MAX);
        if now >= expires {
            out.expired = true;
        } else {
            out.next_check = pods::earliest(out.next_check, Some(expires));
        }
    }

    let terminating = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed"));
    out.status = JobStatus {
        active: non_zero(count(t.active.len())),
        ready: Some(count(t.active.iter().filter(|p| pods::is_ready(p)).count())),
        terminating: Some(count(terminating.count())),
        succeeded: non_zero(if indexed { count(t.completed.len()) } else { t.succeeded }),
        failed: non_zero(t.failed),
        start_time,
        completion_time,
        completed_indexes: indexed.then(|| format_indexes(&t.completed)).filter(|s| !s.is_empty()),
        conditions: (!conditions.is_empty()).then_some(conditions),
        uncounted_terminated_pods: Some(UncountedTerminatedPods {
            succeeded: (!t.uncounted_succeeded.is_empty()).then_some(t.uncounted_succeeded),
            failed: (!t.uncounted_failed.is_empty()).then_some(t.uncounted_failed),
        }),
        ..old
    };
    out
}

fn finished_at_of(conditions: &[JobCondition]) -> Option<Timestamp> {
    let done = condition(conditions, "Complete").or_else(|| condition(conditions, "Failed"))?;
    done.last_transition_time.map(|t| t.0)
}

/// An Indexed Job's pods to create (the lowest indexes neither completed nor running) and to
/// delete (a second pod for one index, or a pod for an index already completed).
fn indexed_work(
    spec: &k8s_openapi::api::batch::v1::JobSpec,
    parallelism: i32,
    t: &Tally<'_>,
) -> (Vec<Option<i32>>, Vec<String>) {
    let completions = spec.completions.unwrap_or(0);
    let mut running = BTreeSet::new();
    let mut delete = Vec::new();
    for pod in &t.active {
        match index_of(pod) {
            Some(i) if (0..completions).contains(&i) && !t.completed.contains(&i) && running.insert(i) => {}
            _ => delete.push(pod.metadata.name.clone().unwrap_or_default()),
        }
    }
    // One more than a burst, so the caller sees that there is more to do.
    let room = usize::try_from(parallelism.saturating_sub(count(running.len()))).unwrap_or(0).min(BURST + 1);
    let create = (0..completions)
        .filter(|i| !t.completed.contains(i) && !running.contains(i))
        .take(room)
        .map(Some)
        .collect();
    (create, delete)
}

/// A pod for `job` (with its completion index, for an Indexed Job): the template's metadata and
/// spec, a `generateName` of `<job>-` (`<job>-<index>-`), the Job as controller, and the
/// tracking finalizer. An Indexed Job's pod also gets `JOB_COMPLETION_INDEX` and a hostname.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some(match index {
                Some(i) => format!("{name}-{i}-"),
                None => format!("{name}-"),
            }),
            namespace: job.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![owner::controller_ref("batch/v1", "Job", &job.metadata)]),
            finalizers: Some(vec![TRACKING_FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    };
    if let Some(i) = index {
        pod.metadata.annotations.get_or_insert_default().insert(INDEX_ANNOTATION.into(), i.to_string());
        pod.metadata.labels.get_or_insert_default().insert(INDEX_ANNOTATION.into(), i.to_string());
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{INDEX_ANNOTATION}']"),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            };
            for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
                c.env.get_or_insert_default().push(env.clone());
            }
        }
    }
    pod
}
