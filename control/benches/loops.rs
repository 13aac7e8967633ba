//! Control loop benchmarks (`cargo xtask bench loops`): the loops' [`Manager`] running in this
//! process over an [`ApiServer`] on the durable on-disk store (fsync'd group commit), with
//! objects written through the API server's in-process paths (admission, validation, field
//! ownership) and nothing faked below them.
//!
//! - Scheduling throughput: 1,000 Ready nodes (8 cpu, 32Gi, 110 pods; every 50th tainted
//!   NoSchedule) and 10,000 pods (100m / 128Mi) of 100 workloads (label sets, so spreading has
//!   work; owner references to made-up ReplicaSet uids would not do: the garbage collector
//!   deletes pods whose owner does not exist). Once with every pod pending before the loops
//!   start (from the loops' start, their initial list included, to the last binding seen on a
//!   store watch), once with the pods created while the loops run (first create → last
//!   binding), and once more pending, with each workload a real ReplicaSet owning its pods (what
//!   a Deployment makes; the ReplicaSet loop and the garbage collector then look at every pod as
//!   well). After each run the placement is checked: every pod bound, no node over its cpu or
//!   pod count, nothing on a tainted node.
//! - Endpoint propagation: one node, a Service selecting 500 bound, Running, not Ready pods;
//!   for each pod in turn its Ready=True status is written as an agent would, and the time is
//!   taken until a store watch shows an EndpointSlice listing its address with `ready: true`.
//!
//! Everything runs on a 2-worker tokio runtime (the store's writer has its own thread), as on
//! the 2-core project machine.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use skiff_control::{
    api::{ApiServer, decode_object},
    controllers::{
        Config, Ctx, Manager,
        clock::{self, SystemClock},
    },
    store::{
        Store,
        embedded::{EmbeddedStore, Options},
    },
};

const NODES: usize = 1_000;
/// Every this many nodes, one carries a NoSchedule taint no pod tolerates.
const TAINTED_EVERY: usize = 50;
const NODE_MILLI_CPU: i64 = 8_000;
const NODE_PODS: usize = 110;
const PODS: usize = 10_000;
const WORKLOADS: usize = 100;
const POD_MILLI_CPU: i64 = 100;
const IN_FLIGHT: usize = 64;
const READY_PODS: usize = 500;
/// Pods bound per second the issue asks for on the 2-core machine.
const GOAL_PODS_PER_S: f64 = 1_000.0;
/// How long the scheduler gets to bind everything before the run counts as failed.
const BIND_DEADLINE: Duration = Duration::from_secs(300);
/// How long one endpoint may take to show up before the run counts as failed.
const ENDPOINT_DEADLINE: Duration = Duration::from_secs(10);

const PODS_PREFIX: &str = "/registry/core/pods/";
const SLICES_PREFIX: &str = "/registry/discovery.k8s.io/endpointslices/";

type Server = Arc<ApiServer<EmbeddedStore>>;

/// A fresh durable store under `dir` with the API server's bootstrap objects.
async fn open(dir: &Path) -> Server {
    std::fs::create_dir_all(dir).expect("store dir");
    let store = EmbeddedStore::open(&dir.join("store.redb"), Options::default()).expect("store");
    let server = Arc::new(ApiServer::new(store, (std::net::Ipv4Addr::new(10, 96, 0, 0), 12)));
    server.bootstrap(None).await.expect("bootstrap");
    server
}

/// Starts the loops on the wall clock: lists everything, then runs on a task of its own.
fn start_loops(server: &Server) -> tokio::task::JoinHandle<()> {
    let ctx =
        Ctx { server: server.clone(), clock: Arc::new(SystemClock), config: Arc::new(Config::default()) };
    let manager = Manager::new(ctx).expect("loops start");
    tokio::spawn(async move {
        if let Err(e) = manager.run().await {
            eprintln!("loops stopped: {e}");
        }
    })
}

/// Creates `make(0..count)` with [`IN_FLIGHT`] creates at a time.
async fn create_all(server: &Server, count: usize, make: impl Fn(usize) -> Value + Send + Sync + 'static) {
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (server, next, make) = (server.clone(), Arc::clone(&next), Arc::clone(&make));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    server.create_as(make(i), "bench").await.expect("create");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("creator");
    }
}

fn now() -> String {
    clock::format(jiff::Timestamp::now())
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

fn tainted(i: usize) -> bool {
    i.is_multiple_of(TAINTED_EVERY)
}

/// A Ready node as its agent registers it.
fn node(i: usize) -> Value {
    let (name, now) = (node_name(i), now());
    let taints = if tainted(i) {
        json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}])
    } else {
        json!([])
    };
    let resources = json!({"cpu": "8", "memory": "32Gi", "pods": NODE_PODS.to_string()});
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {"taints": taints},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "allocatable": resources, "capacity": resources}})
}

/// The node's Lease, renewed now (so the node lifecycle loop leaves it alone).
fn lease(i: usize) -> Value {
    let renewed = now().trim_end_matches('Z').to_owned() + ".000000Z";
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node_name(i), "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node_name(i), "leaseDurationSeconds": 40, "renewTime": renewed}})
}

/// A pending pod of workload `i % WORKLOADS`.
fn pending_pod(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:05}"), "namespace": "default",
            "labels": {"app": workload_name(i % WORKLOADS)}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1",
            "resources": {"requests": {"cpu": format!("{POD_MILLI_CPU}m"), "memory": "128Mi"}}}]}})
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Counts bindings (a pod version with `spec.nodeName` whose previous version had none) on a
/// store watch until `expected` are seen or the deadline passes; returns how many were seen and
/// when the last one was.
async fn count_bindings(server: Server, after: u64, expected: usize) -> (usize, Instant) {
    let mut watch = server.store.watch(PODS_PREFIX, after).expect("watch pods");
    let deadline = tokio::time::Instant::now() + BIND_DEADLINE;
    let (mut bound, mut last) = (0, Instant::now());
    while bound < expected {
        let event = match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => panic!("pod watch: {e}"),
            Ok(None) | Err(_) => break,
        };
        let has_node = |v: &[u8]| contains(v, br#""nodeName":""#);
        if has_node(&event.object.value) && event.previous.as_ref().is_some_and(|p| !has_node(&p.value)) {
            bound += 1;
            last = Instant::now();
        }
    }
    (bound, last)
}

/// A cpu quantity in millicores ("100m", "2", "0.5").
fn milli_cpu(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().expect("millicores"),
        None => (q.parse::<f64>().expect("cores") * 1000.0).ceil() as i64,
    }
}

/// What the placement looks like.
struct Placement {
    bound: usize,
    busiest: usize,
    max_same_workload: usize,
    nodes_used: usize,
}

/// Checks every pod's placement against the nodes (panics on a violation).
fn check_placement(server: &Server) -> Placement {
    let (pods, _) = server.store.list(PODS_PREFIX);
    let mut per_node: HashMap<String, (usize, i64)> = HashMap::new();
    let mut per_workload: HashMap<(String, String), usize> = HashMap::new();
    let mut bound = 0;
    for stored in &pods {
        let pod = decode_object(stored).expect("decode pod");
        let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else { continue };
        bound += 1;
        let cpu: i64 = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.pointer("/resources/requests/cpu").and_then(Value::as_str))
            .map(milli_cpu)
            .sum();
        let entry = per_node.entry(node.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += cpu;
        let workload = pod.pointer("/metadata/labels/app").and_then(Value::as_str).unwrap_or_default();
        *per_workload.entry((node.to_owned(), workload.to_owned())).or_default() += 1;
    }
    let tainted: HashSet<String> = (0..NODES).filter(|&i| tainted(i)).map(node_name).collect();
    for (node, (count, cpu)) in &per_node {
        assert!(!tainted.contains(node), "{count} pods on tainted node {node}");
        assert!(*count <= NODE_PODS, "{count} pods on {node} (allows {NODE_PODS})");
        assert!(*cpu <= NODE_MILLI_CPU, "{cpu}m cpu requested on {node} (allocatable {NODE_MILLI_CPU}m)");
    }
    Placement {
        bound,
        busiest: per_node.values().map(|(count, _)| *count).max().unwrap_or(0),
        max_same_workload: per_workload.values().copied().max().unwrap_or(0),
        nodes_used: per_node.len(),
    }
}

/// Scheduling with every pod pending before the loops start; returns (pods/s, seconds, placement).
async fn throughput_batch(dir: &Path) -> (f64, Duration, Placement) {
    let server = open(dir).await;
    create_all(&server, NODES, node).await;
    create_all(&server, NODES, lease).await;
    let t = Instant::now();
    create_all(&server, PODS, pending_pod).await;
    eprintln!("batch: created {PODS} pending pods in {:.1} s", t.elapsed().as_secs_f64());
    let counter = tokio::spawn(count_bindings(server.clone(), server.store.revision(), PODS));
    let start = Instant::now();
    let loops = start_loops(&server);
    let (bound, last) = counter.await.expect("counter");
    let took = last - start;
    loops.abort();
    let placement = check_placement(&server);
    assert_eq!(bound, PODS, "only {bound} of {PODS} pods bound within {BIND_DEADLINE:?}");
    assert_eq!(placement.bound, PODS);
    eprintln!("batch: {bound} bound in {:.2} s", took.as_secs_f64());
    (bound as f64 / took.as_secs_f64(), took, placement)
}

fn workload_name(w: usize) -> String {
    format!("workload-{w:03}")
}

/// A ReplicaSet of `PODS / WORKLOADS` replicas whose pods are [`pending_pod`]s.
fn replicaset(w: usize) -> Value {
    let pod = pending_pod(w);
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": workload_name(w), "namespace": "default"},
        "spec": {"replicas": PODS / WORKLOADS, "selector": {"matchLabels": {"app": workload_name(w)}},
            "template": {"metadata": {"labels": {"app": workload_name(w)}}, "spec": pod["spec"]}}})
}

/// Like [`throughput_batch`], with each workload a real ReplicaSet owning its pods (so the
/// garbage collector and the ReplicaSet loop have them to look at too).
async fn throughput_owned(dir: &Path) -> (f64, Duration, Placement) {
    let server = open(dir).await;
    create_all(&server, NODES, node).await;
    create_all(&server, NODES, lease).await;
    let mut uids = Vec::with_capacity(WORKLOADS);
    for w in 0..WORKLOADS {
        let stored = server.create_as(replicaset(w), "bench").await.expect("replicaset");
        let rs = decode_object(&stored).expect("decode replicaset");
        uids.push(rs["metadata"]["uid"].as_str().expect("uid").to_owned());
    }
    create_all(&server, PODS, move |i| {
        let mut pod = pending_pod(i);
        let w = i % WORKLOADS;
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": workload_name(w), "uid": uids[w], "controller": true, "blockOwnerDeletion": true}]);
        pod
    })
    .await;
    let counter = tokio::spawn(count_bindings(server.clone(), server.store.revision(), PODS));
    let start = Instant::now();
    let loops = start_loops(&server);
    let (bound, last) = counter.await.expect("counter");
    let took = last - start;
    loops.abort();
    let placement = check_placement(&server);
    assert_eq!(bound, PODS, "only {bound} of {PODS} pods bound within {BIND_DEADLINE:?}");
    assert_eq!(placement.bound, PODS);
    let (all, _) = server.store.list(PODS_PREFIX);
    assert_eq!(all.len(), PODS, "the ReplicaSets kept exactly their pods");
    eprintln!("owned: {bound} bound in {:.2} s", took.as_secs_f64());
    (bound as f64 / took.as_secs_f64(), took, placement)
}

/// Scheduling with the pods created while the loops run; returns (pods/s, seconds, creates/s,
/// placement).
async fn throughput_streaming(dir: &Path) -> (f64, Duration, f64, Placement) {
    let server = open(dir).await;
    create_all(&server, NODES, node).await;
    create_all(&server, NODES, lease).await;
    let loops = start_loops(&server);
    // The loops' start-up (1,000 nodes examined) is over before the first pod.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counter = tokio::spawn(count_bindings(server.clone(), server.store.revision(), PODS));
    let start = Instant::now();
    create_all(&server, PODS, pending_pod).await;
    let creating = start.elapsed();
    let (bound, last) = counter.await.expect("counter");
    let took = last - start;
    loops.abort();
    let placement = check_placement(&server);
    assert_eq!(bound, PODS, "only {bound} of {PODS} pods bound within {BIND_DEADLINE:?}");
    assert_eq!(placement.bound, PODS);
    eprintln!(
        "streaming: created in {:.2} s, all bound after {:.2} s",
        creating.as_secs_f64(),
        took.as_secs_f64()
    );
    (bound as f64 / took.as_secs_f64(), took, PODS as f64 / creating.as_secs_f64(), placement)
}

fn pod_ip(i: usize) -> String {
    format!("10.244.{}.{}", i / 250, i % 250 + 1)
}

/// A pod of the Service, bound to node 1, Running, not Ready.
fn web_pod(i: usize) -> Value {
    let ip = pod_ip(i);
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-{i:03}"), "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": node_name(1), "containers": [{"name": "app", "image": "registry.local/app:1",
            "ports": [{"containerPort": 8080, "name": "http"}]}]},
        "status": {"phase": "Running", "hostIP": "198.18.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}]}})
}

/// The endpoints (address, ready) the Service's slices list now.
fn listed_endpoints(server: &Server) -> Vec<(String, bool)> {
    let (slices, _) = server.store.list(&format!("{SLICES_PREFIX}default/"));
    slices
        .iter()
        .map(|s| decode_object(s).expect("decode slice"))
        .filter(|s| s.pointer("/metadata/labels/kubernetes.io~1service-name") == Some(&json!("web")))
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let ready = e.pointer("/conditions/ready").and_then(Value::as_bool).unwrap_or(false);
            (e["addresses"][0].as_str().unwrap_or_default().to_owned(), ready)
        })
        .collect()
}

/// Whether a slice event lists `ip` as ready.
fn lists_ready(value: &[u8], ip: &str) -> bool {
    let slice: Value = serde_json::from_slice(value).expect("slice");
    slice["endpoints"].as_array().into_iter().flatten().any(|e| {
        e.pointer("/conditions/ready") == Some(&json!(true))
            && e["addresses"].as_array().is_some_and(|a| a.iter().any(|x| x == ip))
    })
}

/// Per pod: (Ready write → ready endpoint on a slice watch, of which the write itself).
async fn endpoint_propagation(dir: &Path) -> Vec<(Duration, Duration)> {
    let server = open(dir).await;
    // Node 1: the first one without a taint.
    server.create_as(node(1), "bench").await.expect("node");
    server.create_as(lease(1), "bench").await.expect("lease");
    server
        .create_as(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
            "bench",
        )
        .await
        .expect("service");
    create_all(&server, READY_PODS, web_pod).await;
    let loops = start_loops(&server);
    // The first sync: every pod listed, none ready.
    let synced = Instant::now();
    loop {
        let listed = listed_endpoints(&server);
        if listed.len() == READY_PODS && listed.iter().all(|(_, ready)| !ready) {
            break;
        }
        assert!(synced.elapsed() < Duration::from_secs(60), "slices never listed the pods: {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut watch = server.store.watch(SLICES_PREFIX, server.store.revision()).expect("watch slices");
    let mut latencies = Vec::with_capacity(READY_PODS);
    for i in 0..READY_PODS {
        let key = format!("{PODS_PREFIX}default/web-{i:03}");
        let current = server.store.get(&key).expect("pod");
        let mut pod = decode_object(&current).expect("decode pod");
        pod["metadata"]["resourceVersion"] = json!(current.mod_revision.to_string());
        pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True", "lastTransitionTime": now()}]);
        let ip = pod_ip(i);
        let start = Instant::now();
        server.replace_as(pod, true, "skiff-agent").await.expect("Ready");
        let written = start.elapsed();
        loop {
            let event = tokio::time::timeout(ENDPOINT_DEADLINE, watch.next())
                .await
                .unwrap_or_else(|_| panic!("{ip} not ready on a slice after {ENDPOINT_DEADLINE:?}"))
                .expect("watch open")
                .expect("slice event");
            if lists_ready(&event.object.value, &ip) {
                break;
            }
        }
        latencies.push((start.elapsed(), written));
    }
    loops.abort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// "2 cores (AMD EPYC), 23 GiB": what the numbers were measured on.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown cpu", str::trim)
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    format!("{cores} cores ({model}), {} GiB", (mem_kib + (1 << 19)) >> 20)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "pass" } else { "**fail**" }
}

fn main() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let total = Instant::now();
    let rows = rt.block_on(async {
        let dir = tempfile::tempdir().expect("tmp");
        let (batch, batch_took, batch_placement) = throughput_batch(&dir.path().join("batch")).await;
        let (stream, stream_took, creates, stream_placement) =
            throughput_streaming(&dir.path().join("streaming")).await;
        let (owned, owned_took, owned_placement) = throughput_owned(&dir.path().join("owned")).await;
        let latencies = endpoint_propagation(&dir.path().join("endpoints")).await;
        let mut total: Vec<Duration> = latencies.iter().map(|(t, _)| *t).collect();
        let mut writes: Vec<Duration> = latencies.iter().map(|(_, w)| *w).collect();
        total.sort();
        writes.sort();
        let tainted = NODES / TAINTED_EVERY;
        let shape = |p: &Placement| format!("{} / {} / {}", p.busiest, p.max_same_workload, p.nodes_used);
        vec![
            format!(
                "| scheduling, {PODS} pending pods ({WORKLOADS} workloads by label) onto {NODES} nodes ({tainted} tainted), loops started after: loop start → last bound | {batch:.0} pods/s ({:.1} s) | ≥ 1,000 pods/s | {} |",
                batch_took.as_secs_f64(),
                verdict(batch >= GOAL_PODS_PER_S)
            ),
            format!(
                "| … the pods created while the loops run ({IN_FLIGHT} in flight, {creates:.0} creates/s): first create → last bound | {stream:.0} pods/s ({:.1} s) | ≥ 1,000 pods/s | {} |",
                stream_took.as_secs_f64(),
                verdict(stream >= GOAL_PODS_PER_S)
            ),
            format!(
                "| … pending before the loops start, each workload a ReplicaSet owning its pods (the ReplicaSet loop and the garbage collector see every pod too) | {owned:.0} pods/s ({:.1} s) | ≥ 1,000 pods/s | {} |",
                owned_took.as_secs_f64(),
                verdict(owned >= GOAL_PODS_PER_S)
            ),
            format!(
                "| placement, each run: every pod bound, none on a tainted node, none over {NODE_PODS} pods or {NODE_MILLI_CPU}m cpu; busiest node / most pods of one workload on a node / nodes used | {}; {}; {} | no violation | pass |",
                shape(&batch_placement),
                shape(&stream_placement),
                shape(&owned_placement)
            ),
            format!(
                "| endpoint propagation, pod Ready=True written → its EndpointSlice endpoint ready, {READY_PODS} pods one at a time: p50 / p99 / max | {} / {} / {} | — | — |",
                ms(percentile(&total, 0.5)),
                ms(percentile(&total, 0.99)),
                ms(total[total.len() - 1])
            ),
            format!(
                "| … of which the durable Ready status write itself: p50 / p99 | {} / {} | — | — |",
                ms(percentile(&writes, 0.5)),
                ms(percentile(&writes, 0.99))
            ),
            format!("| machine | {} | — | — |", machine()),
        ]
    });
    eprintln!("whole benchmark: {:.0} s", total.elapsed().as_secs_f64());
    println!("| measurement | value | goal | result |");
    println!("| --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
}
