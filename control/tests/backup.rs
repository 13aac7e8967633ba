//! `skiff-control backup` and `restore` on both backends: a cluster's Nodes, pods, Services (with
//! their ClusterIPs and node ports) and EndpointSlices come back as they were after the store is
//! destroyed, and the restored cluster goes on allocating around what it holds.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use common::etcd::Etcd;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};
use skiff_control::pki::{InitConfig, Pki};

/// A `serve` process with its admin kubeconfig.
struct Control {
    child: Child,
    kubeconfig: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Control {
    fn start(dir: &Path, pki: &Pki, etcd: Option<&Etcd>) -> Control {
        let kubeconfig = dir.join("admin.kubeconfig");
        let (child, _) = common::spawn_serve(|cmd| {
            cmd.arg("--data-dir").arg(dir.join("data")).arg("--pki-dir").arg(pki.root());
            cmd.arg("--write-kubeconfig").arg(&kubeconfig);
            if let Some(etcd) = etcd {
                cmd.args(["--etcd-servers", &etcd.endpoint()]);
            }
        });
        Control { child, kubeconfig }
    }

    async fn client(&self) -> Client {
        common::client_from(&self.kubeconfig, None).await
    }
}

fn skiff_control(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skiff-control")).args(args).output().expect("skiff-control")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn create<K>(api: &Api<K>, object: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(object).expect("object"))
        .await
        .expect("create");
}

/// A Node, a pod bound to it, a NodePort Service selecting it, and (from the control loops) its
/// EndpointSlice.
async fn populate(client: &Client) {
    create(&Api::<Node>::all(client.clone()), json!({"metadata": {"name": "n1"}})).await;
    create(
        &Api::<Pod>::namespaced(client.clone(), "default"),
        json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    create(
        &Api::<Service>::namespaced(client.clone(), "default"),
        json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "selector": {"app": "web"},
               "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    while slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("slices")
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no EndpointSlice for web");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per object (kind/namespace/name): uid, resourceVersion, and for Services ClusterIP and node
/// ports.
async fn identities(client: &Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (kind, path) in [
        ("Node", "/api/v1/nodes"),
        ("Pod", "/api/v1/pods"),
        ("Service", "/api/v1/services"),
        ("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices"),
    ] {
        let request = http::Request::get(path).body(Vec::new()).expect("request");
        let list: Value = client.request(request).await.expect("list");
        for item in list["items"].as_array().expect("items") {
            let m = &item["metadata"];
            let key = format!(
                "{kind}/{}/{}",
                m["namespace"].as_str().unwrap_or("-"),
                m["name"].as_str().unwrap_or("?")
            );
            let ports: Vec<String> = item["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["nodePort"].to_string())
                .collect();
            let value = format!(
                "{} {} {} {}",
                m["uid"],
                m["resourceVersion"],
                item["spec"]["clusterIP"],
                ports.join(",")
            );
            out.insert(key, value);
        }
    }
    out
}

/// Every object of `before` is there as it was, and new Services are allocated around them.
async fn came_back(control: &Control, before: &BTreeMap<String, String>) {
    let client = control.client().await;
    let after = identities(&client).await;
    for (name, identity) in before {
        assert_eq!(after.get(name), Some(identity), "{name}");
    }
    allocates_around_what_it_holds(&client, before).await;
}

/// A NodePort Service created after the restore: its ClusterIP and node port are not ones the
/// restored cluster holds.
async fn allocates_around_what_it_holds(client: &Client, before: &BTreeMap<String, String>) {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let fresh = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "later"}, "spec": {"type": "NodePort",
                "ports": [{"port": 80}]}}))
            .expect("service"),
        )
        .await
        .expect("create after the restore");
    let spec = fresh.spec.expect("spec");
    let ip = spec.cluster_ip.expect("a ClusterIP");
    let port = spec.ports.expect("ports")[0].node_port.expect("a node port");
    for held in before.values() {
        assert!(!held.contains(&format!("\"{ip}\"")), "{ip} handed out twice");
        assert!(!held.ends_with(&format!(" {port}")), "node port {port} handed out twice");
    }
}

#[test]
fn an_embedded_store_backed_up_through_the_api_comes_back_as_it_was() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path().join("pki"));
    pki.init(&InitConfig { nodes: vec!["n1".into()], ..InitConfig::default() }).expect("init");
    let backup = dir.path().join("cluster.snap");
    let control = Control::start(dir.path(), &pki, None);
    let before = runtime().block_on(async {
        let client = control.client().await;
        populate(&client).await;
        identities(&client).await
    });
    // Only a cluster admin gets the snapshot: a node's credentials are refused.
    let node_conf = dir.path().join("n1.conf");
    let admin = std::fs::read_to_string(&control.kubeconfig).expect("admin kubeconfig");
    let server = admin.lines().find(|l| l.trim_start().starts_with("server:")).expect("server line");
    let node = std::fs::read_to_string(pki.node_kubeconfig("n1")).expect("node kubeconfig");
    let node: String = node
        .lines()
        .map(|l| if l.trim_start().starts_with("server:") { server.to_owned() } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&node_conf, node).expect("n1.conf");
    let refused = skiff_control(&[
        "backup",
        &backup.display().to_string(),
        "--kubeconfig",
        &node_conf.display().to_string(),
    ]);
    assert!(!refused.status.success() && !backup.exists(), "a node got the snapshot");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = skiff_control(&[
        "backup",
        &backup.display().to_string(),
        "--kubeconfig",
        &control.kubeconfig.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(control);

    let data = dir.path().join("data");
    let restore = || {
        skiff_control(&["restore", &backup.display().to_string(), "--data-dir", &data.display().to_string()])
    };
    let over = restore();
    assert!(!over.status.success(), "restored over a live store");
    assert!(
        String::from_utf8_lossy(&over.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&over.stderr)
    );
    std::fs::remove_file(data.join("store.redb")).expect("destroy the store");
    let out = restore();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let control = Control::start(dir.path(), &pki, None);
    runtime().block_on(came_back(&control, &before));
}

#[test]
fn an_etcd_snapshot_restores_the_cluster_into_a_new_etcd_data_dir() {
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path().join("pki"));
    pki.init(&InitConfig::default()).expect("init");
    let backup = dir.path().join("etcd.snap");
    let control = Control::start(dir.path(), &pki, Some(&etcd));
    let before = runtime().block_on(async {
        let client = control.client().await;
        populate(&client).await;
        identities(&client).await
    });
    let out = skiff_control(&["backup", &backup.display().to_string(), "--etcd-servers", &etcd.endpoint()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Changed after the backup: the restore takes the cluster back.
    runtime().block_on(async {
        let client = control.client().await;
        Api::<Service>::namespaced(client, "default")
            .delete("web", &DeleteParams::default())
            .await
            .expect("delete");
    });
    drop(control);

    let restored = etcd.scratch().join("restored");
    let mut args = vec!["restore".to_owned(), backup.display().to_string(), "--etcd-data-dir".to_owned()];
    args.push(restored.display().to_string());
    args.push("--".to_owned());
    args.extend(etcd.restore_options());
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-control")).args(&args).output().expect("restore");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    etcd.restart_on(&restored);

    let control = Control::start(dir.path(), &pki, Some(&etcd));
    runtime().block_on(came_back(&control, &before));
}
