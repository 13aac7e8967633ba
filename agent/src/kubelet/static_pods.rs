//! Static pods: manifests in a directory on the node (the seeds' way of running control-plane
//! components). The pod manager runs them from the files themselves, with or without an API
//! server (uid `static-<hash>`); this module mirrors each to the API as a pod bound to this node,
//! named `<name>-<node>`, annotated `kubernetes.io/config.mirror` with the manifest's hash and
//! owned by the Node, where the agent reports its status. A changed manifest replaces its pod; a
//! removed manifest deletes it; a mirror deleted through the API is recreated.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const MIRROR: &str = "kubernetes.io/config.mirror";
pub const SOURCE: &str = "kubernetes.io/config.source";

/// The manifests of `dir` (YAML or JSON pods), by mirror name, with their hashes.
pub fn read_manifests(dir: &Path, node: &str) -> BTreeMap<String, (Value, String)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let parsed: Result<Value, String> = if ext == "json" {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_yaml::from_str(&text).map_err(|e| e.to_string())
        };
        let pod = match parsed {
            Ok(p) if p["kind"] == "Pod" && p["metadata"]["name"].is_string() => p,
            Ok(_) => {
                tracing::warn!(file = %path.display(), "not a Pod manifest");
                continue;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), "unreadable manifest: {e}");
                continue;
            }
        };
        let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
        let name = format!("{}-{node}", pod["metadata"]["name"].as_str().unwrap_or(""));
        out.insert(name, (pod, hash[..16].to_owned()));
    }
    out
}

/// The mirror pod of `manifest`.
fn mirror(manifest: &Value, name: &str, hash: &str, node: &Node, file_dir: &Path) -> Value {
    let mut pod = manifest.clone();
    pod["metadata"]["name"] = json!(name);
    let ns = manifest["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["annotations"][MIRROR] = json!(hash);
    pod["metadata"]["annotations"][SOURCE] = json!(format!("file:{}", file_dir.display()));
    pod["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": "Node", "name": node.metadata.name, "uid": node.metadata.uid, "controller": true,
    }]);
    pod["spec"]["nodeName"] = json!(node.metadata.name);
    pod
}

/// One pass: makes the API's mirror pods match the manifests.
pub async fn sync(client: &Client, dir: &Path, node_name: &str) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(node) = nodes.get_opt(node_name).await? else { return Ok(()) };
    let manifests = read_manifests(dir, node_name);
    let all: Api<Pod> = Api::all(client.clone());
    let existing = all.list(&ListParams::default().fields(&format!("spec.nodeName={node_name}"))).await?;
    let mut seen = HashSet::new();
    for pod in existing.items {
        let Some(hash) = pod.metadata.annotations.as_ref().and_then(|a| a.get(MIRROR)).cloned() else {
            continue;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match manifests.get(&name) {
            Some((_, want)) if *want == hash => {
                seen.insert(name);
            }
            // Changed or removed: the old pod goes (a changed one comes back at the next pass).
            _ if pod.metadata.deletion_timestamp.is_none() => {
                api.delete(&name, &DeleteParams::default()).await?;
            }
            _ => {}
        }
    }
    for (name, (manifest, hash)) in &manifests {
        if seen.contains(name) {
            continue;
        }
        let pod = mirror(manifest, name, hash, &node, dir);
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod: Pod = serde_json::from_value(pod).map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &pod).await {
            // Still there while its old version terminates: the next pass creates it.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Syncs the mirror pods every `period` until `shutdown` completes.
pub async fn run(
    client: Client,
    dir: PathBuf,
    node: String,
    period: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(e) = sync(&client, &dir, &node).await {
                    tracing::warn!(dir = %dir.display(), "static pods: {e}");
                }
            }
        }
    }
}
