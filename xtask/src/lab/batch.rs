//! A Job on the lab's real nodes (lab e2e): 4 completions, 2 at a time, on containerd through
//! the agents; it must complete, spread over the nodes, with every pod's log reachable through
//! `kubectl logs`. Removed afterwards with its pods.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{kube, up};
use crate::step::step;

const JOB: &str = "lab-batch";
const COMPLETIONS: u64 = 4;

pub fn job_completes() -> anyhow::Result<()> {
    step(&format!("a Job of {COMPLETIONS} completions, 2 at a time, completes on the nodes"), || {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": JOB, "namespace": "default"},
            "spec": {"completions": COMPLETIONS, "parallelism": 2, "backoffLimit": 2,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "work",
                    "image": up::IMAGE, "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo batch done on $(hostname)"]}]}}}});
        kube::apply(&job.to_string())?;
        up::poll("the Job to complete", Duration::from_secs(120), || {
            let job: Value = serde_json::from_str(&kube::run(&["get", "job", JOB, "-o", "json"])?)?;
            let conditions = job["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let is = |t: &str| conditions.iter().any(|c| c["type"] == t && c["status"] == "True");
            if is("Failed") {
                bail!("the Job failed: {}", job["status"]);
            }
            Ok(is("Complete") && job["status"]["succeeded"].as_u64() == Some(COMPLETIONS))
        })?;
        let pods = kube::items(&["pods", "-l", &format!("batch.kubernetes.io/job-name={JOB}")])?;
        if pods.len() as u64 != COMPLETIONS || pods.iter().any(|p| p["status"]["phase"] != "Succeeded") {
            bail!("expected {COMPLETIONS} Succeeded pods, found {}", pods.len());
        }
        for p in &pods {
            let name = p["metadata"]["name"].as_str().context("pod name")?;
            let log = kube::run(&["logs", name])?;
            if !log.contains("batch done on") {
                bail!("{name} logged {log:?}");
            }
        }
        kube::run(&["delete", "job", JOB, "--wait=false"])?;
        up::poll("the Job's pods to be gone", Duration::from_secs(60), || {
            Ok(kube::items(&["pods", "-l", &format!("batch.kubernetes.io/job-name={JOB}")])?.is_empty())
        })
    })
}
