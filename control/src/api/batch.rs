//! Admission for batch/v1 Jobs and CronJobs: the defaults kube-apiserver fills in (a Job's
//! selector on its own uid, parallelism, backoffLimit, a CronJob's policies and history limits)
//! and the checks it makes (restart policy, counts, schedule, time zone).

use serde_json::{Value, json};

use super::admission::{default_pod_spec, set_default};
use crate::controllers::batch::{
    cron::Schedule,
    job::{CONTROLLER_UID_LABEL, JOB_NAME_LABEL},
};

/// The most completions or parallelism an Indexed Job may have.
const MAX_INDEXED: i64 = 100_000;
/// A CronJob's name leaves room for the 11-character suffix of its Jobs' names.
const MAX_CRONJOB_NAME: usize = 52;

/// The defaults of a Job's spec (also a CronJob's Job template's).
fn default_job_spec(spec: &mut Value) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec["completions"] = json!(1);
    }
    set_default(spec, "/parallelism", json!(1));
    set_default(spec, "/backoffLimit", json!(6));
    set_default(spec, "/completionMode", json!("NonIndexed"));
    set_default(spec, "/suspend", json!(false));
    set_default(spec, "/podReplacementPolicy", json!("TerminatingOrFailed"));
    if let Some(pod) = spec.pointer_mut("/template/spec") {
        default_pod_spec(pod);
    }
}

/// Fills in a Job's or CronJob's defaults.
pub fn default(kind: &str, object: &mut Value) {
    match kind {
        "Job" => {
            let (uid, name) = (object["metadata"]["uid"].clone(), object["metadata"]["name"].clone());
            let Some(spec) = object.get_mut("spec") else { return };
            default_job_spec(spec);
            // Unless the user picks the selector, a Job selects its pods by its own uid.
            if spec.get("manualSelector") != Some(&json!(true))
                && spec.get("selector").is_none_or(Value::is_null)
                && uid.is_string()
            {
                spec["selector"] = json!({"matchLabels": {CONTROLLER_UID_LABEL: uid}});
                set_default(spec, "/template/metadata/labels", json!({}));
                if let Some(labels) =
                    spec.pointer_mut("/template/metadata/labels").and_then(Value::as_object_mut)
                {
                    for (label, value) in [
                        (CONTROLLER_UID_LABEL, &uid),
                        ("controller-uid", &uid),
                        (JOB_NAME_LABEL, &name),
                        ("job-name", &name),
                    ] {
                        labels.entry(label).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        "CronJob" => {
            set_default(object, "/spec/concurrencyPolicy", json!("Allow"));
            set_default(object, "/spec/suspend", json!(false));
            set_default(object, "/spec/successfulJobsHistoryLimit", json!(3));
            set_default(object, "/spec/failedJobsHistoryLimit", json!(1));
            if let Some(spec) = object.pointer_mut("/spec/jobTemplate/spec") {
                default_job_spec(spec);
            }
        }
        _ => {}
    }
}

fn at_least(causes: &mut Vec<(String, String)>, object: &Value, pointer: &str, min: i64) {
    if let Some(n) = object.pointer(pointer).and_then(Value::as_i64)
        && n < min
    {
        let field = pointer.trim_start_matches('/').replace('/', ".");
        causes.push((field, format!("Invalid value: {n}: must be greater than or equal to {min}")));
    }
}

/// The problems with a Job spec at `at` (`/spec`, or a CronJob's `/spec/jobTemplate/spec`).
fn job_spec_causes(object: &Value, at: &str, causes: &mut Vec<(String, String)>) {
    let field = |f: &str| format!("{}.{f}", at.trim_start_matches('/').replace('/', "."));
    let Some(spec) = object.pointer(at) else {
        causes.push((at.trim_start_matches('/').replace('/', "."), "Required value".into()));
        return;
    };
    for (f, min) in [
        ("parallelism", 0),
        ("completions", 0),
        ("backoffLimit", 0),
        ("activeDeadlineSeconds", 1),
        ("ttlSecondsAfterFinished", 0),
    ] {
        at_least(causes, object, &format!("{at}/{f}"), min);
    }
    match spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str) {
        Some("Never" | "OnFailure") => {}
        other => causes.push((
            field("template.spec.restartPolicy"),
            format!(
                "Unsupported value: \"{}\": supported values: \"OnFailure\", \"Never\"",
                other.unwrap_or("")
            ),
        )),
    }
    if spec.pointer("/template/spec/containers").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        causes.push((field("template.spec.containers"), "Required value".into()));
    }
    match spec["completionMode"].as_str() {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if !spec["completions"].is_i64() {
                causes.push((field("completions"), "Required value: when completion mode is Indexed".into()));
            }
            // Upstream's bounds: an Indexed Job's indexes are tracked in its status.
            for f in ["completions", "parallelism"] {
                if let Some(n) = spec[f].as_i64().filter(|n| *n > MAX_INDEXED) {
                    causes.push((field(f), format!("Invalid value: {n}: must be less than or equal to {MAX_INDEXED} when completion mode is Indexed")));
                }
            }
        }
        Some(other) => causes.push((
            field("completionMode"),
            format!("Unsupported value: \"{other}\": supported values: \"NonIndexed\", \"Indexed\""),
        )),
    }
}

/// The problems with a Job or CronJob, as 422 causes.
pub fn causes(kind: &str, name: &str, object: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    match kind {
        "Job" => {
            job_spec_causes(object, "/spec", &mut causes);
            let selector = object.pointer("/spec/selector/matchLabels").and_then(Value::as_object);
            let labels = object.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
            match selector {
                None => causes.push(("spec.selector".into(), "Required value".into())),
                Some(sel) => {
                    if !sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
                        causes.push((
                            "spec.template.metadata.labels".into(),
                            "Invalid value: `selector` does not match template `labels`".into(),
                        ));
                    }
                }
            }
        }
        "CronJob" => {
            if name.len() > MAX_CRONJOB_NAME {
                causes.push((
                    "metadata.name".into(),
                    format!("Invalid value: \"{name}\": must be no more than {MAX_CRONJOB_NAME} characters"),
                ));
            }
            match object.pointer("/spec/schedule").and_then(Value::as_str) {
                None | Some("") => causes.push(("spec.schedule".into(), "Required value".into())),
                Some(s) => {
                    if let Err(e) = Schedule::parse(s) {
                        causes.push(("spec.schedule".into(), format!("Invalid value: \"{s}\": {e}")));
                    }
                }
            }
            if let Some(zone) = object.pointer("/spec/timeZone").and_then(Value::as_str)
                && jiff::tz::TimeZone::get(zone).is_err()
            {
                causes.push((
                    "spec.timeZone".into(),
                    format!("Invalid value: \"{zone}\": unknown time zone {zone}"),
                ));
            }
            match object.pointer("/spec/concurrencyPolicy").and_then(Value::as_str) {
                None | Some("Allow" | "Forbid" | "Replace") => {}
                Some(other) => causes.push((
                    "spec.concurrencyPolicy".into(),
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Allow\", \"Forbid\", \"Replace\""
                    ),
                )),
            }
            for f in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
                at_least(&mut causes, object, &format!("/spec/{f}"), 0);
            }
            job_spec_causes(object, "/spec/jobTemplate/spec", &mut causes);
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_selects_its_pods_by_its_uid_and_gets_upstream_defaults() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        default("Job", &mut job);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["parallelism"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(job["spec"]["selector"]["matchLabels"][CONTROLLER_UID_LABEL], "u-1");
        assert_eq!(job["spec"]["template"]["metadata"]["labels"][JOB_NAME_LABEL], "pi");
        assert!(causes("Job", "pi", &job).is_empty(), "{:?}", causes("Job", "pi", &job));
        // A work queue: parallelism without completions keeps completions unset.
        let mut queue = json!({"metadata": {"name": "q", "uid": "u-2"}, "spec": {"parallelism": 3,
            "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}});
        default("Job", &mut queue);
        assert!(queue["spec"]["completions"].is_null());
    }

    #[test]
    fn bad_jobs_and_cronjobs_get_every_cause() {
        let mut job = json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"backoffLimit": -1, "completionMode": "Indexed",
            "completions": null, "parallelism": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        default("Job", &mut job);
        let fields: Vec<String> = causes("Job", "j", &job).into_iter().map(|c| c.0).collect();
        assert_eq!(fields, ["spec.backoffLimit", "spec.template.spec.restartPolicy", "spec.completions"]);
        let mut cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "61 * * * *", "timeZone": "Mars/Olympus",
            "concurrencyPolicy": "Sometimes",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}}});
        default("CronJob", &mut cj);
        let fields: Vec<String> = causes("CronJob", "c", &cj).into_iter().map(|c| c.0).collect();
        assert_eq!(fields, ["spec.schedule", "spec.timeZone", "spec.concurrencyPolicy"]);
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    }
}
