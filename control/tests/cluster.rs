//! The whole control plane end to end: the API server and every control loop in-process, hollow
//! nodes standing in for agents, driven over HTTP by kube-rs and kubectl as a user would —
//! Deployments converging, spreading, scaling and rolling (within their surge and availability
//! bounds), nodes going silent and their pods moving, cascading deletion, EndpointSlices
//! following readiness and LoadBalancer addresses.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
    process::Output,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use common::hollow::{self, Hollow};
use futures::StreamExt as _;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;
use skiff_control::controllers::Config;

const NS: &str = "default";

/// How long a rollout or a convergence may take on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(30);

/// kubectl pointed at one server.
struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl on the blocking pool, so the server and the hollow agents (on this runtime's
    /// workers) go on serving it.
    async fn run(&self, args: &[&str]) -> Output {
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(args)
                .output()
                .expect("kubectl is installed (cargo xtask setup)")
        })
        .await
        .expect("kubectl task")
    }

    /// Runs kubectl, failing the test unless it succeeds; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl rollout status` of the Deployment `web`, which must report success.
    async fn rolled_out(&self) {
        let out = self.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]).await;
        assert!(out.contains("successfully rolled out"), "{out}");
    }
}

/// A server with its loops, hollow nodes registered with it, and kubectl for it. Dropping it
/// stops the agents, then the server, then removes its files.
struct Cluster {
    hollow: Hollow,
    kubectl: Kubectl,
    server: common::Server,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(loops: Config, nodes: &[&str], options: hollow::Options) -> Cluster {
        let server = common::start_with(1000, loops).await;
        let hollow = hollow::start(&server.client, nodes, json!({}), options).await;
        let dir = tempfile::tempdir().expect("tmp");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, &server.local.kubeconfig).expect("kubeconfig");
        Cluster { hollow, kubectl: Kubectl { kubeconfig }, server, dir }
    }

    fn client(&self) -> Client {
        self.server.client.clone()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client(), NS)
    }

    /// Applies `manifest` with kubectl.
    async fn apply(&self, manifest: &str) -> String {
        let path = self.dir.path().join("manifest.yaml");
        std::fs::write(&path, manifest).expect("manifest");
        self.kubectl.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]).await
    }

    /// The pods of the Deployment `web` not being deleted.
    async fn live_pods(&self) -> Vec<Pod> {
        let pods = self.api::<Pod>().list(&ListParams::default().labels("app=web")).await.expect("pods");
        pods.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
    }

    /// Waits until the Deployment `web` has rolled out to `replicas` Ready pods, every one of
    /// them (and no other, terminating or not) left; returns them.
    async fn converged(&self, replicas: i32) -> Vec<Pod> {
        let deployments = self.api::<Deployment>();
        let pods = self.api::<Pod>();
        let what = format!("web to converge on {replicas} Ready pods");
        common::eventually_within(&what, CONVERGE, || async {
            let d = deployments.get("web").await.ok()?;
            let status = d.status?;
            let observed = status.observed_generation >= d.metadata.generation;
            let counts =
                [status.replicas, status.updated_replicas, status.ready_replicas, status.available_replicas];
            if !observed || counts != [Some(replicas); 4] {
                return None;
            }
            let all = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
            let ready = all.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p)).count();
            (all.len() == usize::try_from(replicas).ok()? && ready == all.len()).then_some(all)
        })
        .await
    }
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

fn image(pod: &Pod) -> String {
    let container = pod.spec.as_ref().and_then(|s| s.containers.first());
    container.and_then(|c| c.image.clone()).unwrap_or_default()
}

fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

/// The Deployment `web` (pods labelled `app: web`, image `web:1`, port 8080) and a ClusterIP
/// Service `web` in front of it.
fn web(replicas: i32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxUnavailable: 1, maxSurge: 1}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: "web:1", ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"#
    )
}

/// The endpoints of the Service `web`'s slices: address → `conditions.ready`.
async fn endpoints(slices: &Api<EndpointSlice>) -> Option<BTreeMap<String, Option<bool>>> {
    let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await.ok()?;
    let mut found = BTreeMap::new();
    for endpoint in list.items.iter().flat_map(|s| s.endpoints.iter().flatten()) {
        let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
        for address in &endpoint.addresses {
            found.insert(address.clone(), ready);
        }
    }
    Some(found)
}

/// A 5-replica Deployment on 3 nodes: Ready, spread over all of them, reported rolled out by
/// kubectl, behind a Service whose EndpointSlice lists the 5 pods, and scaled down by kubectl.
#[test]
fn deployment_converges_spreads_serves_and_scales() {
    common::runtime().block_on(async {
        let c =
            Cluster::start(Config::default(), &["node-a", "node-b", "node-c"], hollow::Options::default())
                .await;
        let applied = c.apply(&web(5)).await;
        assert!(applied.contains("deployment.apps/web created"), "{applied}");

        let pods = c.converged(5).await;
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for pod in &pods {
            *per_node.entry(node_of(pod)).or_default() += 1;
        }
        let nodes: Vec<&str> = per_node.keys().map(String::as_str).collect();
        assert_eq!(nodes, ["node-a", "node-b", "node-c"], "not spread over every node: {per_node:?}");
        c.kubectl.rolled_out().await;

        // The slice lists exactly the pods' addresses, all ready.
        let ips: BTreeSet<String> = pods.iter().map(pod_ip).collect();
        assert_eq!(ips.len(), 5, "pods share addresses: {ips:?}");
        let slices = c.api::<EndpointSlice>();
        common::eventually("the slice to list the 5 pods, ready", || async {
            let found = endpoints(&slices).await?;
            let all_ready = found.values().all(|r| *r == Some(true));
            (found.keys().cloned().collect::<BTreeSet<_>>() == ips && all_ready).then_some(())
        })
        .await;
        let table = c.kubectl.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]).await;
        let rows: Vec<&str> = table.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "one slice expected: {table}");
        assert!(table.lines().next().is_some_and(|h| h.contains("ENDPOINTS")), "{table}");
        // kubectl shows three addresses and the count of the others.
        let shown: Vec<&String> = ips.iter().filter(|ip| rows[0].contains(ip.as_str())).collect();
        assert!(shown.len() == 3 && rows[0].contains("+ 2 more..."), "{table}");
        let json: serde_json::Value = serde_json::from_str(
            &c.kubectl
                .ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"])
                .await,
        )
        .expect("json");
        let listed: BTreeSet<String> = json["items"][0]["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
            .collect();
        assert_eq!(listed, ips);

        let scaled = c.kubectl.ok(&["scale", "deployment/web", "--replicas=3"]).await;
        assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
        let left = c.converged(3).await;
        assert!(left.iter().all(|p| ips.contains(&pod_ip(p))), "scaling down replaced pods");
        c.kubectl.rolled_out().await;
        let table = c.kubectl.ok(&["get", "deployment", "web"]).await;
        assert!(table.lines().nth(1).is_some_and(|row| row.contains("3/3")), "{table}");
    });
}

/// What a watch on the Deployment's pods saw, at every change.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The watch has listed the pods and follows them.
    synced: bool,
    /// Fewest Ready pods not being deleted.
    min_ready: usize,
    /// Most pods not being deleted.
    max_live: usize,
    /// Every pod uid seen.
    uids: BTreeSet<String>,
}

/// Watches the Deployment `web`'s pods until dropped, recording [`Seen`].
struct PodWatch {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    async fn start(pods: Api<Pod>) -> PodWatch {
        let seen = Arc::new(Mutex::new(Seen { min_ready: usize::MAX, ..Seen::default() }));
        let task = tokio::spawn(watch_pods(pods, seen.clone()));
        let watch = PodWatch { seen, task };
        common::eventually("the pod watch to sync", || async { watch.seen().synced.then_some(()) }).await;
        watch
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Forgets the extremes seen so far.
    fn reset(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.min_ready = usize::MAX;
        seen.max_live = 0;
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch_pods(pods: Api<Pod>, seen: Arc<Mutex<Seen>>) {
    let mut events = watcher(pods, watcher::Config::default().labels("app=web")).default_backoff().boxed();
    // The state the watch has delivered, and the one being relisted (after an error).
    let mut current: HashMap<String, Pod> = HashMap::new();
    let mut relisting: HashMap<String, Pod> = HashMap::new();
    let mut listing = true;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                listing = true;
                relisting.clear();
            }
            Ok(watcher::Event::InitApply(pod)) => {
                relisting.insert(uid(&pod), pod);
            }
            Ok(watcher::Event::InitDone) => {
                listing = false;
                current = std::mem::take(&mut relisting);
            }
            Ok(watcher::Event::Apply(pod)) => {
                current.insert(uid(&pod), pod);
            }
            Ok(watcher::Event::Delete(pod)) => {
                current.remove(&uid(&pod));
            }
            Err(e) => {
                eprintln!("pod watch: {e}");
                continue;
            }
        }
        if listing {
            continue;
        }
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.synced = true;
        let live: Vec<&Pod> = current.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let ready = live.iter().filter(|p| is_ready(p)).count();
        seen.min_ready = seen.min_ready.min(ready);
        seen.max_live = seen.max_live.max(live.len());
        seen.uids.extend(current.keys().cloned());
    }
}

/// A rolling update (maxUnavailable 1, maxSurge 1) of 5 replicas, watched pod by pod: never
/// fewer than 4 Ready pods nor more than 6 live ones; then kubectl's undo (back to the first
/// image, as revision 3), history and restart.
#[test]
fn rolling_update_keeps_within_bounds_and_kubectl_undoes_and_restarts_it() {
    common::runtime().block_on(async {
        let options =
            hollow::Options { start_delay: Duration::from_millis(200), ..hollow::Options::default() };
        let c = Cluster::start(Config::default(), &["node-a", "node-b", "node-c"], options).await;
        c.apply(&web(5)).await;
        let first = c.converged(5).await;
        c.kubectl.rolled_out().await;

        let watch = PodWatch::start(c.api::<Pod>()).await;
        let out = c.kubectl.ok(&["set", "image", "deployment/web", "web=web:2"]).await;
        assert!(out.contains("image updated"), "{out}");
        c.kubectl.rolled_out().await;
        let second = c.converged(5).await;
        assert!(
            second.iter().all(|p| image(p) == "web:2"),
            "{:?}",
            second.iter().map(image).collect::<Vec<_>>()
        );
        let seen = watch.seen();
        // Every pod was replaced, and the watch saw all of them.
        let firsts: BTreeSet<String> = first.iter().map(uid).collect();
        assert!(second.iter().all(|p| !firsts.contains(&uid(p))), "pods kept across a template change");
        assert!(
            seen.uids.is_superset(&firsts) && second.iter().all(|p| seen.uids.contains(&uid(p))),
            "{seen:?}"
        );
        assert!(seen.min_ready >= 4, "only {} Ready pods at one point (maxUnavailable 1)", seen.min_ready);
        assert!(seen.max_live <= 6, "{} live pods at one point (maxSurge 1)", seen.max_live);

        watch.reset();
        let out = c.kubectl.ok(&["rollout", "undo", "deployment/web"]).await;
        assert!(out.contains("rolled back"), "{out}");
        c.kubectl.rolled_out().await;
        let third = c.converged(5).await;
        assert!(
            third.iter().all(|p| image(p) == "web:1"),
            "{:?}",
            third.iter().map(image).collect::<Vec<_>>()
        );
        let seen = watch.seen();
        assert!(seen.min_ready >= 4 && seen.max_live <= 6, "undo out of bounds: {seen:?}");

        let history = c.kubectl.ok(&["rollout", "history", "deployment/web"]).await;
        let revisions: Vec<&str> = history
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert_eq!(revisions, ["2", "3"], "{history}");
        let deployment = c.api::<Deployment>().get("web").await.expect("web");
        let revision =
            deployment.metadata.annotations.as_ref().and_then(|a| a.get("deployment.kubernetes.io/revision"));
        assert_eq!(revision.map(String::as_str), Some("3"));

        watch.reset();
        let out = c.kubectl.ok(&["rollout", "restart", "deployment/web"]).await;
        assert!(out.contains("restarted"), "{out}");
        c.kubectl.rolled_out().await;
        let fourth = c.converged(5).await;
        let thirds: BTreeSet<String> = third.iter().map(uid).collect();
        assert!(fourth.iter().all(|p| !thirds.contains(&uid(p)) && image(p) == "web:1"), "restart kept pods");
        let seen = watch.seen();
        assert!(seen.min_ready >= 4 && seen.max_live <= 6, "restart out of bounds: {seen:?}");
        let history = c.kubectl.ok(&["rollout", "history", "deployment/web"]).await;
        assert!(history.lines().any(|l| l.starts_with("4 ")), "{history}");
    });
}

fn ready_condition(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

fn taints(node: &Node) -> BTreeSet<(String, String)> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    taints.into_iter().flatten().map(|t| (t.key.clone(), t.effect.clone())).collect()
}

/// A node whose agent stops heartbeating turns Ready=Unknown, is tainted unreachable, and its
/// pods are evicted and replaced on the nodes still alive.
#[test]
fn silent_node_is_tainted_and_its_pods_move() {
    common::runtime().block_on(async {
        let loops = Config {
            node_monitor_grace: Duration::from_secs(2),
            default_toleration: Duration::from_secs(1),
            ..Config::default()
        };
        let c = Cluster::start(loops, &["node-a", "node-b", "node-c"], hollow::Options::default()).await;
        c.apply(&web(6)).await;
        let pods = c.converged(6).await;
        let on_b: BTreeSet<String> = pods.iter().filter(|p| node_of(p) == "node-b").map(name).collect();
        assert!(
            !on_b.is_empty(),
            "nothing scheduled on node-b: {:?}",
            pods.iter().map(node_of).collect::<Vec<_>>()
        );

        c.hollow.stop("node-b");
        let nodes: Api<Node> = Api::all(c.client());
        let unreachable = [
            ("node.kubernetes.io/unreachable".to_owned(), "NoExecute".to_owned()),
            ("node.kubernetes.io/unreachable".to_owned(), "NoSchedule".to_owned()),
        ];
        common::eventually("node-b to be Unknown and tainted unreachable", || async {
            let node = nodes.get("node-b").await.ok()?;
            (ready_condition(&node).as_deref() == Some("Unknown")
                && taints(&node) == BTreeSet::from(unreachable.clone()))
            .then_some(())
        })
        .await;

        // Its pods are evicted (they stay terminating: no agent finishes them) and replaced.
        let all_pods = c.api::<Pod>();
        common::eventually_within("node-b's pods to be evicted", CONVERGE, || async {
            let list = all_pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
            let evicted =
                list.iter().filter(|p| on_b.contains(&name(p)) && p.metadata.deletion_timestamp.is_some());
            (evicted.count() == on_b.len()).then_some(())
        })
        .await;
        let deployments = c.api::<Deployment>();
        let live = common::eventually_within("6 Ready replicas on the live nodes", CONVERGE, || async {
            let status = deployments.get("web").await.ok()?.status?;
            let live = c.live_pods().await;
            let ready_live = live.iter().filter(|p| is_ready(p) && node_of(p) != "node-b").count();
            (status.ready_replicas == Some(6) && status.available_replicas == Some(6) && ready_live == 6)
                .then_some(live)
        })
        .await;
        assert_eq!(live.len(), 6, "{:?}", live.iter().map(name).collect::<Vec<_>>());
        assert!(live.iter().all(|p| node_of(p) != "node-b"));

        // The nodes still heartbeating were left alone.
        for name in ["node-a", "node-c"] {
            let node = nodes.get(name).await.expect("node");
            assert_eq!(ready_condition(&node).as_deref(), Some("True"), "{name}");
            assert!(taints(&node).is_empty(), "{name}: {:?}", taints(&node));
        }
    });
}

/// Deleting a Deployment with background propagation takes its ReplicaSets and pods with it.
#[test]
fn background_deletion_of_a_deployment_removes_its_replicasets_and_pods() {
    common::runtime().block_on(async {
        let c = Cluster::start(Config::default(), &["node-a", "node-b"], hollow::Options::default()).await;
        c.apply(&web(3)).await;
        c.converged(3).await;
        let replicasets = c.api::<ReplicaSet>();
        assert_eq!(replicasets.list(&ListParams::default()).await.expect("list").items.len(), 1);

        c.api::<Deployment>().delete("web", &DeleteParams::background()).await.expect("delete");
        let (deployments, pods) = (c.api::<Deployment>(), c.api::<Pod>());
        common::eventually_within("the Deployment, its ReplicaSet and pods to be gone", CONVERGE, || async {
            let d = deployments.list(&ListParams::default()).await.ok()?.items;
            let rs = replicasets.list(&ListParams::default()).await.ok()?.items;
            let p = pods.list(&ListParams::default()).await.ok()?.items;
            (d.is_empty() && rs.is_empty() && p.is_empty()).then_some(())
        })
        .await;
        // The Service, which the Deployment does not own, stays.
        let service = c.api::<Service>().get("web").await.expect("the Service stays");
        assert!(service.metadata.deletion_timestamp.is_none());
    });
}

/// A pod turning unready is marked so in its Service's EndpointSlice, and back when it recovers.
#[test]
fn endpointslices_follow_pod_readiness() {
    common::runtime().block_on(async {
        let c = Cluster::start(Config::default(), &["node-a", "node-b"], hollow::Options::default()).await;
        c.apply(&web(3)).await;
        let pods = c.converged(3).await;
        let ips: BTreeSet<String> = pods.iter().map(pod_ip).collect();
        let slices = c.api::<EndpointSlice>();
        let expect = |unready: Option<String>| {
            let ips = ips.clone();
            let slices = slices.clone();
            async move {
                let what = format!("the slice to list {ips:?} ready except {unready:?}");
                common::eventually(&what, || async {
                    let found = endpoints(&slices).await?;
                    let want: BTreeMap<String, Option<bool>> =
                        ips.iter().map(|ip| (ip.clone(), Some(Some(ip) != unready.as_ref()))).collect();
                    (found == want).then_some(())
                })
                .await;
            }
        };
        expect(None).await;

        let target = &pods[1];
        c.hollow.set_ready(NS, &name(target), false).await;
        expect(Some(pod_ip(target))).await;
        c.hollow.set_ready(NS, &name(target), true).await;
        expect(None).await;
    });
}

/// A LoadBalancer Service gets the first free address of the pool, which kubectl shows as its
/// EXTERNAL-IP; the next one gets the next address.
#[test]
fn load_balancer_service_gets_an_address_from_the_pool() {
    common::runtime().block_on(async {
        let pool = vec![(Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 20))];
        let loops = Config { lb_pool: pool, ..Config::default() };
        let c = Cluster::start(loops, &["node-a"], hollow::Options::default()).await;
        let services = c.api::<Service>();
        for name in ["edge", "edge-2"] {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
            }))
            .expect("service");
            services.create(&PostParams::default(), &svc).await.expect("create");
            let ip = common::eventually(&format!("{name} to get an address"), || async {
                let svc = services.get(name).await.ok()?;
                let ingress = svc.status?.load_balancer?.ingress?;
                ingress.first()?.ip.clone()
            })
            .await;
            let want = if name == "edge" { "192.0.2.10" } else { "192.0.2.11" };
            assert_eq!(ip, want, "{name}");
        }

        let table = c.kubectl.ok(&["get", "svc", "edge"]).await;
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
        let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
        let column = |title: &str| header.iter().position(|h| *h == title).and_then(|i| row.get(i).copied());
        assert_eq!(column("TYPE"), Some("LoadBalancer"), "{table}");
        assert_eq!(column("EXTERNAL-IP"), Some("192.0.2.10"), "{table}");
    });
}

const DAEMON: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "agent:1"}]
"#;

#[test]
fn a_daemon_set_runs_one_pod_per_node_and_kubectl_sees_it_rolled_out() {
    common::runtime().block_on(async {
        let c =
            Cluster::start(Config::default(), &["node-a", "node-b", "node-c"], hollow::Options::default())
                .await;
        c.apply(DAEMON).await;
        let out = c.kubectl.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]).await;
        assert!(out.contains("successfully rolled out"), "{out}");
        let pods = c.api::<Pod>().list(&ListParams::default().labels("app=agent")).await.expect("pods").items;
        let nodes: BTreeSet<String> = pods.iter().map(node_of).collect();
        assert_eq!(pods.len(), 3, "one pod per node");
        assert_eq!(nodes, BTreeSet::from(["node-a".into(), "node-b".into(), "node-c".into()]));

        // A new image rolls node by node; kubectl waits for it.
        c.kubectl.ok(&["set", "image", "daemonset/agent", "agent=agent:2"]).await;
        let out = c.kubectl.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]).await;
        assert!(out.contains("successfully rolled out"), "{out}");
        let pods = c.api::<Pod>().list(&ListParams::default().labels("app=agent")).await.expect("pods").items;
        let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        assert_eq!(live.len(), 3);
        assert!(live.iter().all(|p| image(p) == "agent:2"), "every node runs the new image");
    });
}

/// `kubectl cordon`, `drain --ignore-daemonsets` and `uncordon` with a PodDisruptionBudget of
/// minAvailable 2 over 3 replicas: the drain evicts one pod at a time, waiting (429s it retries)
/// until the replacement is Ready elsewhere, and Ready replicas never drop below 2.
#[test]
fn drain_evicts_one_at_a_time_within_the_disruption_budget() {
    common::runtime().block_on(async {
        let options =
            hollow::Options { start_delay: Duration::from_millis(500), ..hollow::Options::default() };
        let c = Cluster::start(Config::default(), &["node-a", "node-b"], options).await;
        // Everything on node-a first: node-b cordoned while the Deployment rolls out.
        c.kubectl.ok(&["cordon", "node-b"]).await;
        c.apply(&web(3)).await;
        let pods = c.converged(3).await;
        assert!(
            pods.iter().all(|p| node_of(p) == "node-a"),
            "{:?}",
            pods.iter().map(node_of).collect::<Vec<_>>()
        );
        c.apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\n\
             spec: {minAvailable: 2, selector: {matchLabels: {app: web}}}\n",
        )
        .await;
        // The disruption loop fills in the budget's status before any eviction.
        common::eventually_within("the budget's status", CONVERGE, || async {
            let table = c.kubectl.ok(&["get", "pdb", "web", "--no-headers"]).await;
            let cells: Vec<&str> = table.split_whitespace().collect();
            (cells.get(1..4) == Some(&["2", "N/A", "1"][..])).then_some(())
        })
        .await;
        c.kubectl.ok(&["uncordon", "node-b"]).await;

        // Watch the Ready count while kubectl drains node-a.
        let (done, mut finished) = tokio::sync::watch::channel(false);
        let watcher = {
            let pods = c.api::<Pod>();
            tokio::spawn(async move {
                let mut lowest = usize::MAX;
                while !*finished.borrow_and_update() {
                    if let Ok(list) = pods.list(&ListParams::default().labels("app=web")).await {
                        let ready = list
                            .items
                            .iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                            .count();
                        lowest = lowest.min(ready);
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(50), finished.changed()).await;
                }
                lowest
            })
        };
        let out = c.kubectl.run(&["drain", "node-a", "--ignore-daemonsets", "--timeout=120s"]).await;
        let _ = done.send(true);
        let lowest = watcher.await.expect("watcher");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "drain failed: {text}");
        assert!(
            text.contains("would violate the pod's disruption budget"),
            "the drain never had to wait: {text}"
        );
        assert!(lowest >= 2, "Ready replicas fell to {lowest} during the drain");
        let nodes: Api<Node> = Api::all(c.client());
        let a = nodes.get("node-a").await.expect("node-a");
        assert_eq!(a.spec.and_then(|s| s.unschedulable), Some(true), "drain cordons");
        let pods = c.converged(3).await;
        assert!(
            pods.iter().all(|p| node_of(p) == "node-b"),
            "{:?}",
            pods.iter().map(node_of).collect::<Vec<_>>()
        );
        c.kubectl.ok(&["uncordon", "node-a"]).await;
        let a = nodes.get("node-a").await.expect("node-a");
        assert_ne!(a.spec.and_then(|s| s.unschedulable), Some(true), "uncordoned");
    });
}

/// maxUnavailable 1 over 3 pods, through the eviction API: once one is evicted (and stays
/// terminating: its node's agent is stopped), a second eviction is refused (429) — the terminating
/// pod still counts towards the total the budget applies to.
#[test]
fn a_max_unavailable_budget_allows_one_eviction_at_a_time() {
    common::runtime().block_on(async {
        let c = Cluster::start(Config::default(), &["node-a"], hollow::Options::default()).await;
        let api = c.api::<Pod>();
        for i in 0..3 {
            let pod = json!({"metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}});
            api.create(&Default::default(), &serde_json::from_value(pod).expect("pod"))
                .await
                .expect("create");
        }
        common::eventually_within("3 Ready pods", CONVERGE, || async {
            let pods = api.list(&ListParams::default().labels("app=web")).await.ok()?.items;
            (pods.iter().filter(|p| is_ready(p)).count() == 3).then_some(())
        })
        .await;
        c.apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\n\
             spec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}\n",
        )
        .await;
        // Nothing finishes deletions any more: an evicted pod stays terminating.
        c.hollow.stop("node-a");
        api.evict("web-0", &Default::default()).await.expect("the first eviction is allowed");
        match api.evict("web-1", &Default::default()).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 429, "{s:?}");
                assert!(s.message.contains("disruption budget"), "{s:?}");
            }
            other => panic!("a second eviction while one pod is still going: {other:?}"),
        }
    });
}

/// The Job's pods, finished or not.
async fn job_pods(c: &Cluster, job: &str) -> Vec<Pod> {
    let selector = format!("batch.kubernetes.io/job-name={job}");
    c.api::<Pod>().list(&ListParams::default().labels(&selector)).await.expect("pods").items
}

fn phase(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()
}

/// A Job of 5 completions, 2 at a time, applied with kubectl and awaited with `kubectl wait
/// --for=condition=complete`; a watch of its pods checks that no more than 2 ever ran at once.
/// Then a Job whose pods fail stops at its backoffLimit (`kubectl wait --for=condition=failed`).
#[test]
fn kubectl_runs_jobs_to_completion_and_to_their_backoff_limit() {
    common::runtime().block_on(async {
        let options =
            hollow::Options { start_delay: Duration::from_millis(300), ..hollow::Options::default() };
        let c = Cluster::start(Config::default(), &["node-a", "node-b"], options).await;
        let running_at_once = Arc::new(Mutex::new((HashSet::<String>::new(), 0usize)));
        let watch = {
            let (pods, seen) = (c.api::<Pod>(), running_at_once.clone());
            let config = watcher::Config::default().labels("batch.kubernetes.io/job-name=pi");
            tokio::spawn(async move {
                let mut events = watcher(pods, config).default_backoff().applied_objects().boxed();
                while let Some(Ok(pod)) = events.next().await {
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    let active = !matches!(phase(&pod).as_str(), "Succeeded" | "Failed")
                        && pod.metadata.deletion_timestamp.is_none();
                    if active { seen.0.insert(name(&pod)) } else { seen.0.remove(&name(&pod)) };
                    seen.1 = seen.1.max(seen.0.len());
                }
            })
        };
        c.apply(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: pi}\n\
             spec:\n  completions: 5\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      \
             containers: [{name: pi, image: busybox, command: [sh, -c, 'echo 3.14159']}]\n",
        )
        .await;
        let out = c.kubectl.ok(&["wait", "--for=condition=complete", "job/pi", "--timeout=60s"]).await;
        assert!(out.contains("condition met"), "{out}");
        watch.abort();
        let most = running_at_once.lock().unwrap_or_else(PoisonError::into_inner).1;
        assert!((1..=2).contains(&most), "{most} pods ran at once with parallelism 2");
        let pods = job_pods(&c, "pi").await;
        assert_eq!(pods.len(), 5, "one pod per completion");
        assert!(pods.iter().all(|p| phase(p) == "Succeeded"));
        let table = c.kubectl.ok(&["get", "job", "pi"]).await;
        assert!(table.contains("Complete") && table.contains("5/5"), "{table}");

        c.apply(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: bad}\n\
             spec:\n  backoffLimit: 1\n  template:\n    spec:\n      restartPolicy: Never\n      \
             containers: [{name: bad, image: busybox, command: [sh, -c, 'exit 1']}]\n",
        )
        .await;
        c.kubectl.ok(&["wait", "--for=condition=failed", "job/bad", "--timeout=60s"]).await;
        let reason =
            c.kubectl.ok(&["get", "job", "bad", "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}"]).await;
        assert_eq!(reason, "BackoffLimitExceeded");
        let pods = job_pods(&c, "bad").await;
        assert_eq!(pods.len(), 2, "backoffLimit 1: the first pod and one retry");
        assert!(pods.iter().all(|p| phase(p) == "Failed"));
        let described = c.kubectl.ok(&["describe", "job", "bad"]).await;
        assert!(described.contains("BackoffLimitExceeded"), "{described}");
    });
}

/// CronJobs through kubectl: created with `kubectl create cronjob`, listed with their schedule,
/// a bad schedule refused with 422, and `kubectl create job --from=cronjob/…` running its
/// template to completion. (Scheduled runs are tested on a hand-moved clock in `loops`.)
#[test]
fn kubectl_creates_cronjobs_and_runs_one_by_hand() {
    common::runtime().block_on(async {
        let c = Cluster::start(Config::default(), &["node-a"], hollow::Options::default()).await;
        c.kubectl
            .ok(&["create", "cronjob", "nightly", "--image=busybox", "--schedule=30 2 * * *", "--", "date"])
            .await;
        let table = c.kubectl.ok(&["get", "cronjobs"]).await;
        assert!(table.contains("nightly") && table.contains("30 2 * * *"), "{table}");
        let bad =
            c.kubectl.run(&["create", "cronjob", "typo", "--image=busybox", "--schedule=61 * * * *"]).await;
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            !bad.status.success() && err.contains("spec.schedule") && err.contains("out of range"),
            "{err}"
        );
        c.kubectl.ok(&["create", "job", "by-hand", "--from=cronjob/nightly"]).await;
        c.kubectl.ok(&["wait", "--for=condition=complete", "job/by-hand", "--timeout=60s"]).await;
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = c.api();
        let job = jobs.get("by-hand").await.expect("job");
        let owner = job.metadata.owner_references.unwrap_or_default();
        assert_eq!(
            owner.first().map(|o| o.kind.as_str()),
            Some("CronJob"),
            "kubectl links it to the CronJob"
        );
        assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));
    });
}

/// `kubectl delete node` evacuates the node: its pods (no agent will ever finish them) are
/// deleted once the node has been gone for the grace period, and their Deployment runs them on
/// the node that is left.
#[test]
fn kubectl_delete_node_moves_its_pods_elsewhere() {
    common::runtime().block_on(async {
        let loops = Config { node_monitor_grace: Duration::from_secs(2), ..Config::default() };
        let c = Cluster::start(loops, &["node-a", "node-b"], hollow::Options::default()).await;
        c.kubectl.ok(&["cordon", "node-b"]).await;
        c.apply(&web(3)).await;
        let before = c.converged(3).await;
        assert!(before.iter().all(|p| node_of(p) == "node-a"));
        c.kubectl.ok(&["uncordon", "node-b"]).await;
        c.hollow.stop("node-a");
        let out = c.kubectl.ok(&["delete", "node", "node-a"]).await;
        assert!(out.contains("deleted"), "{out}");
        let after = common::eventually_within("web to run on node-b only", CONVERGE, || async {
            let pods = c.converged(3).await;
            pods.iter().all(|p| node_of(p) == "node-b").then_some(pods)
        })
        .await;
        let old: BTreeSet<String> = before.iter().map(uid).collect();
        assert!(after.iter().all(|p| !old.contains(&uid(p))), "replacements, not the old pods");
        let nodes = c.kubectl.ok(&["get", "nodes", "-o", "name"]).await;
        assert_eq!(nodes.trim(), "node/node-b");
    });
}
