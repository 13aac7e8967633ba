//! Pods bound to this node, run through containerd: a watch on `spec.nodeName=<node>` feeds one
//! worker per pod ([`worker`]). At start (and after every relist) pods that vanished meanwhile
//! are torn down, and CNI GC runs with the attachments still valid.

pub mod probes;
pub mod projected;
pub mod spec;
pub mod volumes;
pub mod worker;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::watch;

use super::cni::Cni;
use crate::runtime::Runtime;

/// How the node runs pods.
#[derive(Debug, Clone)]
pub struct PodConfig {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    /// Per-pod data (logs, volumes): `<root>/pods/<uid>/`.
    pub root_dir: PathBuf,
    /// The image of each pod's sandbox (pause) container.
    pub sandbox_image: String,
    /// cgroup parent of every pod (`<root>/pod<uid>/<container>`).
    pub cgroup_root: String,
    /// Restart back-off: the first delay, doubling up to the maximum.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The node's network namespace when it is not this process's (probes connect from it).
    pub node_netns: Option<PathBuf>,
    /// Registries reachable over plain HTTP.
    pub pull: crate::runtime::pull::PullOptions,
    /// Static pod manifests, run from the files themselves (API or not).
    pub static_dir: Option<PathBuf>,
}

impl PodConfig {
    pub fn new(node_name: &str, node_ip: Ipv4Addr) -> Self {
        Self {
            node_name: node_name.to_owned(),
            node_ip,
            root_dir: PathBuf::from("/var/lib/skiff"),
            sandbox_image: crate::runtime::busybox::IMAGE.to_owned(),
            cgroup_root: "/skiff".to_owned(),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            node_netns: None,
            pull: Default::default(),
            static_dir: None,
        }
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    /// The log file of attempt `attempt` of the pod's container `container`.
    pub fn log_path(&self, uid: &str, container: &str, attempt: u32) -> PathBuf {
        self.pod_dir(uid).join("logs").join(format!("{container}-{attempt}.log"))
    }

    /// The pod's cgroup (its containers' are below it).
    pub fn pod_cgroup(&self, uid: &str) -> String {
        format!("{}/pod{uid}", self.cgroup_root)
    }
}

/// What every worker shares.
pub struct Ctx {
    pub client: Client,
    /// Where the pods' events go.
    pub events: super::events::Recorder,
    pub runtime: Runtime,
    pub cni: Cni,
    pub config: PodConfig,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("runtime", &self.runtime).field("config", &self.config).finish()
    }
}

/// The static pods of the manifest directory, as the pods to run (uid `static-<hash>`).
fn static_pods(ctx: &Ctx) -> HashMap<String, Pod> {
    let Some(dir) = &ctx.config.static_dir else { return HashMap::new() };
    let node = &ctx.config.node_name;
    super::static_pods::read_manifests(dir, node)
        .into_iter()
        .filter_map(|(name, (manifest, hash))| {
            let mut pod = manifest;
            let uid = format!("static-{hash}");
            pod["metadata"]["name"] = serde_json::json!(name);
            if pod["metadata"]["namespace"].as_str().is_none() {
                pod["metadata"]["namespace"] = serde_json::json!("default");
            }
            pod["metadata"]["uid"] = serde_json::json!(uid);
            pod["metadata"]["annotations"][super::static_pods::MIRROR] = serde_json::json!(hash);
            pod["spec"]["nodeName"] = serde_json::json!(node);
            let pod: Pod = serde_json::from_value(pod).ok()?;
            Some((uid, pod))
        })
        .collect()
}

fn is_mirror(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(super::static_pods::MIRROR))
}

/// Runs the pods bound to this node until `shutdown` completes: those the API binds here, and
/// the static pods of the manifest directory (run from their files; their mirrors in the API are
/// only reports). Shutting down leaves the pods running: the next agent adopts them.
pub async fn run(ctx: Arc<Ctx>, shutdown: impl std::future::Future<Output = ()>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let stream = watcher(pods, config).default_backoff();
    let mut workers = Workers::new();
    let mut listing: Vec<Pod> = Vec::new();
    // Static pods start at once, API or not.
    let mut statics = static_pods(&ctx);
    for (uid, pod) in &statics {
        deliver(&ctx, &mut workers, uid.clone(), Some(pod.clone()));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tokio::pin!(stream, shutdown);
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick(), if ctx.config.static_dir.is_some() => {
                let now = static_pods(&ctx);
                for uid in statics.keys().filter(|u| !now.contains_key(*u)) {
                    gone(&workers, uid);
                }
                for (uid, pod) in &now {
                    if !statics.contains_key(uid) || !workers.contains_key(uid) {
                        deliver(&ctx, &mut workers, uid.clone(), Some(pod.clone()));
                    }
                }
                statics = now;
                continue;
            }
            event = stream.next() => event,
        };
        workers.retain(|_, (_, task)| !task.is_finished());
        let pod_uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        // Mirror pods report static pods; the files are what runs.
        let event =
            match event {
                Some(Ok(
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p),
                )) if is_mirror(&p) => continue,
                other => other,
            };
        match event {
            None => break,
            Some(Err(e)) => tracing::warn!("watching pods: {e}"),
            Some(Ok(watcher::Event::Init)) => listing.clear(),
            Some(Ok(watcher::Event::InitApply(pod))) => listing.push(pod),
            Some(Ok(watcher::Event::InitDone)) => {
                let mut live: HashSet<String> = listing.iter().map(pod_uid).collect();
                live.extend(statics.keys().cloned());
                // Pods that went away while nobody watched: tear down what containerd still runs.
                for uid in orphans(&ctx, &live).await {
                    deliver(&ctx, &mut workers, uid, None);
                }
                let valid: Vec<(String, String)> = live.iter().map(|u| worker::attachment_id(u)).collect();
                if let Err(e) = ctx.cni.gc(&valid).await {
                    tracing::warn!("CNI GC: {e}");
                }
                for pod in listing.drain(..) {
                    deliver(&ctx, &mut workers, pod_uid(&pod), Some(pod));
                }
                for (uid, (tx, _)) in &workers {
                    if !live.contains(uid) {
                        let _ = tx.send(None);
                    }
                }
            }
            Some(Ok(watcher::Event::Apply(pod))) => deliver(&ctx, &mut workers, pod_uid(&pod), Some(pod)),
            Some(Ok(watcher::Event::Delete(pod))) => gone(&workers, &pod_uid(&pod)),
        }
    }
    for (_, (_, task)) in workers {
        task.abort();
    }
}

/// Each pod's worker: what feeds it the pod, and its task.
type Workers = HashMap<String, (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>)>;

/// Gives pod `uid` to its worker, starting one if there is none.
fn deliver(ctx: &Arc<Ctx>, workers: &mut Workers, uid: String, pod: Option<Pod>) {
    if uid.is_empty() {
        return;
    }
    match workers.get(&uid) {
        Some((tx, _)) => {
            let _ = tx.send(pod);
        }
        None => {
            let (tx, rx) = watch::channel(pod);
            let task = tokio::spawn(worker::run(ctx.clone(), uid.clone(), rx));
            workers.insert(uid, (tx, task));
        }
    }
}

/// Tells pod `uid`'s worker, if there is one, that the pod is gone.
fn gone(workers: &Workers, uid: &str) {
    if let Some((tx, _)) = workers.get(uid) {
        let _ = tx.send(None);
    }
}

/// Pod uids containerd runs containers for that are not in `live`.
async fn orphans(ctx: &Ctx, live: &HashSet<String>) -> Vec<String> {
    let Ok(all) = ctx.runtime.containers(&[]).await else { return Vec::new() };
    unlisted(all.iter().filter_map(|c| c.labels.get(worker::LABEL_UID)), live)
}

/// The distinct pod uids among `labelled` that are not in `live`, sorted. An empty uid is no
/// pod's: tearing "its" pod down would remove the directory every pod lives under.
fn unlisted<'a>(labelled: impl Iterator<Item = &'a String>, live: &HashSet<String>) -> Vec<String> {
    let mut uids: Vec<String> = labelled.filter(|u| !u.is_empty() && !live.contains(*u)).cloned().collect();
    uids.sort();
    uids.dedup();
    uids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_distinct_unlisted_and_never_the_empty_uid() {
        let labelled: Vec<String> = ["b", "", "a", "live", "b"].map(String::from).into();
        let live = HashSet::from(["live".to_owned()]);
        assert_eq!(unlisted(labelled.iter(), &live), ["a", "b"]);
    }
}
