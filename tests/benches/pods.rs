//! Pod startup latency and agent memory, with the real `skiff-agent run` process driving a
//! private containerd in a node namespace against an in-process skiff-control: 50 pods created
//! at 5 per second, each timed from create to Running (local image); then 100 pods running and
//! the agent's RSS. `cargo xtask bench pods` builds the binaries and runs this.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::NodeParts;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;
use skiff_agent::runtime::busybox;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 62, 1);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {"nodeName": "bench-node", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": busybox::IMAGE, "command": ["sleep", "3600"]}]},
    }))
    .expect("pod")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let bins = PathBuf::from(
        std::env::var("SKIFF_BIN_DIR").expect("SKIFF_BIN_DIR (cargo xtask bench pods sets it)"),
    );
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    rt.block_on(async {
        let NodeParts { ns, pins, containerd, dir, runtime, server } =
            NodeParts::start("bench-pods", NODE_IP, "10.244.40.0/24", 100_000).await;
        let conf_dir = dir.path().join("net.d");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, &server.kubeconfig).expect("kubeconfig");
        let cgroup_root = format!("/skiff-bench-{}", std::process::id());
        let mut agent = std::process::Command::new(bins.join("skiff-agent"))
            .arg("run")
            .args(["--kubeconfig", &kubeconfig.display().to_string(), "--node-name", "bench-node"])
            .args(["--node-ip", &NODE_IP.to_string(), "--pod-cidr", "10.244.40.0/24"])
            .args(["--containerd", &containerd.socket().display().to_string()])
            .args(["--root-dir", &dir.path().join("agent").display().to_string()])
            .args([
                "--cni-conf-dir",
                &conf_dir.display().to_string(),
                "--cni-bin-dir",
                &bins.display().to_string(),
            ])
            .args([
                "--node-netns",
                &ns.path().display().to_string(),
                "--pin-dir",
                &pins.path().display().to_string(),
            ])
            .args(["--cgroup-root", &cgroup_root, "--write-cni-config", "false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("skiff-agent");
        let client = Client::try_from(kube::Config::new(server.url.parse().expect("url"))).expect("client");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

        // Watch for Running, then create 50 pods at 5 per second.
        let created: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Duration)>();
        let seen = created.clone();
        let watch = tokio::spawn(async move {
            let mut stream = watcher(Api::<Pod>::namespaced(client, "default"), watcher::Config::default())
                .applied_objects()
                .boxed();
            let mut done = std::collections::HashSet::new();
            while let Some(Ok(p)) = stream.next().await {
                let name = p.metadata.name.clone().unwrap_or_default();
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if running
                    && done.insert(name.clone())
                    && let Some(at) = seen.lock().expect("lock").get(&name)
                {
                    let _ = tx.send((name, at.elapsed()));
                }
            }
        });
        let mut latencies = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        for i in 0..50 {
            tick.tick().await;
            let name = format!("p{i:03}");
            created.lock().expect("lock").insert(name.clone(), Instant::now());
            pods.create(&PostParams::default(), &pod(&name)).await.expect("create");
        }
        while latencies.len() < 50 {
            let (_, took) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
                .await
                .expect("pods running in time")
                .expect("watch");
            latencies.push(took);
        }
        latencies.sort();
        // 50 more for the memory figure.
        for i in 50..100 {
            let name = format!("p{i:03}");
            created.lock().expect("lock").insert(name.clone(), Instant::now());
            pods.create(&PostParams::default(), &pod(&name)).await.expect("create");
        }
        for _ in 50..100 {
            tokio::time::timeout(Duration::from_secs(300), rx.recv())
                .await
                .expect("100 pods running in time")
                .expect("watch");
        }
        let rss = rss_kib(agent.id());
        watch.abort();

        pods.delete_collection(&DeleteParams::default(), &Default::default()).await.expect("delete");
        let torn_down = common::poll(Duration::from_secs(300), Duration::from_millis(200), || async {
            runtime.containers(&[]).await.expect("containers").is_empty().then_some(())
        })
        .await;
        assert!(torn_down.is_some(), "pods not torn down in time");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = agent.wait();
        let _ = skiff_agent::runtime::cgroup::remove(&cgroup_root);

        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        println!("| measurement | value | goal |");
        println!("| --- | --- | --- |");
        println!(
            "| pod startup, create → Running, 50 pods at 5/s: p50 | {} | — |",
            ms(percentile(&latencies, 0.5))
        );
        println!("| … p99 | {} | ≤ 1 s |", ms(percentile(&latencies, 0.99)));
        println!("| skiff-agent RSS with 100 pods running | {} MiB | — |", rss / 1024);
        drop(server);
    });
}
