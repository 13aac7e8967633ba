//! API server benchmarks (`cargo xtask bench control`, also `api`): the real `skiff-control
//! serve` process on loopback with durability on, driven through kube-rs — once on the embedded
//! store and once on etcd (a private etcd on loopback), in the same run, so the two columns and
//! their ratio are comparable.
//!
//! - creates/s of 10,000 pods (64 in flight),
//! - list of 10,000 pods (median of 10),
//! - watch fan-out: 100 watchers, per-event delivery latency p50/p99 over 500 updates,
//! - the server's RSS with 10,000 pods stored.

// The tests' etcd harness; the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/etcd.rs"]
mod etcd;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{
    Api,
    api::{ListParams, PostParams, WatchEvent, WatchParams},
};
use serde_json::json;

const PODS: usize = 10_000;
const IN_FLIGHT: usize = 64;
const WATCHERS: usize = 100;
const UPDATES: usize = 500;

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": "bench", "shard": (i % 10).to_string()}},
        "spec": {"nodeName": format!("node-{}", i % 3), "containers": [{"name": "app", "image": "registry.local/app:1", "ports": [{"containerPort": 8080}]}]}
    }))
    .expect("pod")
}

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// What one backend measured.
struct Measured {
    creates_per_s: f64,
    list: Duration,
    typed_list: Duration,
    delivered: usize,
    p50: Duration,
    p99: Duration,
    rss_kib: u64,
}

fn main() {
    let embedded = measure(&[]);
    let etcd = etcd::Etcd::start();
    let on_etcd = measure(&["--etcd-servers".to_owned(), etcd.endpoint()]);
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let ratio = |a: f64, b: f64| format!("{:.2}×", b / a);
    println!("| measurement | embedded | etcd | etcd / embedded |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| creates/s, {PODS} pods, durable, {IN_FLIGHT} in flight | {:.0} /s | {:.0} /s | {} |",
        embedded.creates_per_s,
        on_etcd.creates_per_s,
        ratio(embedded.creates_per_s, on_etcd.creates_per_s)
    );
    for (what, a, b) in [
        (format!("list {PODS} pods, whole response (median of 10)"), embedded.list, on_etcd.list),
        (
            "… and decoded into kube-rs `Pod`s by the client (once)".to_owned(),
            embedded.typed_list,
            on_etcd.typed_list,
        ),
        (format!("watch delivery p50, {WATCHERS} watchers × {UPDATES} updates"), embedded.p50, on_etcd.p50),
        (
            format!("watch delivery p99 ({} / {} delivered)", embedded.delivered, on_etcd.delivered),
            embedded.p99,
            on_etcd.p99,
        ),
    ] {
        println!("| {what} | {} | {} | {} |", ms(a), ms(b), ratio(a.as_secs_f64(), b.as_secs_f64()));
    }
    println!(
        "| skiff-control RSS with {PODS} pods (etcd's own not counted) | {} MiB | {} MiB | — |",
        embedded.rss_kib / 1024,
        on_etcd.rss_kib / 1024
    );
}

/// One `serve` process with `extra` arguments (its store), measured.
fn measure(extra: &[String]) -> Measured {
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = Command::new(env!("CARGO_BIN_EXE_skiff-control"))
        .args(["serve", "--bind-address", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--pki-dir")
        .arg(dir.path().join("pki"))
        .arg("--write-kubeconfig")
        .arg(dir.path().join("admin.conf"))
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start skiff-control");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("address");
    assert!(line.starts_with("listening on "), "skiff-control said {line:?}");
    // Written before the address is printed.
    let kubeconfig = std::fs::read_to_string(dir.path().join("admin.conf")).expect("admin kubeconfig");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let measured = rt.block_on(async {
        let raw = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(raw, &Default::default()).await.expect("config");
        let client = kube::Client::try_from(config).expect("client");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

        // Creates.
        let start = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (pods, next) = (pods.clone(), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= PODS {
                            break;
                        }
                        pods.create(&PostParams::default(), &pod(i)).await.expect("create");
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("worker");
        }
        let creates_per_s = PODS as f64 / start.elapsed().as_secs_f64();

        // Lists: until the whole response is in (decoding into typed Pods is the client's cost,
        // reported separately).
        let mut lists = Vec::new();
        for _ in 0..10 {
            let request =
                http::Request::get("/api/v1/namespaces/default/pods").body(Vec::new()).expect("request");
            let t = Instant::now();
            let body = client.request_text(request).await.expect("list");
            lists.push(t.elapsed());
            assert_eq!(body.matches("\"kind\":\"Pod\"").count(), PODS);
        }
        let t = Instant::now();
        assert_eq!(pods.list(&ListParams::default()).await.expect("typed list").items.len(), PODS);
        let typed_list = t.elapsed();
        lists.sort();
        let list_median = lists[lists.len() / 2];

        // Watch fan-out: every watcher measures each update's age on arrival.
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let probe: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "probe"}, "data": {"t": "0"}})).expect("cm");
        let created = cms.create(&PostParams::default(), &probe).await.expect("probe");
        let rv = created.metadata.resource_version.clone().expect("rv");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        for _ in 0..WATCHERS {
            let (cms, tx, rv) = (cms.clone(), tx.clone(), rv.clone());
            tokio::spawn(async move {
                let mut s =
                    cms.watch(&WatchParams::default().timeout(120), &rv).await.expect("watch").boxed();
                while let Ok(Some(event)) = s.try_next().await {
                    if let WatchEvent::Modified(cm) = event {
                        let sent: u128 =
                            cm.data.and_then(|d| d.get("t").and_then(|t| t.parse().ok())).unwrap_or(0);
                        let _ = tx.send(Duration::from_micros((now_us() - sent) as u64));
                    }
                }
            });
        }
        drop(tx);
        // Warm-up update: once every watcher has seen it, all of them are connected.
        let mut current = cms.get("probe").await.expect("get");
        current.data = Some([("t".to_owned(), now_us().to_string())].into());
        current = cms.replace("probe", &PostParams::default(), &current).await.expect("warm-up");
        for _ in 0..WATCHERS {
            tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("every watcher connects")
                .expect("delivery");
        }
        for _ in 0..UPDATES {
            current.data = Some([("t".to_owned(), now_us().to_string())].into());
            current = cms.replace("probe", &PostParams::default(), &current).await.expect("update");
            // Paced like a busy cluster (~500 writes/s), not a single burst.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut delays = Vec::with_capacity(WATCHERS * UPDATES);
        while delays.len() < WATCHERS * UPDATES {
            match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
                Ok(Some(d)) => delays.push(d),
                _ => break,
            }
        }
        delays.sort();
        let delivered = delays.len();
        let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
        Measured {
            creates_per_s,
            list: list_median,
            typed_list,
            delivered,
            p50,
            p99,
            rss_kib: rss_kib(server.id()),
        }
    });
    let _ = server.kill();
    let _ = server.wait();
    measured
}
