//! One pod's worker: level-triggered, it compares the pod's spec with what runs and acts —
//! sandbox (network namespace, CNI, pause container), init containers one by one, then the app
//! containers, restarts with back-off — and posts the status; on deletion it stops everything
//! within the grace period and releases all of it. Its state is rebuilt from containerd's labels
//! when the agent restarts, so running pods are adopted, never duplicated.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Pod},
    jiff::Timestamp,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Ctx, probes, spec, volumes};
use crate::{
    kubelet::{cni, netns},
    runtime::{
        container::TaskState,
        oci::{self, SpecInput},
    },
};

pub const LABEL_UID: &str = "io.skiff.pod.uid";
pub const LABEL_NAME: &str = "io.skiff.pod.name";
pub const LABEL_NAMESPACE: &str = "io.skiff.pod.namespace";
pub const LABEL_CONTAINER: &str = "io.skiff.container";
pub const LABEL_KIND: &str = "io.skiff.kind";
pub const LABEL_ATTEMPT: &str = "io.skiff.attempt";
pub const LABEL_CREATED: &str = "io.skiff.created";

const KIND_SANDBOX: &str = "sandbox";
const KIND_INIT: &str = "init";
const KIND_APP: &str = "app";

/// Back-off resets after a container ran this long.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct Instance {
    id: String,
    attempt: u32,
    started_at: Timestamp,
    /// Exit code and time, once it ended.
    exit: Option<(i32, Timestamp)>,
}

#[derive(Debug, Clone, Default)]
struct Track {
    current: Option<Instance>,
    /// Probes of the current instance.
    startup: Option<probes::Prober>,
    liveness: Option<probes::Prober>,
    readiness: Option<probes::Prober>,
    /// The startup probe passed (or there is none).
    started: bool,
    /// The readiness probe passes (or there is none and the container runs).
    ready: bool,
    /// Probers made for the current instance (an adopted instance gets them on its first pass).
    probes_set: bool,
    last: Option<Instance>,
    restarts: u32,
    backoff: Duration,
    not_before: Option<Instant>,
    waiting: Option<(String, String)>,
    image: String,
    image_id: String,
}

impl Track {
    /// Waits before the next start: the base delay at first (or after a `reset`), then twice the
    /// last one, up to the maximum.
    fn back_off(&mut self, config: &super::PodConfig, reset: bool) {
        self.backoff = if reset || self.backoff.is_zero() {
            config.backoff_base
        } else {
            (self.backoff * 2).min(config.backoff_max)
        };
        self.not_before = Some(Instant::now() + self.backoff);
    }

    /// The probers of the current instance of `c`; an adopted one (`startup: false`) already
    /// started, so it gets no startup probe.
    fn set_probes(&mut self, c: &Container, startup: bool) {
        self.startup = c.startup_probe.as_ref().filter(|_| startup).map(probes::Prober::new);
        self.liveness = c.liveness_probe.as_ref().map(probes::Prober::new);
        self.readiness = c.readiness_probe.as_ref().map(probes::Prober::new);
        self.probes_set = true;
    }
}

#[derive(Debug, Default)]
pub struct PodState {
    sandbox: Option<String>,
    ip: Option<Ipv4Addr>,
    start_time: Option<Timestamp>,
    init: BTreeMap<String, Track>,
    app: BTreeMap<String, Track>,
    init_done: bool,
    /// Why the pod has no sandbox yet (shown in its status).
    sandbox_error: Option<String>,
    volumes: Option<volumes::Volumes>,
    posted: Option<Value>,
}

fn sandbox_id(uid: &str) -> String {
    format!("skiff-pod-{uid}")
}

fn netns_name(uid: &str) -> String {
    format!("skiff-{uid}")
}

/// The pod's CNI attachment as GC names the valid ones: (container id, interface).
pub(super) fn attachment_id(uid: &str) -> (String, String) {
    (sandbox_id(uid), "eth0".to_owned())
}

fn attachment(uid: &str, pod: Option<&Pod>) -> cni::Attachment {
    let meta = pod.map(|p| p.metadata.clone()).unwrap_or_default();
    let (container_id, ifname) = attachment_id(uid);
    cni::Attachment {
        container_id,
        netns: netns::path(&netns_name(uid)),
        ifname,
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), meta.namespace.unwrap_or_default()),
            ("K8S_POD_NAME".into(), meta.name.unwrap_or_default()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox_id(uid)),
            ("K8S_POD_UID".into(), uid.to_owned()),
        ],
        capabilities: json!({"portMappings": port_mappings(pod)}),
    }
}

fn port_mappings(pod: Option<&Pod>) -> Vec<Value> {
    let containers = pod.and_then(|p| p.spec.as_ref()).map(|s| s.containers.clone()).unwrap_or_default();
    containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host = p.host_port?;
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
            Some(json!({"hostPort": host, "containerPort": p.container_port, "protocol": proto}))
        })
        .collect()
}

impl PodState {
    /// Rebuilds what containerd runs for pod `uid` (after an agent restart).
    pub async fn adopt(ctx: &Ctx, uid: &str) -> Self {
        let mut st = PodState::default();
        let Ok(found) = ctx.runtime.containers(&[(LABEL_UID, uid)]).await else { return st };
        for c in found {
            let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
            match label(LABEL_KIND).as_str() {
                KIND_SANDBOX => st.sandbox = Some(c.id.clone()),
                kind @ (KIND_INIT | KIND_APP) => {
                    let attempt: u32 = label(LABEL_ATTEMPT).parse().unwrap_or(0);
                    let started_at = label(LABEL_CREATED).parse().unwrap_or_else(|_| Timestamp::now());
                    let map = if kind == KIND_INIT { &mut st.init } else { &mut st.app };
                    let track = map.entry(label(LABEL_CONTAINER)).or_default();
                    if track.current.as_ref().is_none_or(|i| i.attempt < attempt) {
                        track.current = Some(Instance { id: c.id.clone(), attempt, started_at, exit: None });
                        // It was running under the previous agent: started and ready until a
                        // probe says otherwise.
                        (track.started, track.ready, track.probes_set) = (true, true, false);
                        track.restarts = attempt;
                        track.image = c.image.clone();
                    }
                }
                _ => {}
            }
        }
        if st.sandbox.is_some() {
            st.ip = ctx.cni.cached(&attachment(uid, None)).as_ref().and_then(cni::pod_ip);
        }
        st.init_done = !st.app.is_empty();
        st
    }
}

/// The worker loop of pod `uid`.
pub async fn run(ctx: Arc<Ctx>, uid: String, mut rx: watch::Receiver<Option<Pod>>) {
    let mut st = PodState::adopt(&ctx, &uid).await;
    loop {
        let pod = rx.borrow_and_update().clone();
        match pod {
            None => {
                teardown(&ctx, &uid, None, &mut st, Duration::ZERO).await;
                return;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64;
                teardown(&ctx, &uid, Some(&pod), &mut st, Duration::from_secs(grace)).await;
                finish_deletion(&ctx, &pod, &uid).await;
                return;
            }
            Some(pod) => {
                reconcile(&ctx, &pod, &uid, &mut st).await;
                post_status(&ctx, &pod, &mut st).await;
            }
        }
        let wake = if st.app.values().all(|t| t.current.as_ref().is_some_and(|i| i.exit.is_none()))
            && st.init_done
        {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(200)
        };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

async fn reconcile(ctx: &Ctx, pod: &Pod, uid: &str, st: &mut PodState) {
    st.start_time.get_or_insert_with(Timestamp::now);
    if let Err(e) = ensure_sandbox(ctx, pod, uid, st).await {
        tracing::warn!(pod = %name(pod), "sandbox: {e}");
        ctx.events.warning(pod, "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {e}"));
        st.sandbox_error = Some(e);
        return;
    }
    // Tokens in projected volumes are replaced before they run out.
    if let Some(prepared) = st.volumes.as_mut() {
        volumes::refresh(ctx, pod, prepared).await;
    }
    let vols: &volumes::Volumes = match &mut st.volumes {
        Some(v) => v,
        unprepared @ None => match volumes::prepare(ctx, pod, uid).await {
            Ok(v) => unprepared.insert(v),
            Err(e) => {
                tracing::warn!(pod = %name(pod), "volumes: {e}");
                st.sandbox_error = Some(format!("volumes: {e}"));
                return;
            }
        },
    };
    st.sandbox_error = None;
    let Some(spec) = pod.spec.as_ref() else { return };
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    if !st.init_done {
        for c in spec.init_containers.iter().flatten() {
            let mut track = st.init.remove(&c.name).unwrap_or_default();
            refresh(ctx, &mut track).await;
            let done = track.current.as_ref().and_then(|i| i.exit).is_some_and(|(code, _)| code == 0);
            let failed_for_good =
                track.current.as_ref().and_then(|i| i.exit).is_some_and(|(code, _)| code != 0)
                    && policy == "Never";
            if !done && !failed_for_good {
                // Init containers restart on failure unless the pod never restarts.
                let target = Target { pod, uid, ip: st.ip, c, kind: KIND_INIT, volumes: vols };
                step(ctx, target, &mut track, "OnFailure").await;
            }
            st.init.insert(c.name.clone(), track);
            if !done {
                return;
            }
        }
        st.init_done = true;
    }
    for c in &spec.containers {
        let mut track = st.app.remove(&c.name).unwrap_or_default();
        refresh(ctx, &mut track).await;
        step(ctx, Target { pod, uid, ip: st.ip, c, kind: KIND_APP, volumes: vols }, &mut track, &policy)
            .await;
        probe(ctx, pod, c, st.ip, &mut track).await;
        st.app.insert(c.name.clone(), track);
    }
}

/// One container of one pod, and where it runs.
#[derive(Clone, Copy)]
struct Target<'a> {
    pod: &'a Pod,
    uid: &'a str,
    ip: Option<Ipv4Addr>,
    c: &'a Container,
    kind: &'a str,
    volumes: &'a volumes::Volumes,
}

/// Starts the container if it has never run, or restarts it after its back-off if it ended and
/// `policy` says so.
async fn step(ctx: &Ctx, target: Target<'_>, t: &mut Track, policy: &str) {
    let Target { pod, c, .. } = target;
    let attempt = match &t.current {
        None if t.not_before.is_some_and(|at| Instant::now() < at) => {
            if let Some((reason, message)) = t.waiting.as_mut().filter(|(r, _)| r == "ErrImagePull") {
                *reason = "ImagePullBackOff".into();
                *message =
                    format!("Back-off pulling image {:?}: {message}", c.image.as_deref().unwrap_or(""));
            }
            return;
        }
        None => 0,
        Some(Instance { exit: None, .. }) => return,
        Some(previous @ Instance { exit: Some((code, _)), .. }) => {
            let restart = policy == "Always" || (policy == "OnFailure" && *code != 0);
            if !restart {
                return;
            }
            let previous = previous.clone();
            if t.not_before.is_none() {
                // Back-off: 10 s doubling to 5 min, reset after 10 minutes of running.
                let ran =
                    previous.exit.map(|(_, at)| at.duration_since(previous.started_at)).unwrap_or_default();
                t.back_off(&ctx.config, ran.unsigned_abs() >= BACKOFF_RESET);
                t.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!("back-off {:?} restarting failed container {}", t.backoff, c.name),
                ));
                ctx.events.warning(
                    pod,
                    "BackOff",
                    format!("Back-off restarting failed container {}", c.name),
                );
            }
            if t.not_before.is_some_and(|at| Instant::now() < at) {
                return;
            }
            if let Err(e) = ctx.runtime.remove(&previous.id).await {
                tracing::warn!(container = %previous.id, "removing the previous instance: {e}");
                return;
            }
            t.last = Some(previous.clone());
            t.current = None;
            t.restarts += 1;
            t.not_before = None;
            previous.attempt + 1
        }
    };
    match start(ctx, target, attempt).await {
        Ok((instance, image_id)) => {
            t.current = Some(instance);
            t.set_probes(c, true);
            t.started = t.startup.is_none();
            t.ready = t.readiness.is_none();
            t.waiting = None;
            t.image = c.image.clone().unwrap_or_default();
            t.image_id = image_id;
        }
        Err((reason, message)) => {
            tracing::warn!(pod = %name(pod), container = %c.name, "{reason}: {message}");
            ctx.events.warning(pod, "Failed", format!("Error: {reason}: {message}"));
            t.back_off(&ctx.config, false);
            t.waiting = Some((reason, message));
        }
    }
}

fn name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Runs the container's due probes: a failed startup or liveness probe stops the container
/// (its restart policy decides what follows), readiness sets whether it is ready.
async fn probe(ctx: &Ctx, pod: &Pod, c: &Container, ip: Option<Ipv4Addr>, t: &mut Track) {
    let Some(instance) = t.current.clone().filter(|i| i.exit.is_none()) else {
        t.ready = false;
        return;
    };
    if !t.probes_set {
        t.set_probes(c, false);
    }
    let netns = ctx.config.node_netns.clone();
    let mut kill = None;
    if !t.started {
        if let Some(p) = t.startup.as_mut().filter(|p| p.due()) {
            let outcome = probes::run(p, c, ip, &instance.id, &ctx.runtime, netns.clone()).await;
            match p.record(outcome) {
                Some(true) => t.started = true,
                Some(false) => {
                    kill =
                        Some(format!("startup probe failed: {}", p.last_failure.clone().unwrap_or_default()))
                }
                None => {}
            }
        }
    } else {
        if let Some(p) = t.liveness.as_mut().filter(|p| p.due())
            && p.record(probes::run(p, c, ip, &instance.id, &ctx.runtime, netns.clone()).await) == Some(false)
        {
            kill = Some(format!("liveness probe failed: {}", p.last_failure.clone().unwrap_or_default()));
        }
        if let Some(p) = t.readiness.as_mut().filter(|p| p.due())
            && let Some(verdict) = p.record(probes::run(p, c, ip, &instance.id, &ctx.runtime, netns).await)
        {
            t.ready = verdict;
            if !verdict {
                let why = p.last_failure.clone().unwrap_or_default();
                ctx.events.warning(pod, "Unhealthy", format!("Readiness probe failed: {why}"));
            }
        }
    }
    if let Some(why) = kill {
        tracing::info!(pod = %name(pod), container = %c.name, "{why}; restarting it");
        ctx.events.warning(pod, "Unhealthy", why.clone());
        ctx.events.normal(pod, "Killing", format!("Container {} failed a probe, will be restarted", c.name));
        let grace =
            pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).max(0) as u64;
        let signal = nix::sys::signal::Signal::SIGTERM as u32;
        match ctx.runtime.stop(&instance.id, signal, Duration::from_secs(grace)).await {
            Ok(exit) => {
                if let Some(current) = t.current.as_mut() {
                    current.exit = Some((exit.map_or(137, |e| e.code as i32), Timestamp::now()));
                }
                t.ready = false;
            }
            Err(e) => tracing::warn!(container = %instance.id, "stopping after a failed probe: {e}"),
        }
    }
}

/// Notices a container's exit.
async fn refresh(ctx: &Ctx, t: &mut Track) {
    let Some(instance) = t.current.as_mut() else { return };
    if instance.exit.is_some() {
        return;
    }
    match ctx.runtime.task(&instance.id).await {
        Ok(Some((TaskState::Stopped { exit_code }, _))) => {
            instance.exit = Some((exit_code as i32, Timestamp::now()))
        }
        // The task is gone (the node rebooted, someone removed it): it ended, how is unknown.
        Ok(None) => instance.exit = Some((255, Timestamp::now())),
        _ => {}
    }
}

/// Creates and starts attempt `attempt` of the container; on failure a waiting reason.
async fn start(ctx: &Ctx, target: Target<'_>, attempt: u32) -> Result<(Instance, String), (String, String)> {
    let Target { pod, uid, ip, c, kind, volumes: vols } = target;
    let image = image_for(ctx, pod, c).await?;
    let id = format!("{}-{}-{attempt}", &uid[..uid.len().min(8)], c.name);
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let config_error = |e: String| ("CreateContainerConfigError".to_owned(), e);
    let (from, resolved) = volumes::env_sources(ctx, pod, c, ip).await.map_err(config_error)?;
    let mounts = volumes::mounts(c, vols).map_err(config_error)?;
    let mut extra = BTreeMap::new();
    extra.insert("HOSTNAME".to_owned(), pod_name.clone());
    extra.extend(from);
    let netns_path = netns::path(&netns_name(uid));
    let spec = oci::spec(&SpecInput {
        args: spec::argv(c, &image.config),
        env: spec::env(c, &image.config, &extra, &resolved),
        cwd: c
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| image.config.working_dir.clone()),
        uid: 0,
        gid: 0,
        hostname: &pod_name,
        netns: &netns_path,
        cgroups_path: format!("{}/{id}", ctx.config.pod_cgroup(uid)),
        mounts,
        limits: spec::limits(c),
    });
    let created = Timestamp::now();
    let labels = labels(
        pod,
        uid,
        kind,
        [
            (LABEL_CONTAINER, c.name.clone()),
            (LABEL_ATTEMPT, attempt.to_string()),
            (LABEL_CREATED, created.to_string()),
        ],
    );
    // A leftover of the same attempt (an agent killed between create and start) goes first.
    let _ = ctx.runtime.remove(&id).await;
    let log = ctx.config.log_path(uid, &c.name, attempt);
    let result = async {
        ctx.runtime
            .create_container(&id, &image, &spec, labels)
            .await
            .map_err(|e| ("CreateContainerError", e))?;
        ctx.events.normal(pod, "Created", format!("Created container {}", c.name));
        let pid = ctx.runtime.start(&id, &log).await.map_err(|e| ("RunContainerError", e))?;
        ctx.events.normal(pod, "Started", format!("Started container {}", c.name));
        Ok(pid)
    }
    .await;
    if let Err((reason, e)) = result {
        let _ = ctx.runtime.remove(&id).await;
        return Err((reason.into(), e.to_string()));
    }
    Ok((Instance { id, attempt, started_at: created, exit: None }, image.id))
}

/// The labels of a `kind` container of pod `uid`: the pod's identity, the kind, and `more`.
fn labels(
    pod: &Pod,
    uid: &str,
    kind: &str,
    more: impl IntoIterator<Item = (&'static str, String)>,
) -> HashMap<String, String> {
    [
        (LABEL_UID, uid.to_owned()),
        (LABEL_NAME, pod.metadata.name.clone().unwrap_or_default()),
        (LABEL_NAMESPACE, pod.metadata.namespace.clone().unwrap_or_default()),
        (LABEL_KIND, kind.to_owned()),
    ]
    .into_iter()
    .chain(more)
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The container's image, pulled as its `imagePullPolicy` says (Always: every start;
/// IfNotPresent: when missing; Never: never).
async fn image_for(
    ctx: &Ctx,
    pod: &Pod,
    c: &Container,
) -> Result<crate::runtime::image::LocalImage, (String, String)> {
    let name = c.image.clone().unwrap_or_default();
    let pull_error = |e: String| ("ErrImagePull".to_owned(), e);
    let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
    let local = ctx.runtime.resolve(&name).await.map_err(|e| pull_error(e.to_string()))?;
    match (policy, local) {
        ("Never", None) => Err((
            "ErrImageNeverPull".into(),
            format!("image {name} is not on this node and its pull policy is Never"),
        )),
        ("Always", _) | (_, None) => {
            ctx.events.normal(pod, "Pulling", format!("Pulling image {name:?}"));
            let started = std::time::Instant::now();
            ctx.runtime.pull(&name, &ctx.config.pull).await.map_err(|e| pull_error(e.to_string()))?;
            ctx.events.normal(
                pod,
                "Pulled",
                format!("Successfully pulled image {name:?} in {:?}", started.elapsed()),
            );
            ctx.runtime
                .resolve(&name)
                .await
                .map_err(|e| pull_error(e.to_string()))?
                .ok_or_else(|| pull_error(format!("{name} vanished after its pull")))
        }
        (_, Some(image)) => {
            ctx.events.normal(pod, "Pulled", format!("Container image {name:?} already present on machine"));
            Ok(image)
        }
    }
}

/// Network namespace, CNI ADD and the pause container, unless already there.
async fn ensure_sandbox(ctx: &Ctx, pod: &Pod, uid: &str, st: &mut PodState) -> Result<(), String> {
    if st.sandbox.is_some() && st.ip.is_some() {
        return Ok(());
    }
    let ns = netns_name(uid);
    let ns_path = tokio::task::spawn_blocking(move || netns::create(&ns))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("creating the network namespace: {e}"))?;
    let att = attachment(uid, Some(pod));
    let result = match ctx.cni.add(&att).await {
        Ok(r) => r,
        Err(e) => return Err(format!("CNI ADD: {e}")),
    };
    st.ip = cni::pod_ip(&result);
    if st.sandbox.is_none() {
        let image =
            ctx.runtime.resolve(&ctx.config.sandbox_image).await.map_err(|e| e.to_string())?.ok_or_else(
                || format!("the sandbox image {} is not on this node", ctx.config.sandbox_image),
            )?;
        let id = sandbox_id(uid);
        let spec = oci::spec(&SpecInput {
            args: vec!["sleep".into(), "2147483647".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            hostname: pod.metadata.name.as_deref().unwrap_or("pod"),
            netns: &ns_path,
            cgroups_path: format!("{}/{id}", ctx.config.pod_cgroup(uid)),
            mounts: vec![],
            limits: oci::Limits::default(),
        });
        let labels = labels(pod, uid, KIND_SANDBOX, []);
        let _ = ctx.runtime.remove(&id).await;
        ctx.runtime.create_container(&id, &image, &spec, labels).await.map_err(|e| e.to_string())?;
        let log = ctx.config.pod_dir(uid).join("sandbox.log");
        if let Err(e) = ctx.runtime.start(&id, &log).await {
            let _ = ctx.runtime.remove(&id).await;
            return Err(e.to_string());
        }
        st.sandbox = Some(id);
    }
    Ok(())
}

/// Stops every container within `grace` (SIGTERM or the image's stop signal, then SIGKILL),
/// then releases containers, the sandbox, the CNI attachment, the namespace, the cgroups and the
/// pod's directory. Each step tolerates what is already gone.
async fn teardown(ctx: &Ctx, uid: &str, pod: Option<&Pod>, st: &mut PodState, grace: Duration) {
    // Every container containerd has for this pod (its labels say which spec entry it runs).
    let mut found: Vec<(String, String, String)> = Vec::new();
    if let Ok(all) = ctx.runtime.containers(&[(LABEL_UID, uid)]).await {
        for c in all {
            if c.labels.get(LABEL_KIND).map(String::as_str) != Some(KIND_SANDBOX) {
                found.push((
                    c.id.clone(),
                    c.labels.get(LABEL_CONTAINER).cloned().unwrap_or_default(),
                    c.image.clone(),
                ));
            }
        }
    }
    for t in st.app.values().chain(st.init.values()) {
        for i in t.current.iter().chain(t.last.iter()) {
            if !found.iter().any(|(id, _, _)| *id == i.id) {
                found.push((i.id.clone(), String::new(), String::new()));
            }
        }
    }
    let ip = st.ip;
    let stops = found.iter().map(|(id, name, image)| stop_gracefully(ctx, pod, ip, id, name, image, grace));
    futures::future::join_all(stops).await;
    let ids: Vec<String> = found.into_iter().map(|(id, _, _)| id).collect();
    for id in ids.iter().chain(std::iter::once(&sandbox_id(uid))) {
        if let Err(e) = ctx.runtime.remove(id).await {
            tracing::warn!(container = %id, "removing: {e}");
        }
    }
    // DEL always, even if ADD never succeeded (the spec's rule).
    if let Err(e) = ctx.cni.del(&attachment(uid, pod)).await {
        tracing::warn!(pod = %uid, "CNI DEL: {e}");
    }
    let ns = netns_name(uid);
    if let Err(e) = tokio::task::spawn_blocking(move || netns::delete(&ns)).await.unwrap_or(Ok(())) {
        tracing::warn!(pod = %uid, "removing the network namespace: {e}");
    }
    let _ = crate::runtime::cgroup::remove(&ctx.config.pod_cgroup(uid));
    volumes::release(ctx, uid);
    let _ = std::fs::remove_dir_all(ctx.config.pod_dir(uid));
    *st = PodState::default();
}

/// Stops one container within `grace`: its preStop hook first, then its image's stop signal
/// (SIGTERM by default), then SIGKILL when the grace period runs out.
async fn stop_gracefully(
    ctx: &Ctx,
    pod: Option<&Pod>,
    ip: Option<Ipv4Addr>,
    id: &str,
    name: &str,
    image: &str,
    grace: Duration,
) {
    let deadline = Instant::now() + grace;
    if let Some(p) = pod.filter(|_| !name.is_empty()) {
        ctx.events.normal(p, "Killing", format!("Stopping container {name}"));
    }
    let spec = pod
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).find(|c| c.name == name));
    let hook = spec.and_then(|c| c.lifecycle.as_ref()).and_then(|l| l.pre_stop.as_ref());
    if let (Some(hook), Some(c), false) = (hook, spec, grace.is_zero()) {
        if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(grace)).await;
        } else {
            let probe = k8s_openapi::api::core::v1::Probe {
                exec: hook.exec.clone(),
                http_get: hook.http_get.clone(),
                tcp_socket: hook.tcp_socket.clone(),
                timeout_seconds: Some(grace.as_secs().max(1) as i32),
                ..Default::default()
            };
            let prober = probes::Prober::new(&probe);
            let run = probes::run(&prober, c, ip, id, &ctx.runtime, ctx.config.node_netns.clone());
            if let Ok(probes::Outcome::Failure(why)) = tokio::time::timeout(grace, run).await {
                tracing::info!(container = %id, "preStop hook failed: {why}");
            }
        }
    }
    let signal = match ctx.runtime.resolve(image).await {
        Ok(Some(i)) if !i.config.stop_signal.is_empty() => parse_signal(&i.config.stop_signal),
        _ => None,
    }
    .unwrap_or(nix::sys::signal::Signal::SIGTERM);
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = ctx.runtime.stop(id, signal as u32, left).await {
        tracing::warn!(container = %id, "stopping: {e}");
    }
}

/// A signal as images name it: `SIGQUIT`, `QUIT` or `3`.
fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr as _;
    let text = text.trim().to_uppercase();
    if let Ok(n) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let name = if text.starts_with("SIG") { text } else { format!("SIG{text}") };
    nix::sys::signal::Signal::from_str(&name).ok()
}

/// The last step of a graceful deletion: the node says the pod is gone (grace 0).
async fn finish_deletion(ctx: &Ctx, pod: &Pod, uid: &str) {
    let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: Some(uid.to_owned()), resource_version: None }),
        ..DeleteParams::default()
    };
    if let Err(e) = api.delete(name, &params).await {
        tracing::debug!(pod = %name, "final delete: {e}");
    }
}

fn state_json(t: &Track) -> (Value, Value, bool, bool) {
    let ts = |t: &Timestamp| t.to_string();
    let terminated = |i: &Instance| {
        let (code, at) = i.exit.unwrap_or((0, Timestamp::now()));
        json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": ts(&i.started_at),
            "finishedAt": ts(&at),
            "containerID": format!("containerd://{}", i.id),
        }})
    };
    let (state, running) = match (&t.current, &t.waiting) {
        (_, Some((reason, message))) => (json!({"waiting": {"reason": reason, "message": message}}), false),
        (Some(i), None) if i.exit.is_none() => (json!({"running": {"startedAt": ts(&i.started_at)}}), true),
        (Some(i), None) => (terminated(i), false),
        (None, None) => (json!({"waiting": {"reason": "ContainerCreating"}}), false),
    };
    let last = t.last.as_ref().map_or_else(|| json!({}), terminated);
    (state, last, running, running && t.started && t.ready)
}

fn container_status(name: &str, t: &Track, spec_image: &str) -> (Value, bool, bool) {
    let (state, last, running, ready) = state_json(t);
    let mut v = json!({
        "name": name,
        "state": state,
        "lastState": last,
        "ready": ready,
        "started": running && t.started,
        "restartCount": t.restarts,
        "image": if t.image.is_empty() { spec_image } else { t.image.as_str() },
        "imageID": t.image_id,
    });
    if let Some(i) = &t.current {
        v["containerID"] = json!(format!("containerd://{}", i.id));
    }
    (v, running, ready)
}

/// Posts the pod's status if it changed.
async fn post_status(ctx: &Ctx, pod: &Pod, st: &mut PodState) {
    let Some(spec) = pod.spec.as_ref() else { return };
    let now = Timestamp::now().to_string();
    let never_ran = Track::default();
    let mut init_statuses = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        let t = st.init.get(&c.name).unwrap_or(&never_ran);
        init_statuses.push(container_status(&c.name, t, c.image.as_deref().unwrap_or("")).0);
    }
    let mut statuses = Vec::new();
    let (mut all_ready, mut any_running, mut all_done, mut any_failed) = (true, false, true, false);
    for c in &spec.containers {
        let t = st.app.get(&c.name).unwrap_or(&never_ran);
        let (status, running, ready) = container_status(&c.name, t, c.image.as_deref().unwrap_or(""));
        all_ready &= ready;
        any_running |= running;
        let exit = t.current.as_ref().and_then(|i| i.exit);
        all_done &= exit.is_some() && t.waiting.is_none();
        any_failed |= exit.is_some_and(|(code, _)| code != 0);
        statuses.push(status);
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let init_failed = policy == "Never"
        && st.init.values().any(|t| t.current.as_ref().and_then(|i| i.exit).is_some_and(|(c, _)| c != 0));
    let phase = if init_failed || (all_done && any_failed && policy != "Always") {
        "Failed"
    } else if all_done && policy != "Always" {
        "Succeeded"
    } else if any_running || (all_done && !statuses.is_empty()) {
        "Running"
    } else {
        "Pending"
    };
    let previous: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
        .unwrap_or_default();
    let condition = |kind: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|c| c["type"] == kind && c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_owned))
            .unwrap_or_else(|| now.clone());
        let mut c = json!({"type": kind, "status": status, "lastTransitionTime": since});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let ready = all_ready && !statuses.is_empty() && st.init_done;
    let mut conditions = vec![
        condition("PodReadyToStartContainers", st.sandbox.is_some() && st.ip.is_some(), None),
        condition("Initialized", st.init_done, Some("ContainersNotInitialized")),
        condition("ContainersReady", ready, Some("ContainersNotReady")),
        condition("Ready", ready, Some("ContainersNotReady")),
    ];
    if let Some(scheduled) = previous.iter().find(|c| c["type"] == "PodScheduled") {
        conditions.insert(0, scheduled.clone());
    } else {
        conditions.insert(0, condition("PodScheduled", true, None));
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": ctx.config.node_ip.to_string(),
        "hostIPs": [{"ip": ctx.config.node_ip.to_string()}],
        "startTime": st.start_time.map(|t| t.to_string()),
        "containerStatuses": statuses,
        "initContainerStatuses": init_statuses,
    });
    if let Some(ip) = st.ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    if let Some(e) = &st.sandbox_error {
        status["message"] = json!(e);
        status["reason"] = json!("SandboxFailed");
    }
    // Unchanged but for the clock: nothing to post.
    let comparable = |v: &Value| {
        let mut v = v.clone();
        if let Some(c) = v["conditions"].as_array_mut() {
            for c in c {
                c.as_object_mut().map(|o| o.remove("lastTransitionTime"));
            }
        }
        v
    };
    if st.posted.as_ref().map(comparable) == Some(comparable(&status)) {
        return;
    }
    let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
        Ok(_) => st.posted = Some(status),
        Err(e) => tracing::debug!(pod = %name, "posting status: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::parse_signal;

    #[test]
    fn stop_signals_parse_as_images_write_them() {
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("quit"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("3"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
