//! CronJobs on the hand-moved clock: Jobs start at their scheduled minutes (in the CronJob's time
//! zone), the concurrency policies hold, late starts respect `startingDeadlineSeconds`, history
//! is pruned, and a suspended CronJob starts nothing. Jobs finish when the test finishes their
//! pods, as their agents would report.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_control::controllers::Config;

use crate::world::{World, runtime};

fn cronjob(name: &str, schedule: &str, spec_extra: Value) -> Value {
    let mut cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedule": schedule, "timeZone": "Etc/UTC",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["date"]}]}}}}}});
    if let (Some(spec), Some(extra)) = (cj["spec"].as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    cj
}

/// Creates the CronJob with its schedule counted from the test clock's now. (The API server
/// stamps `creationTimestamp` from the wall clock, which the hand-moved clock is not.)
async fn create(w: &World, cj: Value) {
    let name = cj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    w.create(cj).await;
    let now = w.now();
    w.edit("CronJob", Some("default"), &name, true, |cj| cj["status"]["lastScheduleTime"] = json!(now)).await;
}

fn jobs(w: &World) -> Vec<Value> {
    w.list("Job", Some("default"))
        .into_iter()
        .filter(|j| j["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn finished(j: &Value) -> bool {
    let conditions = j["status"]["conditions"].as_array().cloned().unwrap_or_default();
    conditions.iter().any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

fn active(w: &World) -> Vec<String> {
    let live = jobs(w).into_iter().filter(|j| !finished(j));
    live.map(|j| j["metadata"]["name"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Moves the clock on by `seconds` with the node's agent alive (its Lease renewed), and lets
/// the loops and agents settle.
async fn tick(w: &mut World, seconds: u64) {
    w.clock.advance(Duration::from_secs(seconds));
    w.renew("n1").await;
    w.converge().await;
}

/// Ends the containers of every running pod of `job` successfully.
async fn finish_job(w: &mut World, job: &str) {
    let now = w.now();
    let pods = w.list("Pod", Some("default")).into_iter();
    let ours: Vec<Value> = pods
        .filter(|p| {
            p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == job
                && p["status"]["phase"] == "Running"
        })
        .collect();
    assert!(!ours.is_empty(), "{job} has a running pod");
    for p in ours {
        let name = p["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        w.edit("Pod", Some("default"), &name, true, |p| {
            p["status"]["phase"] = json!("Succeeded");
            p["status"]["conditions"] =
                json!([{"type": "Ready", "status": "False", "lastTransitionTime": now}]);
        })
        .await;
    }
    w.converge().await;
}

/// Minutes since the epoch of `w`'s clock plus `minutes`: the suffix of that minute's Job.
fn job_name(w: &World, cj: &str, minutes_on: i64) -> String {
    let now: jiff::Timestamp = w.now().parse().expect("time");
    format!("{cj}-{}", now.as_second() / 60 + minutes_on)
}

#[test]
fn every_minute_with_forbid_never_overlaps_and_the_held_run_starts_when_the_last_ends() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        create(&w, cronjob("tick", "* * * * *", json!({"concurrencyPolicy": "Forbid"}))).await;
        w.converge().await;
        assert!(jobs(&w).is_empty(), "nothing before the first minute");
        tick(&mut w, 60).await;
        let first = job_name(&w, "tick", 0);
        assert_eq!(active(&w), [first.as_str()]);
        let cj = w.get("CronJob", Some("default"), "tick").expect("cronjob");
        assert_eq!(cj["status"]["lastScheduleTime"], w.now());
        assert_eq!(cj["status"]["active"][0]["name"], first.as_str());

        // Two more minutes while the first still runs: nothing else starts.
        for _ in 0..2 {
            tick(&mut w, 60).await;
            assert_eq!(active(&w), [first.as_str()], "Forbid: no second run alongside");
        }
        assert!(!w.events("tick", "JobAlreadyActive").is_empty());

        // When it ends, the run held back starts (for the latest missed minute), alone.
        finish_job(&mut w, &first).await;
        let second = job_name(&w, "tick", 0);
        assert_eq!(active(&w), [second.as_str()], "the held run starts once the first ended");
        let cj = w.get("CronJob", Some("default"), "tick").expect("cronjob");
        assert!(!cj["status"]["lastSuccessfulTime"].is_null());
        assert_eq!(w.events("tick", "SawCompletedJob").len(), 1);
        assert_eq!(jobs(&w).len(), 2);
    });
}

#[test]
fn forbid_with_a_starting_deadline_skips_a_run_that_is_too_late() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        create(
            &w,
            cronjob(
                "strict",
                "*/5 * * * *",
                json!({"concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 60}),
            ),
        )
        .await;
        tick(&mut w, 300).await;
        let first = job_name(&w, "strict", 0);
        assert_eq!(active(&w), [first.as_str()]);
        // The 00:10 run is held back; the first ends at 00:11:30, 90 s after it: too late.
        tick(&mut w, 300).await;
        tick(&mut w, 90).await;
        finish_job(&mut w, &first).await;
        assert!(active(&w).is_empty(), "a run later than the deadline is skipped");
        // The 15-minute run is on time.
        tick(&mut w, 210).await;
        assert_eq!(active(&w), [job_name(&w, "strict", 0)]);
    });
}

#[test]
fn allow_overlaps_and_replace_swaps_the_running_job() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        create(&w, cronjob("many", "* * * * *", json!({}))).await;
        create(&w, cronjob("swap", "* * * * *", json!({"concurrencyPolicy": "Replace"}))).await;
        for _ in 0..3 {
            tick(&mut w, 60).await;
        }
        let of =
            |w: &World, cj: &str| active(w).into_iter().filter(|n| n.starts_with(&format!("{cj}-"))).count();
        assert_eq!(of(&w, "many"), 3, "Allow: the three runs overlap");
        assert_eq!(of(&w, "swap"), 1, "Replace: only the latest runs");
        assert_eq!(
            active(&w).iter().find(|n| n.starts_with("swap-")).cloned(),
            Some(job_name(&w, "swap", 0))
        );
        assert_eq!(w.events("swap", "SuccessfulDelete").len(), 2);
    });
}

#[test]
fn history_limits_keep_the_newest_finished_jobs_and_suspend_stops_new_runs() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        create(&w, cronjob("hist", "* * * * *", json!({"successfulJobsHistoryLimit": 2}))).await;
        let mut names = Vec::new();
        for _ in 0..4 {
            tick(&mut w, 60).await;
            let name = job_name(&w, "hist", 0);
            finish_job(&mut w, &name).await;
            names.push(name);
        }
        let mut kept: Vec<String> =
            jobs(&w).iter().map(|j| j["metadata"]["name"].as_str().unwrap_or_default().to_owned()).collect();
        kept.sort();
        assert_eq!(kept, names[2..], "the two newest successful Jobs are kept");

        w.edit("CronJob", Some("default"), "hist", false, |cj| cj["spec"]["suspend"] = json!(true)).await;
        tick(&mut w, 180).await;
        assert!(active(&w).is_empty(), "suspended: no run");
    });
}

#[test]
fn the_schedule_is_read_in_the_cronjobs_time_zone() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("n1").await;
        // 09:00 in New York is 14:00 UTC in January; the clock starts at midnight UTC.
        create(&w, cronjob("morning", "0 9 * * *", json!({"timeZone": "America/New_York"}))).await;
        tick(&mut w, 14 * 3600 - 60).await;
        assert!(jobs(&w).is_empty(), "not yet at 13:59 UTC");
        tick(&mut w, 60).await;
        let job = jobs(&w).pop().expect("the 09:00 run");
        assert_eq!(
            job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
            "2026-01-01T09:00:00-05:00"
        );
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    });
}
