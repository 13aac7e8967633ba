//! API server benchmarks (`cargo xtask bench api`): the real `skiff-control serve` process on
//! loopback with durability on, driven through kube-rs.
//!
//! - creates/s of 10,000 pods (64 in flight),
//! - list of 10,000 pods (median of 10),
//! - watch fan-out: 100 watchers, per-event delivery latency p50/p99 over 500 updates,
//! - the server's RSS with 10,000 pods stored.

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

fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = Command::new(env!("CARGO_BIN_EXE_skiff-control"))
        .args(["serve", "--bind-address", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--pki-dir")
        .arg(dir.path().join("pki"))
        .arg("--write-kubeconfig")
        .arg(dir.path().join("admin.conf"))
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
    let rows = rt.block_on(async {
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
            let request = http::Request::get("/api/v1/namespaces/default/pods").body(Vec::new()).expect("request");
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
        let probe: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "probe"}, "data": {"t": "0"}})).expect("cm");
        let created = cms.create(&PostParams::default(), &probe).await.expect("probe");
        let rv = created.metadata.resource_version.clone().expect("rv");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        for _ in 0..WATCHERS {
            let (cms, tx, rv) = (cms.clone(), tx.clone(), rv.clone());
            tokio::spawn(async move {
                let mut s = cms.watch(&WatchParams::default().timeout(120), &rv).await.expect("watch").boxed();
                while let Ok(Some(event)) = s.try_next().await {
                    if let WatchEvent::Modified(cm) = event {
                        let sent: u128 = cm.data.and_then(|d| d.get("t").and_then(|t| t.parse().ok())).unwrap_or(0);
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
            tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("every watcher connects").expect("delivery");
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
        let rss = rss_kib(server.id());
        vec![
            format!("| creates/s, {PODS} pods, durable, {IN_FLIGHT} in flight | {creates_per_s:.0} /s | ≥ 2,000 /s |"),
            format!("| list {PODS} pods, whole response received (median of 10) | {:.1} ms | < 150 ms |", list_median.as_secs_f64() * 1e3),
            format!("| … and decoded into kube-rs `Pod`s by the client (once) | {:.1} ms | — |", typed_list.as_secs_f64() * 1e3),
            format!(
                "| watch fan-out, {WATCHERS} watchers × {UPDATES} updates ({delivered} delivered): p50 / p99 | {:.1} ms / {:.1} ms | p99 < 50 ms |",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ),
            format!("| server RSS with {PODS} pods | {} MiB | — |", rss / 1024),
        ]
    });
    let _ = server.kill();
    let _ = server.wait();
    println!("| measurement | value | goal |");
    println!("| --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
}
