//! The demo image as the lab uses it: `skiff.local/echo:<version>` (busybox-static plus a static
//! skiff-echo as entrypoint) imported into a private containerd and run as a pod through the
//! agent's pod manager, with skiff-cni and the datapath in a node namespace. Checks that the
//! binary really runs without libc, names its pod from the downward API, echoes TCP and UDP at
//! the pod IP, and, as PID 1, stops on SIGTERM instead of waiting out the grace period.
//!
//! Needs the static binary: `cargo xtask echo-image` (or `cargo xtask ci`, which builds it
//! before the tests) leaves it in `<target>/x86_64-unknown-linux-gnu/release/skiff-echo`.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream, UdpSocket},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{NodeParts, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use skiff_agent::{
    datapath::{Datapath, DatapathConfig},
    kubelet::{
        cni::Cni,
        pods::{self, Ctx, PodConfig},
    },
    runtime::busybox,
};

const NODE: &str = "node-echo";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 62, 1);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// This test's target directory (`<target>/debug/deps/<test>` → `<target>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    exe.ancestors().nth(3).expect("target dir").to_owned()
}

/// The static skiff-echo built by `cargo xtask echo-image`.
fn static_echo() -> PathBuf {
    let bin = target_dir().join("x86_64-unknown-linux-gnu/release/skiff-echo");
    assert!(bin.exists(), "{} is missing: run `cargo xtask echo-image` first", bin.display());
    bin
}

fn cni_bin_dir() -> PathBuf {
    let dir = target_dir().join("debug");
    assert!(dir.join("skiff-cni").exists(), "{} has no skiff-cni: run `cargo build` first", dir.display());
    dir
}

/// Connects from the node namespace and runs `f` on the connection; returns what it returns.
fn tcp_in<R: Send>(parts: &NodeParts, addr: (Ipv4Addr, u16), f: impl FnOnce(TcpStream) -> R + Send) -> R {
    parts
        .ns
        .run(move || {
            let s = TcpStream::connect_timeout(&addr.into(), IO_TIMEOUT).expect("connect to the pod");
            s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            f(s)
        })
        .expect("node netns")
}

/// Leaves nothing behind even when an assertion panics mid-test: the private containerd goes
/// with its guard, but the containers it started (reparented to init) and the pod's network
/// namespace would not. Kills what is in this test's cgroups, then removes them and the netns.
struct Cleanup {
    cgroup_root: String,
    pod_uid: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let trees: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let roots: Vec<PathBuf> = std::iter::once(PathBuf::from("/sys/fs/cgroup"))
            .chain(trees)
            .map(|t| t.join(self.cgroup_root.trim_start_matches('/')))
            .filter(|p| p.is_dir())
            .collect();
        // Every cgroup below the roots, deepest first.
        let mut dirs = Vec::new();
        let mut stack = roots;
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(dir);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        let procs = |dirs: &[PathBuf]| -> Vec<i32> {
            let mut pids: Vec<i32> = dirs
                .iter()
                .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
                .flat_map(|t| t.lines().filter_map(|l| l.parse().ok()).collect::<Vec<_>>())
                .collect();
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = procs(&dirs);
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
        if let Some(uid) = &self.pod_uid
            && std::path::Path::new("/run/netns").join(format!("skiff-{uid}")).exists()
        {
            let _ =
                std::process::Command::new("ip").args(["netns", "delete", &format!("skiff-{uid}")]).status();
        }
    }
}

#[test]
fn the_echo_image_runs_as_a_pod_and_stops_on_sigterm() {
    let binary = static_echo();
    let cni_dir = cni_bin_dir();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    rt.block_on(async {
        let parts = NodeParts::start("echo-pod", NODE_IP, "10.244.50.0/24", 10_000).await;
        let archive = parts.dir.path().join("echo.tar");
        busybox::build_echo_archive(std::path::Path::new(busybox::BUSYBOX), &binary, &archive).expect("archive");
        let image = busybox::echo_image();
        assert_eq!(parts.runtime.import(&archive, None).await.expect("import"), std::slice::from_ref(&image));

        let _dp = Datapath::load(&DatapathConfig { pin_dir: parts.pins.path().to_owned(), ..Default::default() })
            .expect("datapath");
        let cni = Cni::load(&parts.dir.path().join("net.d"), vec![cni_dir], parts.dir.path().join("cni-cache"))
            .expect("cni")
            .in_netns(parts.ns.path());
        let client = parts.server.client().await.expect("admin client");
        let mut config = PodConfig::new(NODE, NODE_IP);
        config.root_dir = parts.dir.path().join("agent");
        config.cgroup_root = format!("/skiff-test-{}-echo", std::process::id());
        config.node_netns = Some(parts.ns.path());
        let cgroup_root = config.cgroup_root.clone();
        let events = skiff_agent::kubelet::events::Recorder::new(client.clone(), NODE);
        let ctx = Arc::new(Ctx { client: client.clone(), events, runtime: parts.runtime.clone(), cni, config });
        let mut cleanup = Cleanup { cgroup_root, pod_uid: None };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(pods::run(ctx.clone(), async {
            let _ = stopped.await;
        }));

        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
        let pod = json!({
            "metadata": {"name": "echo"},
            "spec": {
                "nodeName": NODE,
                "terminationGracePeriodSeconds": 30,
                "containers": [{
                    "name": "echo", "image": image,
                    "env": [
                        {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                        {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                        {"name": "POD_IP", "valueFrom": field("status.podIP")},
                        {"name": "NODE_NAME", "valueFrom": field("spec.nodeName")},
                    ],
                    "ports": [{"containerPort": 8080}, {"containerPort": 7000}, {"containerPort": 7001, "protocol": "UDP"}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                }],
            },
        });
        let created =
            pods.create(&PostParams::default(), &serde_json::from_value(pod).expect("pod")).await.expect("create");
        cleanup.pod_uid = created.metadata.uid;
        let status = eventually("the echo pod Ready", Duration::from_secs(30), || async {
            let s = serde_json::to_value(pods.get("echo").await.ok()?.status?).ok()?;
            let ready = s["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            (s["phase"] == "Running" && ready).then_some(s)
        })
        .await;
        let ip: Ipv4Addr = status["podIP"].as_str().expect("podIP").parse().expect("ip");

        // HTTP: the downward API names the pod, and the pod sees the node's own source address.
        let (local, body) = tcp_in(&parts, (ip, 8080), |mut s| {
            let local = s.local_addr().expect("local");
            s.write_all(b"GET /who HTTP/1.0\r\n\r\n").expect("send");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("answer");
            (local, out)
        });
        let json_body = body.split("\r\n\r\n").nth(1).expect("a body");
        let who: serde_json::Value = serde_json::from_str(json_body).expect("JSON body");
        assert_eq!(
            who,
            json!({"pod": "echo", "namespace": "default", "podIP": ip.to_string(), "node": NODE,
                   "client": local.to_string(), "path": "/who"}),
            "{body}"
        );

        // TCP and UDP echo at the pod IP.
        let echoed = tcp_in(&parts, (ip, 7000), |mut s| {
            s.write_all(b"ping over tcp").expect("send");
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
            let mut out = Vec::new();
            s.read_to_end(&mut out).expect("echo");
            out
        });
        assert_eq!(echoed, b"ping over tcp");
        let datagram = parts
            .ns
            .run(move || {
                let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
                sock.connect((ip, 7001)).expect("connect");
                sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
                let mut buf = [0u8; 64];
                let start = Instant::now();
                // UDP may drop: resend until an answer or the deadline.
                loop {
                    sock.send(b"ping over udp").expect("send");
                    match sock.recv(&mut buf) {
                        Ok(n) => break buf[..n].to_vec(),
                        Err(e) => assert!(start.elapsed() < IO_TIMEOUT, "no UDP echo: {e}"),
                    }
                }
            })
            .expect("node netns");
        assert_eq!(datagram, b"ping over udp");

        // As PID 1 it takes SIGTERM: the pod goes well before its 30 s grace period ends.
        let deleting = Instant::now();
        pods.delete("echo", &DeleteParams::default()).await.expect("delete");
        eventually("the echo pod gone", Duration::from_secs(25), || async {
            pods.get_opt("echo").await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(deleting.elapsed() < Duration::from_secs(15), "took {:?}: SIGTERM ignored?", deleting.elapsed());
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}
