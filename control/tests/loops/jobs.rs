//! Jobs: pods run to a number of completions at a given parallelism, failures counted against
//! the back-off limit with growing delays, deadlines, TTL after finishing, Indexed Jobs, and the
//! tracking finalizer that makes every finished pod count exactly once. The nodes' agents are
//! played by `World::kubelet` and by [`finish`], which ends a pod's containers.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

const FINALIZER: &str = "batch.kubernetes.io/job-tracking";

fn job(name: &str, spec_extra: Value) -> Value {
    let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "true"]}]}}}});
    if let (Some(spec), Some(extra)) = (job["spec"].as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    job
}

/// The Job's pods (by its job-name label), finished or not.
fn pods_of(w: &World, job: &str) -> Vec<Value> {
    let pods = w.list("Pod", Some("default")).into_iter();
    pods.filter(|p| p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == job).collect()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

/// Pods neither finished nor being deleted.
fn running(w: &World, job: &str) -> Vec<Value> {
    let pods = pods_of(w, job).into_iter();
    pods.filter(|p| {
        !matches!(phase(p), "Succeeded" | "Failed") && p["metadata"]["deletionTimestamp"].is_null()
    })
    .collect()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

fn status(w: &World, job: &str) -> Value {
    w.get("Job", Some("default"), job).expect("job")["status"].clone()
}

fn condition(w: &World, job: &str, type_: &str) -> Option<Value> {
    let status = status(w, job);
    let conditions = status["conditions"].as_array()?;
    conditions.iter().find(|c| c["type"] == type_ && c["status"] == "True").cloned()
}

/// What a pod's agent reports when its containers exit: `Succeeded`, or `Failed` (exit code 1).
async fn finish(w: &World, pod: &str, succeeded: bool) {
    let now = w.now();
    let (phase, code) = if succeeded { ("Succeeded", 0) } else { ("Failed", 1) };
    w.edit("Pod", Some("default"), pod, true, |p| {
        p["status"]["phase"] = json!(phase);
        p["status"]["containerStatuses"] = json!([{"name": "c", "image": "busybox", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": code, "finishedAt": now, "startedAt": now}}}]);
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "lastTransitionTime": now}]);
    })
    .await;
}

#[test]
fn five_completions_two_at_a_time_then_complete() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        w.create(job("pi", json!({"completions": 5, "parallelism": 2}))).await;
        let mut most = 0;
        for _ in 0..10 {
            w.converge().await;
            let now_running = running(&w, "pi");
            most = most.max(now_running.len());
            if now_running.is_empty() {
                break;
            }
            for p in &now_running {
                assert!(
                    p["metadata"]["finalizers"].as_array().is_some_and(|f| f.contains(&json!(FINALIZER))),
                    "a running pod carries the tracking finalizer"
                );
                finish(&w, &name(p), true).await;
            }
        }
        assert_eq!(most, 2, "never more pods at once than the parallelism");
        let done = condition(&w, "pi", "Complete").expect("Complete");
        assert_eq!(done["reason"], "CompletionsReached");
        let st = status(&w, "pi");
        assert_eq!(st["succeeded"], 5);
        assert!(st["failed"].is_null(), "{st}");
        assert!(st["completionTime"].is_string() && st["startTime"].is_string());
        assert_eq!(st["uncountedTerminatedPods"], json!({}), "everything counted");
        assert!(condition(&w, "pi", "SuccessCriteriaMet").is_some());
        let pods = pods_of(&w, "pi");
        assert_eq!(pods.len(), 5, "exactly five pods ran: {pods:?}");
        assert!(pods.iter().all(|p| p["metadata"]["finalizers"].is_null()), "finalizers released");
        assert_eq!(w.events("pi", "Completed").len(), 1);
        // A later look changes nothing: the Job is done.
        w.advance(Duration::from_secs(3600)).await;
        assert_eq!(pods_of(&w, "pi").len(), 5);
    });
}

#[test]
fn failures_back_off_and_stop_at_the_backoff_limit() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        w.create(job("flaky", json!({"backoffLimit": 2}))).await;
        // Each failure waits longer for its replacement: 10 s, then 20 s.
        for (failure, delay) in [(1, 10), (2, 20)] {
            w.converge().await;
            let pod = running(&w, "flaky").pop().expect("a pod runs");
            finish(&w, &name(&pod), false).await;
            w.converge().await;
            assert_eq!(status(&w, "flaky")["failed"], failure);
            assert!(running(&w, "flaky").is_empty(), "no replacement before the back-off");
            w.advance(Duration::from_secs(delay - 1)).await;
            assert!(running(&w, "flaky").is_empty(), "no replacement 1 s before {delay} s");
            w.advance(Duration::from_secs(1)).await;
            assert_eq!(running(&w, "flaky").len(), 1, "replaced after {delay} s");
        }
        w.converge().await;
        let pod = running(&w, "flaky").pop().expect("the third pod");
        finish(&w, &name(&pod), false).await;
        w.converge().await;
        let failed = condition(&w, "flaky", "Failed").expect("Failed");
        assert_eq!(failed["reason"], "BackoffLimitExceeded");
        assert_eq!(status(&w, "flaky")["failed"], 3);
        w.advance(Duration::from_secs(600)).await;
        assert_eq!(pods_of(&w, "flaky").len(), 3, "no pod after the limit");
        assert_eq!(w.events("flaky", "BackoffLimitExceeded").len(), 1);
    });
}

#[test]
fn the_active_deadline_fails_the_job_and_stops_its_pods() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        w.create(job("slow", json!({"activeDeadlineSeconds": 30, "parallelism": 2, "completions": 4}))).await;
        w.converge().await;
        assert_eq!(running(&w, "slow").len(), 2);
        w.advance(Duration::from_secs(29)).await;
        assert!(condition(&w, "slow", "FailureTarget").is_none());
        w.advance(Duration::from_secs(1)).await;
        assert_eq!(condition(&w, "slow", "FailureTarget").expect("decided")["reason"], "DeadlineExceeded");
        w.converge().await;
        let failed = condition(&w, "slow", "Failed").expect("Failed once the pods are gone");
        assert_eq!(failed["message"], "Job was active longer than specified deadline");
        assert!(pods_of(&w, "slow").is_empty(), "the stopped pods are gone (finalizers released)");
        assert_eq!(status(&w, "slow")["failed"], 2, "stopped pods count as failed");
    });
}

#[test]
fn a_finished_job_is_deleted_after_its_ttl_with_its_pods() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        w.create(job("once", json!({"ttlSecondsAfterFinished": 60}))).await;
        w.converge().await;
        let pod = running(&w, "once").pop().expect("pod");
        finish(&w, &name(&pod), true).await;
        w.converge().await;
        assert!(condition(&w, "once", "Complete").is_some());
        w.advance(Duration::from_secs(59)).await;
        assert!(w.get("Job", Some("default"), "once").is_some(), "kept until the TTL passes");
        w.advance(Duration::from_secs(1)).await;
        w.converge().await;
        assert!(w.get("Job", Some("default"), "once").is_none(), "deleted after 60 s");
        assert!(pods_of(&w, "once").is_empty(), "its pods with it");
    });
}

#[test]
fn an_indexed_job_runs_each_index_once_and_reruns_a_failed_index() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        w.create(job("idx", json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3}))).await;
        w.converge().await;
        let index =
            |p: &Value| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].clone();
        let mut indexes: Vec<Value> = running(&w, "idx").iter().map(index).collect();
        indexes.sort_by_key(|i| i.as_str().unwrap_or_default().to_owned());
        assert_eq!(indexes, [json!("0"), json!("1"), json!("2")]);
        for p in running(&w, "idx") {
            let i = index(&p);
            assert_eq!(p["spec"]["hostname"], format!("idx-{}", i.as_str().unwrap_or_default()));
            finish(&w, &name(&p), i != "1").await;
        }
        w.converge().await;
        assert_eq!(status(&w, "idx")["completedIndexes"], "0,2");
        w.advance(Duration::from_secs(10)).await;
        let again = running(&w, "idx");
        assert_eq!(again.iter().map(index).collect::<Vec<_>>(), [json!("1")], "only the failed index reruns");
        finish(&w, &name(&again[0]), true).await;
        w.converge().await;
        assert_eq!(status(&w, "idx")["completedIndexes"], "0-2");
        assert_eq!(status(&w, "idx")["succeeded"], 3);
        assert!(condition(&w, "idx", "Complete").is_some());
    });
}

#[test]
fn a_deleted_pod_counts_as_failed_and_is_replaced_and_a_deleted_job_lets_its_pods_go() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        w.create(job("work", json!({"completions": 2, "parallelism": 2}))).await;
        w.converge().await;
        let victim = running(&w, "work").pop().expect("pod");
        let key = format!("/registry/core/pods/default/{}", name(&victim));
        w.server.delete_key(&key, &Default::default()).await.expect("delete pod");
        w.converge().await;
        assert!(w.get("Pod", Some("default"), &name(&victim)).is_none(), "its finalizer was released");
        assert_eq!(status(&w, "work")["failed"], 1);
        assert_eq!(running(&w, "work").len(), 1, "a failure's replacement waits 10 s");
        w.advance(Duration::from_secs(10)).await;
        assert_eq!(running(&w, "work").len(), 2, "replaced");

        let key = "/registry/batch/jobs/default/work";
        w.server.delete_key(key, &Default::default()).await.expect("delete job");
        w.converge().await;
        assert!(pods_of(&w, "work").is_empty(), "the collector and the Job loop leave no pod behind");
    });
}

#[test]
fn a_suspended_job_stops_its_pods_and_resumes_with_a_fresh_start_time() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        w.create(job("later", json!({"suspend": true, "activeDeadlineSeconds": 100}))).await;
        w.converge().await;
        assert!(pods_of(&w, "later").is_empty());
        assert!(condition(&w, "later", "Suspended").is_some());
        w.advance(Duration::from_secs(500)).await;
        w.edit("Job", Some("default"), "later", false, |j| j["spec"]["suspend"] = json!(false)).await;
        w.converge().await;
        assert_eq!(running(&w, "later").len(), 1);
        assert_eq!(status(&w, "later")["startTime"], w.now(), "the deadline counts from the resume");
        assert!(condition(&w, "later", "Failed").is_none(), "the suspended time is not held against it");
        assert_eq!(w.events("later", "Resumed").len(), 1);
    });
}

#[test]
fn pods_the_job_stops_by_choice_are_not_failures() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        w.create(job("elastic", json!({"parallelism": 3, "completions": 6, "backoffLimit": 0}))).await;
        w.converge().await;
        assert_eq!(running(&w, "elastic").len(), 3);
        // Fewer at once: the extra pod is stopped, not failed (backoffLimit 0 would fail the Job).
        w.edit("Job", Some("default"), "elastic", false, |j| j["spec"]["parallelism"] = json!(2)).await;
        w.converge().await;
        assert_eq!(running(&w, "elastic").len(), 2);
        // Suspended: every pod stopped, none counted.
        w.edit("Job", Some("default"), "elastic", false, |j| j["spec"]["suspend"] = json!(true)).await;
        w.converge().await;
        assert!(running(&w, "elastic").is_empty());
        assert!(pods_of(&w, "elastic").is_empty(), "stopped pods are released and gone");
        let st = status(&w, "elastic");
        assert!(st["failed"].is_null(), "{st}");
        assert!(
            condition(&w, "elastic", "Failed").is_none()
                && condition(&w, "elastic", "FailureTarget").is_none()
        );
        w.edit("Job", Some("default"), "elastic", false, |j| j["spec"]["suspend"] = json!(false)).await;
        w.converge().await;
        assert_eq!(running(&w, "elastic").len(), 2, "resumed at the current parallelism");
    });
}

#[test]
fn a_huge_parallelism_is_worked_off_in_bursts() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.create(job("wide", json!({"parallelism": 2_000_000_000, "completions": 600}))).await;
        // One reconcile creates at most 500 pods, then the loop comes back for the rest.
        w.settle().await;
        assert_eq!(pods_of(&w, "wide").len(), 600);
    });
}
