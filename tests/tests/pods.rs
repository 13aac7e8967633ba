//! Pods end to end on one node: skiff-control in-process, a private containerd, a node network
//! namespace with the datapath loaded and skiff-cni as the network, and the agent's pod manager
//! in between. Needs the workspace's skiff-cni binary (built with the workspace, as CI does).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{NodeParts, eventually, poll};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use skiff_agent::{
    datapath::{Datapath, DatapathConfig},
    kubelet::{
        cni::Cni,
        pods::{self, Ctx, PodConfig},
    },
    runtime::{Runtime, busybox},
};
use skiff_control::local::LocalServer;
use skiff_tests::{Containerd, NetNs, PinDir, Registry};

const NODE: &str = "node-a";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 61, 1);

/// The workspace's skiff-cni, next to this test's own target directory.
fn cni_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_owned();
    assert!(
        dir.join("skiff-cni").exists(),
        "{} has no skiff-cni: build the workspace (cargo build) first",
        dir.display()
    );
    dir
}

struct Node {
    ns: NetNs,
    pins: PinDir,
    _dp: Datapath,
    containerd: Containerd,
    dir: tempfile::TempDir,
    /// `None` only while restarting.
    server: Option<LocalServer>,
    client: Client,
    ctx: Arc<Ctx>,
    /// Pods this test created (other tests' pods share /run/netns).
    uids: std::sync::Mutex<Vec<String>>,
}

impl Node {
    /// The agent's HTTPS endpoint (logs, metrics) on loopback, with a serving certificate signed
    /// through the API for the Node this registers (InternalIP 127.0.0.2 — 127.0.0.1 is the API server's, which no node is certified for — and the
    /// endpoint's port):
    /// its port, what stops it, and its task.
    async fn serve_endpoint(&self) -> (u16, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        use skiff_agent::kubelet::server::{self, authz::Authorizer, identity::Identity};
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let n: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(json!({"metadata": {"name": NODE}})).expect("node");
        nodes.create(&PostParams::default(), &n).await.expect("node");
        let status_patch = json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.2"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
        nodes
            .patch_status(NODE, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&status_patch))
            .await
            .expect("node status");
        let sans = [NODE.to_owned(), "127.0.0.2".to_owned()];
        let identity = Identity::obtain(
            self.client.clone(),
            NODE,
            &sans,
            &self.dir.path().join("agent-pki"),
            Duration::from_secs(10),
        )
        .await
        .expect("a serving certificate signed through the API");
        let server = self.server.as_ref().expect("server");
        let ca = skiff_tls::pem_certs(&std::fs::read(server.pki.ca_cert()).expect("CA")).expect("CA PEM");
        let tls = server::tls_config(&identity, &ca).expect("TLS");
        let status = skiff_agent::status::Status::new(NODE, "ebpf", None, Some(self.client.clone()));
        let app = server::router(
            self.ctx.clone(),
            Some(status),
            Arc::new(Authorizer::new(self.client.clone(), NODE)),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, tls, app, async {
            let _ = stopped.await;
        }));
        (port, stop, task)
    }

    async fn start(label: &str, subnet: &str) -> Node {
        Node::start_with(label, subnet, &[]).await
    }

    /// A node that may pull over plain HTTP from `insecure` registries.
    async fn start_with(label: &str, subnet: &str, insecure: &[String]) -> Node {
        let NodeParts { ns, pins, containerd, dir, runtime, server } =
            NodeParts::start(label, NODE_IP, subnet, 10_000).await;
        let dp =
            Datapath::load(&DatapathConfig { pin_dir: pins.path().to_owned(), ..DatapathConfig::default() })
                .expect("datapath");
        let cni = Cni::load(&dir.path().join("net.d"), vec![cni_bin_dir()], dir.path().join("cni-cache"))
            .expect("cni")
            .in_netns(ns.path());
        let client = server.client().await.expect("admin client");
        let mut config = PodConfig::new(NODE, NODE_IP);
        config.root_dir = dir.path().join("agent");
        config.cgroup_root = format!("/skiff-test-{}-{label}", std::process::id());
        config.backoff_base = Duration::from_secs(1);
        config.node_netns = Some(ns.path());
        config.pull.insecure_registries = insecure.to_vec();
        config.static_dir = Some(dir.path().join("manifests"));
        let events = skiff_agent::kubelet::events::Recorder::new(client.clone(), NODE);
        let ctx = Arc::new(Ctx { client: client.clone(), events, runtime, cni, config });
        Node {
            ns,
            pins,
            _dp: dp,
            containerd,
            dir,
            server: Some(server),
            client,
            ctx,
            uids: Default::default(),
        }
    }

    fn kubeconfig(&self) -> String {
        self.server.as_ref().map(|s| s.kubeconfig.clone()).unwrap_or_default()
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Runs the pod manager until the returned sender is dropped or used.
    fn run_agent(&self) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pods::run(self.ctx.clone(), async {
            let _ = stopped.await;
        }));
        (stop, task)
    }

    async fn create(&self, pod: serde_json::Value) -> Pod {
        let mut pod = pod;
        pod["spec"]["nodeName"] = json!(NODE);
        let pod = self
            .pods()
            .create(&PostParams::default(), &serde_json::from_value(pod).expect("pod"))
            .await
            .expect("create pod");
        self.uids.lock().expect("uids").push(pod.metadata.uid.clone().unwrap_or_default());
        pod
    }

    /// The ids of the containers in this node's containerd, sorted.
    async fn container_ids(&self) -> Vec<String> {
        let containers = self.ctx.runtime.containers(&[]).await.expect("containers");
        let mut ids: Vec<String> = containers.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    }

    /// Waits (up to 30 s) until pod `name` is Running; returns its status.
    async fn running(&self, name: &str) -> serde_json::Value {
        let pods = self.pods();
        eventually(&format!("{name} running"), Duration::from_secs(30), || async {
            let s = status(&pods.get(name).await.ok()?);
            (s["phase"] == "Running").then_some(s)
        })
        .await
    }

    /// Waits (up to 30 s) until pod `name` is gone from the API.
    async fn gone(&self, name: &str) {
        let pods = self.pods();
        eventually(&format!("{name} gone"), Duration::from_secs(30), || async {
            pods.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }

    /// What is left of this test's pods: containers, namespaces, addresses, veths.
    async fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> =
            self.container_ids().await.into_iter().map(|id| format!("container {id}")).collect();
        for uid in self.uids.lock().expect("uids").iter() {
            if std::path::Path::new("/run/netns").join(format!("skiff-{uid}")).exists() {
                left.push(format!("netns of {uid}"));
            }
            if self.ctx.config.pod_dir(uid).exists() {
                left.push(format!("directory of {uid}"));
            }
        }
        if let Ok(dir) = std::fs::read_dir(self.dir.path().join("ipam/skiff")) {
            left.extend(
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .map(|n| format!("address {n}")),
            );
        }
        let links = self.ns.ip(&["-o", "link"]).expect("links");
        left.extend(links.lines().filter(|l| l.contains("skf")).map(|l| format!("veth {l}")));
        left
    }

    /// Waits (the agent finishes tearing down after the API lets go) until nothing is left.
    async fn assert_clean(&self) {
        let clean = poll(Duration::from_secs(15), Duration::from_millis(50), || async {
            self.leftovers().await.is_empty().then_some(())
        })
        .await;
        if clean.is_none() {
            panic!("left behind: {:?}", self.leftovers().await);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = skiff_agent::runtime::cgroup::remove(&self.ctx.config.cgroup_root);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

fn status(pod: &Pod) -> serde_json::Value {
    serde_json::to_value(pod.status.clone().unwrap_or_default()).expect("status")
}

#[test]
fn a_pod_runs_its_init_then_two_containers_sharing_localhost_and_deletes_cleanly() {
    runtime().block_on(async {
        let node = Node::start("pods-run", "10.244.21.0/24").await;
        let (stop, agent) = node.run_agent();
        let fetch = "while ! wget -q -O - http://127.0.0.1:8080/; do sleep 0.1; done; echo fetched; sleep 3600";
        let pod = node
            .create(json!({
                "metadata": {"name": "web"},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "initContainers": [{"name": "setup", "image": busybox::IMAGE, "command": ["sh", "-c", "echo set up"]}],
                    "containers": [
                        {"name": "httpd", "image": busybox::IMAGE, "command": ["httpd", "-f", "-p", "8080", "-h", "/var/www"]},
                        {"name": "client", "image": busybox::IMAGE, "command": ["sh", "-c", fetch]},
                    ],
                },
            }))
            .await;
        let uid = pod.metadata.uid.clone().expect("uid");
        let pods = node.pods();
        let running = eventually("the pod Ready", Duration::from_secs(30), || async {
            let p = pods.get("web").await.ok()?;
            let s = status(&p);
            let ready = s["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            (s["phase"] == "Running" && ready).then_some(s)
        })
        .await;
        let ip: Ipv4Addr = running["podIP"].as_str().expect("podIP").parse().expect("ip");
        assert!(ip.octets()[..3] == [10, 244, 21], "{ip}");
        assert_eq!(running["hostIP"], NODE_IP.to_string());
        let init = &running["initContainerStatuses"][0]["state"]["terminated"];
        assert_eq!((init["exitCode"].as_i64(), init["reason"].as_str()), (Some(0), Some("Completed")), "{running}");
        let first_app_start = running["containerStatuses"][0]["state"]["running"]["startedAt"].as_str().expect("started");
        assert!(first_app_start >= init["finishedAt"].as_str().expect("finished"), "an app container started before init ended");

        // The two containers share the pod's loopback; the node reaches the pod at its IP.
        let log = node.ctx.config.pod_dir(&uid).join("logs/client-0.log");
        eventually("the client's fetch", Duration::from_secs(10), || async {
            std::fs::read_to_string(&log).ok().filter(|l| l.contains("skiff") && l.contains("fetched"))
        })
        .await;
        let page = node
            .ns
            .run(move || -> std::io::Result<String> {
                let mut s = TcpStream::connect((ip, 8080))?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })
            .expect("netns")
            .expect("http from the node");
        assert!(page.contains("skiff"), "{page}");

        // The story is in the events, as `kubectl describe pod` shows them.
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(node.client.clone(), "default");
        let reasons = eventually("the pod's events", Duration::from_secs(10), || async {
            let list = events.list(&kube::api::ListParams::default().fields("involvedObject.name=web")).await.ok()?;
            let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
            (reasons.iter().filter(|r| *r == "Started").count() >= 3).then_some(reasons)
        })
        .await;
        assert!(reasons.contains(&"Created".to_owned()) && reasons.contains(&"Pulled".to_owned()), "{reasons:?}");

        // Graceful delete: httpd and sleep ignore SIGTERM as PID 1, so the grace period runs out.
        let deleting = Instant::now();
        pods.delete("web", &DeleteParams::default()).await.expect("delete");
        node.gone("web").await;
        assert!(deleting.elapsed() >= Duration::from_secs(1), "the grace period was not waited out");
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

#[test]
fn a_crashing_container_backs_off_longer_each_time_and_says_crash_loop_back_off() {
    runtime().block_on(async {
        let node = Node::start("pods-crash", "10.244.22.0/24").await;
        let (stop, agent) = node.run_agent();
        node.create(json!({
            "metadata": {"name": "crasher"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": busybox::IMAGE, "command": ["sh", "-c", "exit 3"]}]},
        }))
        .await;
        let pods = node.pods();
        let mut seen = Vec::new();
        for restarts in 1..=3 {
            eventually(&format!("restart {restarts}"), Duration::from_secs(30), || async {
                let s = status(&pods.get("crasher").await.ok()?);
                (s["containerStatuses"][0]["restartCount"].as_u64()? >= restarts).then_some(())
            })
            .await;
            seen.push(Instant::now());
        }
        // 1 s, 2 s, 4 s: each wait longer than the one before.
        let (first, second) = (seen[1] - seen[0], seen[2] - seen[1]);
        assert!(second > first, "back-off did not grow: {first:?} then {second:?}");
        let s = eventually("CrashLoopBackOff", Duration::from_secs(10), || async {
            let s = status(&pods.get("crasher").await.ok()?);
            (s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff").then_some(s)
        })
        .await;
        assert_eq!(s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 3, "{s}");

        // A missing image: ErrImagePull, while the node keeps serving the other pod.
        node.create(json!({
            "metadata": {"name": "ghost"},
            "spec": {"containers": [{"name": "c", "image": "skiff.local/missing:1"}]},
        }))
        .await;
        eventually("ErrImagePull or ImagePullBackOff", Duration::from_secs(10), || async {
            let s = status(&pods.get("ghost").await.ok()?);
            let reason = s["containerStatuses"][0]["state"]["waiting"]["reason"].as_str()?.to_owned();
            ["ErrImagePull", "ImagePullBackOff"].contains(&reason.as_str()).then_some(())
        })
        .await;
        for name in ["crasher", "ghost"] {
            pods.delete(name, &DeleteParams::default()).await.expect("delete");
        }
        eventually("both pods gone", Duration::from_secs(30), || async {
            (pods.list(&Default::default()).await.ok()?.items.is_empty()).then_some(())
        })
        .await;
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

#[test]
fn a_restarted_agent_adopts_running_pods_without_duplicates() {
    runtime().block_on(async {
        let node = Node::start("pods-adopt", "10.244.23.0/24").await;
        let (stop, agent) = node.run_agent();
        node.create(json!({
            "metadata": {"name": "steady"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": busybox::IMAGE, "command": ["sleep", "3600"]}]},
        }))
        .await;
        let pods = node.pods();
        let before = node.running("steady").await;
        let ids = node.container_ids().await;
        let _ = stop.send(());
        agent.await.expect("agent stopped");

        // A new agent adopts the pod: when its container dies, it restarts that one container in
        // the same sandbox, with the same address, and duplicates nothing.
        let (stop, agent) = node.run_agent();
        let app = ids.iter().find(|id| !id.starts_with("skiff-pod-")).expect("the app container").clone();
        node.ctx.runtime.kill(&app, 9, true).await.expect("kill the container");
        let after = eventually("the restart", Duration::from_secs(30), || async {
            let s = status(&pods.get("steady").await.ok()?);
            (s["containerStatuses"][0]["restartCount"] == 1 && s["phase"] == "Running"
                && s["containerStatuses"][0]["state"]["running"].is_object())
            .then_some(s)
        })
        .await;
        assert_eq!(after["podIP"], before["podIP"]);
        let now = node.container_ids().await;
        assert_eq!(now.len(), 2, "sandbox and one container, nothing duplicated: {now:?}");
        assert!(now.contains(&ids.iter().find(|id| id.starts_with("skiff-pod-")).expect("sandbox").clone()), "a new sandbox: {now:?}");
        assert!(!now.contains(&app), "the dead container was not replaced: {now:?}");
        pods.delete("steady", &DeleteParams::default()).await.expect("delete");
        node.gone("steady").await;
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

#[test]
fn probes_flip_readiness_and_restart_a_container_that_fails_liveness() {
    runtime().block_on(async {
        let node = Node::start("pods-probe", "10.244.24.0/24").await;
        let (stop, agent) = node.run_agent();
        let script = "mkdir -p /www; echo ok > /www/index.html; httpd -p 8080 -h /www; sleep 1.5; touch /www/ready; sleep 3; rm /www/ready; sleep 3600";
        let every_second = json!({"periodSeconds": 1, "failureThreshold": 1});
        let mut http = every_second.clone();
        http["httpGet"] = json!({"path": "/ready", "port": "web"});
        let mut exec = every_second.clone();
        exec["exec"] = json!({"command": ["test", "-e", "/bin/sh"]});
        node.create(json!({
            "metadata": {"name": "ready"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                {"name": "web", "image": busybox::IMAGE, "command": ["sh", "-c", script], "ports": [{"name": "web", "containerPort": 8080}], "readinessProbe": http},
                {"name": "exec", "image": busybox::IMAGE, "command": ["sleep", "3600"], "readinessProbe": exec},
            ]},
        }))
        .await;
        let mut tcp = every_second.clone();
        tcp["tcpSocket"] = json!({"port": 9999});
        tcp["failureThreshold"] = json!(2);
        node.create(json!({
            "metadata": {"name": "doomed"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                {"name": "c", "image": busybox::IMAGE, "command": ["sleep", "3600"], "livenessProbe": tcp},
            ]},
        }))
        .await;
        let pods = node.pods();
        let pod_ready = |s: &serde_json::Value| {
            s["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        };
        let web_ready = |s: &serde_json::Value| s["containerStatuses"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "web")).map(|c| c["ready"] == true);
        // Not ready until /ready exists, ready while it does, not ready once it is gone.
        for want in [true, false] {
            let s = eventually(&format!("web ready={want}"), Duration::from_secs(20), || async {
                let s = status(&pods.get("ready").await.ok()?);
                (web_ready(&s) == Some(want) && pod_ready(&s) == want).then_some(s)
            })
            .await;
            let exec_ready = s["containerStatuses"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "exec")).map(|c| c["ready"].clone());
            assert_eq!(exec_ready, Some(json!(true)), "the exec probe: {s}");
        }
        // Nothing listens on 9999: liveness fails twice and the container is restarted.
        eventually("a liveness restart", Duration::from_secs(20), || async {
            let s = status(&pods.get("doomed").await.ok()?);
            (s["containerStatuses"][0]["restartCount"].as_u64()? >= 1).then_some(())
        })
        .await;
        for name in ["ready", "doomed"] {
            pods.delete(name, &DeleteParams::default()).await.expect("delete");
        }
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

#[test]
fn config_maps_secrets_and_an_empty_dir_reach_the_containers_as_files_and_env() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    runtime().block_on(async {
        let node = Node::start("pods-vol", "10.244.25.0/24").await;
        let cms: Api<ConfigMap> = Api::namespaced(node.client.clone(), "default");
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}})).expect("cm");
        cms.create(&PostParams::default(), &cm).await.expect("configmap");
        let secrets: Api<Secret> = Api::namespaced(node.client.clone(), "default");
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": "sec"}, "stringData": {"password": "hunter2"}})).expect("secret");
        secrets.create(&PostParams::default(), &secret).await.expect("secret");
        let (stop, agent) = node.run_agent();
        let writer = "echo shared > /data/x; cat /cfg/greeting /sec/password; echo \"env $GREETING $PASSWORD $POD_NAME $MY_IP $FROM_greeting\"; sleep 3600";
        let reader = "while [ ! -e /data/x ]; do sleep 0.1; done; echo \"read $(cat /data/x)\"; sleep 3600";
        let pod = node
            .create(json!({
                "metadata": {"name": "vols"},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "cfg", "configMap": {"name": "cfg"}},
                        {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
                    ],
                    "containers": [
                        {"name": "writer", "image": busybox::IMAGE, "command": ["sh", "-c", writer],
                         "env": [
                            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                         ],
                         "envFrom": [{"prefix": "FROM_", "configMapRef": {"name": "cfg"}}],
                         "volumeMounts": [
                            {"name": "data", "mountPath": "/data"},
                            {"name": "cfg", "mountPath": "/cfg"},
                            {"name": "sec", "mountPath": "/sec", "readOnly": true},
                         ]},
                        {"name": "reader", "image": busybox::IMAGE, "command": ["sh", "-c", reader],
                         "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    ],
                },
            }))
            .await;
        let uid = pod.metadata.uid.clone().expect("uid");
        let pods = node.pods();
        let running = node.running("vols").await;
        let ip = running["podIP"].as_str().expect("ip").to_owned();
        let logs = node.ctx.config.pod_dir(&uid).join("logs");
        let writer_log = eventually("the writer's output", Duration::from_secs(10), || async {
            std::fs::read_to_string(logs.join("writer-0.log")).ok().filter(|l| l.contains("env "))
        })
        .await;
        assert!(writer_log.contains("hello") && writer_log.contains("hunter2"), "files: {writer_log}");
        assert!(writer_log.contains(&format!("env hello hunter2 vols {ip} hello")), "env: {writer_log}");
        eventually("the reader saw the shared file", Duration::from_secs(10), || async {
            std::fs::read_to_string(logs.join("reader-0.log")).ok().filter(|l| l.contains("read shared"))
        })
        .await;
        // The secret sits on a tmpfs with its mode, never on the node's disk.
        let sec_dir = node.ctx.config.pod_dir(&uid).join("volumes/sec");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let line = mounts.lines().find(|l| l.split(' ').nth(4) == Some(&*sec_dir.display().to_string())).expect("the secret volume is a mount");
        assert!(line.contains("tmpfs"), "{line}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(sec_dir.join("password")).expect("secret file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);

        pods.delete("vols", &DeleteParams::default()).await.expect("delete");
        node.assert_clean().await;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&uid), "mounts of the pod left");
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

#[test]
fn images_are_pulled_from_a_registry_and_a_missing_one_backs_off() {
    let registry = Registry::start("pull-registry").expect("registry");
    let work = tempfile::tempdir().expect("tmp");
    let archive = work.path().join("busybox.tar");
    busybox::build_archive(std::path::Path::new(busybox::BUSYBOX), &archive).expect("image");
    registry.push(&archive, "test/busybox:v1").expect("push");
    runtime().block_on(async {
        let node = Node::start_with("pods-pull", "10.244.26.0/24", &[registry.host()]).await;
        let (stop, agent) = node.run_agent();
        let image = format!("{}/test/busybox:v1", registry.host());
        node.create(json!({
            "metadata": {"name": "pulled"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                {"name": "c", "image": image, "imagePullPolicy": "Always", "command": ["sleep", "3600"]},
            ]},
        }))
        .await;
        let pods = node.pods();
        let s = node.running("pulled").await;
        assert!(s["containerStatuses"][0]["imageID"].as_str().is_some_and(|i| i.starts_with("sha256:")), "{s}");
        assert!(node.ctx.runtime.resolve(&image).await.expect("resolve").is_some(), "the image is not in containerd");
        // Every status the agent posts is a watch event: ErrImagePull, then ImagePullBackOff. The
        // watch is established (its initial list done) before the pod exists.
        use futures::StreamExt as _;
        use kube::runtime::watcher;
        let config = watcher::Config::default().fields("metadata.name=missing");
        let mut events = watcher(pods.clone(), config).boxed();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout_at(deadline, events.next()).await.expect("the watch starts");
            if matches!(next, Some(Ok(watcher::Event::InitDone))) {
                break;
            }
        }
        node.create(json!({
            "metadata": {"name": "missing"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                {"name": "c", "image": format!("{}/test/busybox:nope", registry.host()), "command": ["sleep", "3600"]},
            ]},
        }))
        .await;
        let mut reasons: Vec<String> = Vec::new();
        while !reasons.iter().any(|r| r == "ImagePullBackOff") {
            let next = tokio::time::timeout_at(deadline, events.next()).await.expect("pull reasons in time");
            let Some(Ok(watcher::Event::Apply(pod))) = next else { continue };
            if let Some(r) = status(&pod)["containerStatuses"][0]["state"]["waiting"]["reason"].as_str()
                && reasons.last().map(String::as_str) != Some(r)
            {
                reasons.push(r.to_owned());
            }
        }
        let first = reasons.iter().position(|r| r == "ErrImagePull").unwrap_or_else(|| panic!("no ErrImagePull: {reasons:?}"));
        assert!(reasons[first..].iter().any(|r| r == "ImagePullBackOff"), "{reasons:?}");
        for name in ["pulled", "missing"] {
            pods.delete(name, &DeleteParams::default()).await.expect("delete");
        }
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

#[test]
fn a_pre_stop_hook_runs_before_the_container_is_stopped() {
    runtime().block_on(async {
        let node = Node::start("pods-prestop", "10.244.27.0/24").await;
        let (stop, agent) = node.run_agent();
        let out = node.dir.path().join("hook-out");
        std::fs::create_dir_all(&out).expect("hook dir");
        node.create(json!({
            "metadata": {"name": "hooked"},
            "spec": {
                "terminationGracePeriodSeconds": 5,
                "volumes": [{"name": "out", "hostPath": {"path": out, "type": "Directory"}}],
                "containers": [{
                    "name": "c", "image": busybox::IMAGE,
                    "command": ["sh", "-c", "trap 'echo term >> /out/log; exit 0' TERM; while :; do sleep 0.1; done"],
                    "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                    "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /out/log"]}}},
                }],
            },
        }))
        .await;
        let pods = node.pods();
        node.running("hooked").await;
        let deleting = Instant::now();
        pods.delete("hooked", &DeleteParams::default()).await.expect("delete");
        node.gone("hooked").await;
        // The hook, then SIGTERM (which the shell handles): well within the grace period.
        assert_eq!(std::fs::read_to_string(out.join("log")).expect("log"), "prestop\nterm\n");
        assert!(deleting.elapsed() < Duration::from_secs(5), "waited out the grace period although the container exited");
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

#[test]
fn container_logs_reach_kubectl_through_the_api_server() {
    use futures::{AsyncBufReadExt as _, StreamExt as _};
    use kube::api::LogParams;
    runtime().block_on(async {
        let node = Node::start("pods-logs", "10.244.28.0/24").await;
        let (stop, agent) = node.run_agent();
        let (_port, stop_logs, logs) = node.serve_endpoint().await;

        let counter = "echo one; echo two; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done";
        node.create(json!({
            "metadata": {"name": "talker"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                {"name": "c", "image": busybox::IMAGE, "command": ["sh", "-c", counter]},
                {"name": "quiet", "image": busybox::IMAGE, "command": ["sleep", "3600"]},
            ]},
        }))
        .await;
        let pods = node.pods();
        node.running("talker").await;
        let params = LogParams { container: Some("c".into()), ..LogParams::default() };
        let all = eventually("some ticks", Duration::from_secs(10), || async {
            pods.logs("talker", &params).await.ok().filter(|l| l.contains("tick 2"))
        })
        .await;
        assert!(all.starts_with("one\ntwo\ntick 0\n"), "{all}");
        let tail =
            pods.logs("talker", &LogParams { tail_lines: Some(1), ..params.clone() }).await.expect("tail");
        assert_eq!(tail.lines().count(), 1, "{tail}");
        // Following: new lines keep arriving on the open stream.
        let mut lines = pods
            .log_stream("talker", &LogParams { follow: true, tail_lines: Some(1), ..params.clone() })
            .await
            .expect("follow")
            .lines();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let line =
                tokio::time::timeout(Duration::from_secs(5), lines.next()).await.expect("a line in time");
            seen.push(line.expect("stream").expect("line"));
        }
        assert!(seen.iter().all(|l| l.starts_with("tick")), "{seen:?}");
        // Two containers: kubectl must be told which (the API server says so).
        match pods.logs("talker", &LogParams::default()).await {
            Err(kube::Error::Api(s)) => {
                assert!(s.code == 400 && s.message.contains("choose one of: [c quiet]"), "{s:?}")
            }
            other => panic!("logs without a container: {other:?}"),
        }
        // And kubectl itself.
        let kubeconfig = node.dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, node.kubeconfig()).expect("kubeconfig");
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["logs", "talker", "-c", "c", "--tail=2"])
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

        pods.delete("talker", &DeleteParams::default()).await.expect("delete");
        node.assert_clean().await;
        let _ = stop_logs.send(());
        logs.await.expect("log endpoint");
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

/// `curl` to `url` trusting `ca`, with the client certificate of `client` if any: whether a
/// response came, its status code and body.
fn curl(
    ca: &std::path::Path,
    client: Option<&skiff_control::pki::issue::Issued>,
    dir: &std::path::Path,
    url: &str,
) -> Option<(u16, String)> {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"]).arg(ca).args(["-w", "\n%{http_code}", url]);
    if let Some(issued) = client {
        let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
        std::fs::write(&cert, &issued.cert_pem).expect("cert");
        std::fs::write(&key, &issued.key_pem).expect("key");
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.output().expect("curl (cargo xtask setup installs it)");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status code line");
    Some((code.trim().parse().expect("code"), body.to_owned()))
}

#[test]
fn the_agent_endpoint_wants_a_ca_certificate_and_the_api_servers_permission() {
    use skiff_control::pki::issue::{self, Subject, Usage};
    runtime().block_on(async {
        let node = Node::start("pods-endpoint", "10.244.33.0/24").await;
        let (port, stop_endpoint, endpoint) = node.serve_endpoint().await;
        let server = node.server.as_ref().expect("server");
        let ca_file = server.pki.ca_cert();
        let person = |name: &str, groups: &[&str]| server.issue_client(name, groups).expect("certificate");
        // A metrics reader, bound before it first asks (a denial is remembered for 30 s).
        let reader = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "node-metrics"},
            "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}]});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "prometheus-node-metrics"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-metrics"},
            "subjects": [{"kind": "User", "name": "prometheus", "apiGroup": "rbac.authorization.k8s.io"}]});
        let api = |kind: &str| {
            let ar = kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind));
            Api::<kube::api::DynamicObject>::all_with(node.client.clone(), &ar)
        };
        for (kind, object) in [("ClusterRole", reader), ("ClusterRoleBinding", binding)] {
            let object: kube::api::DynamicObject = serde_json::from_value(object).expect("object");
            api(kind).create(&PostParams::default(), &object).await.expect("create RBAC");
        }
        let dir = tempfile::tempdir().expect("tmp");
        let base = format!("https://127.0.0.2:{port}");
        let logs = format!("{base}/containerLogs/default/absent/c");
        let metrics = format!("{base}/metrics");
        let ask = |who: Option<issue::Issued>, url: String| {
            let (ca_file, dir) = (ca_file.clone(), dir.path().to_owned());
            tokio::task::spawn_blocking(move || curl(&ca_file, who.as_ref(), &dir, &url))
        };
        // No certificate, or one of another CA: no handshake.
        assert_eq!(ask(None, metrics.clone()).await.expect("curl"), None);
        let other_ca = issue::new_ca("elsewhere", time::Duration::days(1)).expect("CA");
        let other = issue::Ca::load(&other_ca.cert_pem, &other_ca.key_pem).expect("CA");
        let stranger = other
            .issue(&Subject { common_name: "kube-apiserver-kubelet-client".into(), organizations: vec![], sans: vec![], usage: Usage::Client }, time::OffsetDateTime::now_utc() - time::Duration::minutes(1), time::Duration::hours(1))
            .expect("foreign certificate");
        assert_eq!(ask(Some(stranger), logs.clone()).await.expect("curl"), None);
        // The cluster CA's, for someone RBAC grants nothing, and another node: 403 naming what.
        let (code, body) = ask(Some(person("someone", &[])), metrics.clone()).await.expect("curl").expect("an answer");
        assert_eq!((code, body.as_str()), (403, "Forbidden (user=someone, verb=get, resource=nodes, subresource=metrics)"));
        let (code, body) = ask(Some(person("system:node:node-b", &["system:nodes"])), logs.clone()).await.expect("curl").expect("an answer");
        assert_eq!((code, body.as_str()), (403, "Forbidden (user=system:node:node-b, verb=get, resource=nodes, subresource=proxy)"));
        // The metrics reader reads metrics and nothing else.
        let (code, body) = ask(Some(person("prometheus", &[])), metrics.clone()).await.expect("curl").expect("an answer");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("skiff_"), "{body}");
        let (code, _) = ask(Some(person("prometheus", &[])), logs.clone()).await.expect("curl").expect("an answer");
        assert_eq!(code, 403);
        // The API server's identity may read logs (this pod is not here: the handler's 404).
        let kubelet_client = issue::Issued {
            cert_pem: std::fs::read_to_string(server.pki.kubelet_client_cert()).expect("cert"),
            key_pem: std::fs::read_to_string(server.pki.kubelet_client_key()).expect("key"),
        };
        let (code, body) = ask(Some(kubelet_client), logs.clone()).await.expect("curl").expect("an answer");
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("is not running on this node"), "{body}");
        let _ = stop_endpoint.send(());
        endpoint.await.expect("endpoint");
    });
}

#[test]
fn static_pods_run_from_their_files_and_are_mirrored_to_the_api() {
    runtime().block_on(async {
        let node = Node::start("pods-static", "10.244.29.0/24").await;
        let manifests = node.ctx.config.static_dir.clone().expect("manifest dir");
        std::fs::create_dir_all(&manifests).expect("manifest dir");
        let manifest = |arg: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: control\n  namespace: kube-system\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: {}\n    command: [sleep, \"{arg}\"]\n",
                busybox::IMAGE
            )
        };
        std::fs::write(manifests.join("control.yaml"), manifest("3600")).expect("manifest");
        let (stop, agent) = node.run_agent();
        // It runs from the file alone: no Node object, so no mirror can exist yet.
        let runs = |rt: Runtime| async move {
            let found = rt.containers(&[("io.skiff.pod.name", "control-node-a")]).await.ok()?;
            (found.len() >= 2).then_some(found)
        };
        eventually("the static pod's containers", Duration::from_secs(30), || runs(node.ctx.runtime.clone())).await;

        // With its Node registered, the mirror appears and carries the pod's status.
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(node.client.clone());
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({"metadata": {"name": NODE}})).expect("node");
        nodes.create(&PostParams::default(), &n).await.expect("node");
        let (stop_static, static_stopped) = tokio::sync::oneshot::channel::<()>();
        let mirror = tokio::spawn(skiff_agent::kubelet::static_pods::run(
            node.client.clone(),
            manifests.clone(),
            NODE.into(),
            Duration::from_millis(200),
            async { let _ = static_stopped.await; },
        ));
        let system: Api<Pod> = Api::namespaced(node.client.clone(), "kube-system");
        let running = |want: &'static str| {
            let system = system.clone();
            async move {
                let p = system.get_opt(&format!("control-{NODE}")).await.ok()??;
                let s = status(&p);
                let cmd = p.spec.as_ref()?.containers[0].command.clone()?;
                (s["phase"] == "Running" && cmd.last().map(String::as_str) == Some(want)).then_some(p)
            }
        };
        let first = eventually("the mirror pod running", Duration::from_secs(30), || running("3600")).await;
        let annotations = first.metadata.annotations.clone().expect("annotations");
        assert!(annotations.contains_key("kubernetes.io/config.mirror"), "{annotations:?}");
        assert_eq!(first.metadata.owner_references.as_ref().map(|o| o[0].kind.as_str()), Some("Node"));

        // A changed manifest replaces the pod; a removed one removes it, and its containers.
        std::fs::write(manifests.join("control.yaml"), manifest("3601")).expect("manifest");
        eventually("the new version running", Duration::from_secs(30), || running("3601")).await;
        std::fs::remove_file(manifests.join("control.yaml")).expect("remove manifest");
        eventually("the mirror pod gone", Duration::from_secs(30), || async {
            system.get_opt(&format!("control-{NODE}")).await.ok()?.is_none().then_some(())
        })
        .await;
        node.assert_clean().await;
        let _ = stop_static.send(());
        mirror.await.expect("mirror loop");
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

/// `skiff-agent run` as a process, next to the test's node.
fn spawn_agent(node: &Node, extra: &[&str]) -> std::process::Child {
    let bins = cni_bin_dir();
    let kubeconfig = node.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, node.kubeconfig()).expect("kubeconfig");
    let cni_conf = node.dir.path().join("net.d");
    std::process::Command::new(bins.join("skiff-agent"))
        .arg("run")
        .args([
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--node-name",
            NODE,
            "--node-ip",
            "127.0.0.1",
        ])
        .args(["--kubelet-port", "0", "--heartbeat-seconds", "1"])
        .args(["--containerd", &node.containerd.socket().display().to_string()])
        .args(["--root-dir", &node.ctx.config.root_dir.display().to_string()])
        .args(["--cni-bin-dir", &bins.display().to_string()])
        .args(if extra.contains(&"--cni-conf-dir") {
            vec![]
        } else {
            vec!["--cni-conf-dir".to_owned(), cni_conf.display().to_string()]
        })
        .args(["--node-netns", &node.ns.path().display().to_string()])
        .args(["--pin-dir", &node.pins.path().display().to_string()])
        .args(["--cgroup-root", &node.ctx.config.cgroup_root])
        .args(["--pod-manifest-path", &node.dir.path().join("no-manifests").display().to_string()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(node.dir.path().join("agent.log"))
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .spawn()
        .expect("skiff-agent (built with the workspace)")
}

#[test]
fn a_sigkilled_agent_process_is_replaced_and_the_new_one_carries_on() {
    runtime().block_on(async {
        let node = Node::start("pods-kill9", "10.244.30.0/24").await;
        let mut agent = spawn_agent(&node, &["--write-cni-config", "false"]);
        node.create(json!({
            "metadata": {"name": "survivor"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": busybox::IMAGE, "command": ["sleep", "3600"]}]},
        }))
        .await;
        let pods = node.pods();
        let before = node.running("survivor").await;
        let running = node.container_ids().await;
        agent.kill().expect("SIGKILL the agent");
        let _ = agent.wait();
        // The pod kept running without an agent.
        assert_eq!(node.container_ids().await, running);

        let mut agent = spawn_agent(&node, &["--write-cni-config", "false"]);
        let app = running.iter().find(|id| !id.starts_with("skiff-pod-")).expect("app container").clone();
        node.ctx.runtime.kill(&app, 9, true).await.expect("kill the container");
        let after = eventually("the new agent restarts it", Duration::from_secs(30), || async {
            let s = status(&pods.get("survivor").await.ok()?);
            (s["containerStatuses"][0]["restartCount"] == 1 && s["containerStatuses"][0]["state"]["running"].is_object()).then_some(s)
        })
        .await;
        assert_eq!(after["podIP"], before["podIP"]);
        let now = node.container_ids().await;
        assert_eq!(now.len(), 2, "sandbox and one container: {now:?}");
        pods.delete("survivor", &DeleteParams::default()).await.expect("delete");
        node.assert_clean().await;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = agent.wait();
    });
}

#[test]
fn resource_limits_become_cgroup_limits() {
    runtime().block_on(async {
        let node = Node::start("pods-limits", "10.244.31.0/24").await;
        let (stop, agent) = node.run_agent();
        let pod = node
            .create(json!({
                "metadata": {"name": "limited"},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                    "name": "c", "image": busybox::IMAGE, "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
                }]},
            }))
            .await;
        let uid = pod.metadata.uid.clone().expect("uid");
        let pods = node.pods();
        let s = node.running("limited").await;
        let id = s["containerStatuses"][0]["containerID"]
            .as_str()
            .expect("id")
            .trim_start_matches("containerd://")
            .to_owned();
        let cgroup = format!("{}/pod{uid}/{id}", node.ctx.config.cgroup_root);
        let read = |path: String| {
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_owned()
        };
        if std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
            // cgroup v1: one tree per controller.
            assert_eq!(
                read(format!("/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            assert_eq!(read(format!("/sys/fs/cgroup/cpu{cgroup}/cpu.shares")), "256");
            assert_eq!(read(format!("/sys/fs/cgroup/cpu{cgroup}/cpu.cfs_quota_us")), "50000");
        } else {
            assert_eq!(read(format!("/sys/fs/cgroup{cgroup}/memory.max")), (64u64 << 20).to_string());
            assert!(read(format!("/sys/fs/cgroup{cgroup}/cpu.max")).starts_with("50000 "));
        }
        pods.delete("limited", &DeleteParams::default()).await.expect("delete");
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

/// `skiff-control serve` as a process (built with the workspace), on `addr` with its store and
/// its PKI (`dir/pki`) in `dir`.
fn spawn_control(dir: &std::path::Path, addr: std::net::SocketAddr) -> std::process::Child {
    std::process::Command::new(cni_bin_dir().join("skiff-control"))
        .args(["serve", "--data-dir", &dir.display().to_string(), "--bind-address", &addr.to_string()])
        .arg("--pki-dir")
        .arg(dir.join("pki"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("skiff-control (built with the workspace)")
}

#[test]
fn the_agent_carries_on_when_the_api_server_is_killed_and_restarted() {
    runtime().block_on(async {
        let node = Node::start("pods-apirestart", "10.244.32.0/24").await;
        // A real API server process this time, so that it can die.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let data = node.dir.path().join("control-process");
        // The PKI made up front, so that the admin kubeconfig is at hand before the server is up.
        let pki = skiff_control::pki::Pki::new(data.join("pki"));
        skiff_control::secure::ensure_pki(&pki, addr, "10.96.0.0/12").expect("PKI");
        let kubeconfig =
            skiff_control::secure::admin_kubeconfig(&pki, &format!("https://{addr}")).expect("kubeconfig");
        let mut control = spawn_control(&data, addr);
        let raw = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(raw, &Default::default()).await.expect("config");
        config.default_retry = false;
        let client = Client::try_from(config).expect("client");
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            events: skiff_agent::kubelet::events::Recorder::new(client.clone(), NODE),
            runtime: node.ctx.runtime.clone(),
            cni: node.ctx.cni.clone(),
            config: node.ctx.config.clone(),
        });
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        eventually("the API server up", Duration::from_secs(20), || async { pods.list(&Default::default()).await.ok().map(drop) }).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(pods::run(ctx, async { let _ = stopped.await; }));
        let sleeper = |name: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "c", "image": busybox::IMAGE, "command": ["sleep", "3600"]}]},
            }))
            .expect("pod")
        };
        let running = |name: &'static str| {
            let pods = pods.clone();
            async move { (status(&pods.get(name).await.ok()?)["phase"] == "Running").then_some(()) }
        };
        pods.create(&PostParams::default(), &sleeper("before")).await.expect("create");
        eventually("before running", Duration::from_secs(30), || running("before")).await;

        control.kill().expect("SIGKILL skiff-control");
        let _ = control.wait();
        let mut control = spawn_control(&data, addr);
        eventually("the API server back", Duration::from_secs(20), || async { pods.list(&Default::default()).await.ok().map(drop) }).await;
        // The agent's watch re-lists and picks up what is new.
        pods.create(&PostParams::default(), &sleeper("after")).await.expect("create after the restart");
        eventually("after running", Duration::from_secs(60), || running("after")).await;
        eventually("before still running", Duration::from_secs(10), || running("before")).await;
        for name in ["before", "after"] {
            let uid = pods.get(name).await.expect("pod").metadata.uid.unwrap_or_default();
            node.uids.lock().expect("uids").push(uid);
            pods.delete(name, &DeleteParams::default()).await.expect("delete");
        }
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
        let _ = control.kill();
        let _ = control.wait();
    });
}

#[test]
fn images_are_pulled_over_https_trusting_the_registry_ca() {
    let registry = Registry::start_tls("pull-tls").expect("registry");
    let work = tempfile::tempdir().expect("tmp");
    let archive = work.path().join("busybox.tar");
    busybox::build_archive(std::path::Path::new(busybox::BUSYBOX), &archive).expect("image");
    registry.push(&archive, "secure/busybox:v1").expect("push");
    // The system's roots, as rustls-native-certs reads them, are this test's CA (this process
    // only: nextest runs each test in a process of its own).
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", registry.ca().expect("a CA")) };
    runtime().block_on(async {
        let node = Node::start("pods-tls", "10.244.33.0/24").await;
        let (stop, agent) = node.run_agent();
        let image = format!("{}/secure/busybox:v1", registry.host());
        node.create(json!({
            "metadata": {"name": "secure"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                {"name": "c", "image": image, "imagePullPolicy": "Always", "command": ["sleep", "3600"]},
            ]},
        }))
        .await;
        let pods = node.pods();
        node.running("secure").await;
        pods.delete("secure", &DeleteParams::default()).await.expect("delete");
        node.assert_clean().await;
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}

fn agent_exited(log: &std::path::Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|l| l.contains("skiff-agent: ") || l.starts_with("error:"))
}

#[test]
fn the_agent_writes_the_cni_configuration_for_its_pod_cidr() {
    runtime().block_on(async {
        let node = Node::start("pods-conflist", "10.244.34.0/24").await;
        let conf = node.dir.path().join("agent-net.d");
        let conf_arg = conf.display().to_string();
        let mut agent = spawn_agent(
            &node,
            &["--pod-cidr", "10.244.35.0/24", "--cni-conf-dir", &conf_arg, "--mtu", "1450"],
        );
        let log = node.dir.path().join("agent.log");
        let list = eventually(
            &format!("the conflist (agent log: {})", log.display()),
            Duration::from_secs(30),
            || async {
                if agent_exited(&log) {
                    panic!("the agent exited: {}", std::fs::read_to_string(&log).unwrap_or_default());
                }
                let text = std::fs::read_to_string(conf.join("10-skiff.conflist")).ok()?;
                serde_json::from_str::<serde_json::Value>(&text).ok()
            },
        )
        .await;
        assert_eq!(list["plugins"][0]["type"], "skiff-cni");
        assert_eq!(list["plugins"][0]["ipam"]["subnet"], "10.244.35.0/24");
        assert_eq!(list["plugins"][0]["mtu"], 1450);
        assert_eq!(list["plugins"][0]["bpfPinDir"], node.pins.path().display().to_string());
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(node.client.clone());
        let registered = nodes.get(NODE).await.expect("the agent registered its node");
        assert_eq!(registered.spec.and_then(|s| s.pod_cidr).as_deref(), Some("10.244.35.0/24"));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = agent.wait();
    });
}

#[test]
fn a_pod_reads_its_service_account_token_and_the_api_server_accepts_it() {
    use kube::api::LogParams;
    runtime().block_on(async {
        let node = Node::start("pods-sa", "10.244.46.0/24").await;
        // The pod manager as the node itself (not the admin the other tests use), so the token
        // comes through the node authorizer and the node-bound TokenRequest rules.
        let server = node.server.as_ref().expect("server");
        let text = server.kubeconfig_for(&format!("system:node:{NODE}"), &["system:nodes"]).expect("kubeconfig");
        let raw = kube::config::Kubeconfig::from_yaml(&text).expect("yaml");
        let config = kube::Config::from_custom_kubeconfig(raw, &Default::default()).await.expect("config");
        let as_node = Client::try_from(config).expect("node client");
        let ctx = Arc::new(Ctx {
            client: as_node.clone(),
            events: skiff_agent::kubelet::events::Recorder::new(as_node, NODE),
            runtime: node.ctx.runtime.clone(),
            cni: node.ctx.cni.clone(),
            config: node.ctx.config.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(pods::run(ctx, async {
            let _ = stopped.await;
        }));
        let (_port, stop_logs, logs) = node.serve_endpoint().await;

        let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
        let script = format!(
            "cat {dir}/token; echo; echo --namespace; cat {dir}/namespace; echo; echo --ca; cat {dir}/ca.crt; \
             echo --end; sleep 3600"
        );
        let pod = node
            .create(json!({
                "metadata": {"name": "whoami"},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [
                    {"name": "c", "image": busybox::IMAGE, "command": ["sh", "-c", script]},
                ]},
            }))
            .await;
        let uid = pod.metadata.uid.clone().expect("uid");
        node.running("whoami").await;
        let pods = node.pods();
        let params = LogParams { container: Some("c".into()), ..LogParams::default() };
        let log = eventually("the credentials in the log", Duration::from_secs(20), || async {
            pods.logs("whoami", &params).await.ok().filter(|l| l.contains("--end"))
        })
        .await;
        let (token, rest) = log.split_once("\n--namespace\n").expect("token, then the namespace");
        let (namespace, rest) = rest.split_once("\n--ca\n").expect("namespace, then the CA");
        let (ca, _) = rest.split_once("--end").expect("the CA, then the end");
        assert_eq!(namespace, "default");
        let cluster_ca = std::fs::read_to_string(server.pki.ca_cert()).expect("CA");
        assert_eq!(ca.trim(), cluster_ca.trim(), "ca.crt is the cluster CA");
        assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");

        // The volume is a tmpfs and the files carry the volume's mode (420 = 0644).
        let volume = pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).and_then(|v| v.first()).expect("volume");
        let volume_dir = node.ctx.config.pod_dir(&uid).join("volumes").join(&volume.name);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(&*volume_dir.display().to_string()))
            .expect("the token volume is a mount");
        assert!(line.contains("tmpfs"), "{line}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(volume_dir.join("token")).expect("token file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);

        // kubectl with nothing but the pod's token and CA: the server (verified with ca.crt)
        // knows who it is; it may not list pods (no RBAC for it), and says so by name.
        let ca_file = node.dir.path().join("pod-ca.crt");
        std::fs::write(&ca_file, ca).expect("ca file");
        let kubectl = |token: &str| {
            std::process::Command::new("kubectl")
                .env("KUBECONFIG", node.dir.path().join("no-kubeconfig"))
                .args(["--server", &server.url, "--token", token, "get", "pods"])
                .arg(format!("--certificate-authority={}", ca_file.display()))
                .output()
                .expect("kubectl")
        };
        let out = kubectl(token);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.contains("User \"system:serviceaccount:default:default\" cannot list resource \"pods\""),
            "{stderr}"
        );

        pods.delete("whoami", &DeleteParams::default()).await.expect("delete");
        node.gone("whoami").await;
        let stderr = String::from_utf8_lossy(&kubectl(token).stderr).into_owned();
        assert!(stderr.contains("Unauthorized"), "a token bound to a deleted pod: {stderr}");
        node.assert_clean().await;
        let _ = stop_logs.send(());
        logs.await.expect("log endpoint");
        let _ = stop.send(());
        agent.await.expect("agent");
    });
}
