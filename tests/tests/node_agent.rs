//! The agent's node half against a real skiff-control: registration with the host's capacity
//! and conditions, the lease heartbeat, and routes to other nodes' pod CIDRs following the Node
//! objects inside a node namespace.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use skiff_agent::kubelet::{
    self,
    node::{NodeAgent, NodeConfig},
};
use skiff_control::local::LocalServer;
use skiff_tests::NetNs;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

async fn client(server: &LocalServer) -> Client {
    server.client().await.expect("admin client")
}

/// Polls `check` every 20 ms for up to 10 s; panics naming `what` after that.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, check: impl FnMut() -> F) -> T {
    let found = common::poll(Duration::from_secs(10), Duration::from_millis(20), check).await;
    found.unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

fn condition(node: &Node, kind: &str) -> (String, String, String) {
    let c = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == kind))
        .unwrap_or_else(|| panic!("no {kind} condition"));
    let since = c.last_transition_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    (c.status.clone(), c.reason.clone().unwrap_or_default(), since)
}

#[test]
fn a_node_registers_heartbeats_and_reports_its_conditions() {
    let dir = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let server = LocalServer::start(dir.path(), 1000).await.expect("server");
        let client = client(&server).await;
        let mut config = NodeConfig::new("node-a", Ipv4Addr::new(192, 168, 77, 1));
        config.pod_cidr = Some("10.244.1.0/24".into());
        config.data_dir = dir.path().to_owned();
        config.heartbeat = Duration::from_millis(100);
        let agent = NodeAgent::new(client.clone(), config);
        let node = agent.register(true).await.expect("register");

        let status = node.status.clone().expect("status");
        let cpus = std::thread::available_parallelism().expect("cpus").get().to_string();
        assert_eq!(status.capacity.as_ref().expect("capacity")["cpu"].0, cpus);
        assert_eq!(status.allocatable.as_ref().expect("allocatable")["pods"].0, "110");
        let addresses = status.addresses.expect("addresses");
        assert!(addresses.iter().any(|a| a.type_ == "InternalIP" && a.address == "192.168.77.1"));
        assert_eq!(node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()), Some("10.244.1.0/24"));
        assert_eq!(node.metadata.labels.as_ref().expect("labels")["kubernetes.io/hostname"], "node-a");
        let (ready, reason, _) = condition(&node, "Ready");
        assert_eq!((ready.as_str(), reason.as_str()), ("True", "KubeletReady"));
        assert_eq!(condition(&node, "MemoryPressure").0, "False", "this machine has memory to spare");

        // The heartbeat: a lease owned by the node, renewed again and again.
        let ready_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = ready_flag.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let beat = agent.clone();
        let task = tokio::spawn(async move {
            beat.run(move || flag.load(std::sync::atomic::Ordering::Relaxed), async {
                let _ = stopped.await;
            })
            .await;
        });
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let renewed = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        let first = eventually("the lease", || async {
            leases.get_opt("node-a").await.ok().flatten().and_then(|l| renewed(&l))
        })
        .await;
        eventually("a renewal", || async {
            leases.get_opt("node-a").await.ok().flatten().and_then(|l| renewed(&l)).filter(|t| *t > first)
        })
        .await;
        let lease = leases.get("node-a").await.expect("lease");
        assert_eq!(lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()), Some("node-a"));
        assert_eq!(lease.metadata.owner_references.as_ref().map(|o| o[0].name.as_str()), Some("node-a"));

        // Not ready: the condition flips with a new transition time.
        let nodes: Api<Node> = Api::all(client.clone());
        let before = condition(&nodes.get("node-a").await.expect("node"), "Ready").2;
        ready_flag.store(false, std::sync::atomic::Ordering::Relaxed);
        let (_, reason, since) = eventually("Ready=False", || async {
            let n = nodes.get("node-a").await.ok()?;
            let c = condition(&n, "Ready");
            (c.0 == "False").then_some(c)
        })
        .await;
        assert_eq!(reason, "KubeletNotReady");
        assert!(since >= before, "{since} < {before}");
        let _ = stop.send(());
        task.await.expect("heartbeat loop");
    });
}

async fn add_node(nodes: &Api<Node>, name: &str, cidr: &str, ip: &str) {
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr}})).expect("node");
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    set_ip(nodes, name, ip).await;
}

async fn set_ip(nodes: &Api<Node>, name: &str, ip: &str) {
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("node status");
}

#[test]
fn routes_to_other_nodes_pods_follow_the_node_objects() {
    let dir = tempfile::tempdir().expect("tmp");
    let ns = NetNs::new("node-routes").expect("node namespace");
    ns.ip(&["link", "add", "uplink", "type", "veth", "peer", "name", "peer"]).expect("link");
    ns.ip(&["addr", "add", "192.168.77.1/24", "dev", "uplink"]).expect("addr");
    ns.ip(&["link", "set", "uplink", "up"]).expect("up");
    ns.ip(&["link", "set", "peer", "up"]).expect("up");
    ns.ip(&["route", "add", "10.99.0.0/16", "via", "192.168.77.9"]).expect("someone else's route");
    let rt = runtime();
    rt.block_on(async {
        let server = LocalServer::start(dir.path(), 1000).await.expect("server");
        let client = client(&server).await;
        // The netlink socket is made inside the node's namespace, and stays bound to it.
        let handle = tokio::runtime::Handle::current();
        let (connection, netlink, _) = ns
            .run(move || {
                let _in = handle.enter();
                rtnetlink::new_connection()
            })
            .expect("netns")
            .expect("netlink");
        tokio::spawn(connection);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let routes =
            tokio::spawn(kubelet::run_routes(client.clone(), netlink, "node-a".into(), None, async {
                let _ = stopped.await;
            }));

        let nodes: Api<Node> = Api::all(client.clone());
        add_node(&nodes, "node-a", "10.244.1.0/24", "192.168.77.1").await;
        add_node(&nodes, "node-b", "10.244.2.0/24", "192.168.77.2").await;
        add_node(&nodes, "node-c", "10.244.3.0/24", "192.168.77.3").await;
        let show = || ns.ip(&["route", "show", "proto", "196"]).expect("routes");
        let has = |want: &'static [&'static str]| {
            let show = &show;
            async move {
                let out = show();
                want.iter().all(|w| out.contains(w)).then_some(out)
            }
        };
        let out = eventually("routes to b and c", || {
            has(&["10.244.2.0/24 via 192.168.77.2", "10.244.3.0/24 via 192.168.77.3"])
        })
        .await;
        assert!(!out.contains("10.244.1.0"), "a route to this node's own pods: {out}");

        set_ip(&nodes, "node-c", "192.168.77.4").await;
        eventually("c's route moved", || has(&["10.244.3.0/24 via 192.168.77.4"])).await;
        nodes.delete("node-b", &DeleteParams::default()).await.expect("delete node");
        eventually("b's route gone", || async { (!show().contains("10.244.2.0")).then_some(()) }).await;
        assert!(
            ns.ip(&["route"]).expect("routes").contains("10.99.0.0/16 via 192.168.77.9"),
            "someone else's route was touched"
        );
        let _ = stop.send(());
        routes.await.expect("route loop");
    });
}
