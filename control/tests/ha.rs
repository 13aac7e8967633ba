//! Two `skiff-control serve` processes on one etcd (started for the test): one cluster seen
//! through either API server, addresses unique across both, and the control loops on one of
//! them at a time, handed over when the leader dies.

mod common;

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use common::etcd::Etcd;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Service};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::json;
use skiff_control::pki::{InitConfig, Pki};

/// One API server process.
struct ApiServer {
    child: Child,
    url: String,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ApiServer {
    fn start(etcd: &Etcd, pki: &Pki, dir: &Path, identity: &str) -> ApiServer {
        let (child, addr) = common::spawn_serve(|cmd| {
            cmd.args(["--etcd-servers", &etcd.endpoint(), "--leader-identity", identity]);
            cmd.arg("--data-dir").arg(dir.join(identity)).arg("--pki-dir").arg(pki.root());
        });
        ApiServer { url: format!("https://{addr}"), child }
    }

    async fn client(&self, pki: &Pki) -> Client {
        common::client_from(&pki.admin_kubeconfig(), Some(&self.url)).await
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn nodeport_service(name: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"type": "NodePort",
        "selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}))
    .expect("service")
}

/// The holder of the control loops' Lease, as `api` sees it.
async fn leader(api: &Api<Lease>) -> Option<String> {
    api.get_opt("skiff-control").await.ok().flatten().and_then(|l| l.spec?.holder_identity)
}

#[test]
fn two_api_servers_on_one_etcd_serve_one_cluster_and_hand_the_loops_over() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path().join("pki"));
    pki.init(&InitConfig::default()).expect("init");
    let mut servers =
        vec![ApiServer::start(&etcd, &pki, dir.path(), "a"), ApiServer::start(&etcd, &pki, dir.path(), "b")];
    runtime().block_on(async {
        let (a, b) = (servers[0].client(&pki).await, servers[1].client(&pki).await);
        // Services created through both at once: every ClusterIP and node port once.
        let mut creates = Vec::new();
        for i in 0..24 {
            let client = if i % 2 == 0 { a.clone() } else { b.clone() };
            creates.push(tokio::spawn(async move {
                Api::<Service>::namespaced(client, "default")
                    .create(&PostParams::default(), &nodeport_service(&format!("s{i}")))
                    .await
                    .expect("create")
            }));
        }
        for c in creates {
            c.await.expect("join");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen_by_b = loop {
            let list = Api::<Service>::namespaced(b.clone(), "default")
                .list(&ListParams::default())
                .await
                .expect("list");
            if list.items.len() == 25 || Instant::now() > deadline {
                break list.items;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(seen_by_b.len(), 25, "24 Services and `kubernetes`, through either server");
        let ips: std::collections::HashSet<String> =
            seen_by_b.iter().filter_map(|s| s.spec.as_ref()?.cluster_ip.clone()).collect();
        assert_eq!(ips.len(), 25, "ClusterIPs are unique across both API servers");
        let ports: std::collections::HashSet<i32> = seen_by_b
            .iter()
            .flat_map(|s| s.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default())
            .filter_map(|p| p.node_port)
            .collect();
        assert_eq!(ports.len(), 24, "node ports are unique across both API servers");

        // One leader for the loops; kill it and the other takes over within the lease time.
        let leases: Api<Lease> = Api::namespaced(a.clone(), "kube-system");
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            if let Some(holder) = leader(&leases).await {
                break holder;
            }
            assert!(Instant::now() < deadline, "nobody took the lease");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (dead, survivor) = if first == "a" { (0, 1) } else { (1, 0) };
        let survivor_client = servers[survivor].client(&pki).await;
        servers[dead].child.kill().expect("SIGKILL the leader");
        let killed = Instant::now();
        let leases: Api<Lease> = Api::namespaced(survivor_client.clone(), "kube-system");
        let next = loop {
            match leader(&leases).await {
                Some(holder) if holder != first => break holder,
                _ => {}
            }
            assert!(killed.elapsed() < Duration::from_secs(25), "no handover after the leader died");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let handover = killed.elapsed();
        eprintln!("leader {first} killed; {next} took over after {handover:?}");
        // The Lease (15 s) was renewed at most one retry period (2 s) before the kill.
        assert!(handover <= Duration::from_secs(16), "{handover:?}");
        // The loops run on the survivor: a Service gets its EndpointSlice.
        Api::<Service>::namespaced(survivor_client.clone(), "default")
            .create(&PostParams::default(), &nodeport_service("after"))
            .await
            .expect("create after the handover");
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(survivor_client, "default");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=after"))
                .await
                .expect("slices");
            if !found.items.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "the survivor's loops made no EndpointSlice");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    drop(servers);
}
