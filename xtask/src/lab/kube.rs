//! The lab's API server through kubectl (installed by `cargo xtask setup`), with JSON output read
//! by serde_json: xtask stays free of the kube-rs stack.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::topology;

/// `kubectl --kubeconfig <lab kubeconfig> …` with a short request timeout.
pub fn kubectl() -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(topology::kubeconfig()).arg("--request-timeout=5s");
    cmd
}

/// Runs kubectl; its stdout, or an error carrying its stderr.
pub fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = kubectl().args(args).output().context("running kubectl")?;
    if !out.status.success() {
        bail!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl apply -f -` with `manifest` (YAML or JSON) on stdin.
pub fn apply(manifest: &str) -> anyhow::Result<()> {
    let mut child = kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running kubectl apply")?;
    child.stdin.take().context("kubectl stdin")?.write_all(manifest.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The `items` of `kubectl get <what> -o json`.
pub fn items(what: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", "json"]);
    let list: Value = serde_json::from_str(&run(&args)?).context("kubectl's JSON")?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// A Node as the lab shows it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub ready: bool,
    pub pod_cidr: Option<String>,
}

pub fn nodes() -> anyhow::Result<Vec<NodeView>> {
    Ok(items(&["nodes"])?.iter().map(node_view).collect())
}

fn node_view(node: &Value) -> NodeView {
    let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
    NodeView {
        name: node["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        ready,
        pod_cidr: node["spec"]["podCIDR"].as_str().map(str::to_owned),
    }
}

/// A Pod as the lab shows it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    pub phase: String,
    pub ip: Option<String>,
}

pub fn pods() -> anyhow::Result<Vec<PodView>> {
    Ok(items(&["pods", "--all-namespaces"])?
        .iter()
        .map(|p| PodView {
            namespace: p["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
            name: p["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            uid: p["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
            node: p["spec"]["nodeName"].as_str().map(str::to_owned),
            phase: p["status"]["phase"].as_str().unwrap_or("Pending").to_owned(),
            ip: p["status"]["podIP"].as_str().map(str::to_owned),
        })
        .collect())
}
