//! `deploy/kubernetes/skiff-agent.yaml`: every document is an object upstream's types know field
//! for field, kubectl accepts it client-side, and applied to a control plane with hollow nodes its
//! DaemonSet puts one pod on every node — a tainted one too — and `kubectl rollout status` says so.
//!
//! skiff-control stores the RBAC objects without enforcing them yet (issue 12), so the whole file
//! applies as it would to a real cluster.

mod common;

use std::{collections::BTreeSet, path::PathBuf, process::Output, time::Duration};

use common::hollow;
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Pod, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{Api, api::ListParams};
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

const MANIFEST: &str = include_str!("../../deploy/kubernetes/skiff-agent.yaml");

/// The manifest's documents, as JSON.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let yaml = serde_yaml::Value::deserialize(doc).expect("YAML");
            serde_json::to_value(yaml).expect("JSON")
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// `doc` read as a `T` and written back: anything upstream's type does not know is gone.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Value {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
    serde_json::to_value(typed).expect("JSON")
}

/// Where `a` and `b` differ, as JSON paths.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                differences(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

/// Fields of `doc` that its kind's type does not have (or has with another type).
fn unknown_fields(doc: &Value) -> Vec<String> {
    let typed = match doc["kind"].as_str() {
        Some("ServiceAccount") => round_trip::<ServiceAccount>(doc),
        Some("ClusterRole") => round_trip::<ClusterRole>(doc),
        Some("ClusterRoleBinding") => round_trip::<ClusterRoleBinding>(doc),
        Some("DaemonSet") => round_trip::<DaemonSet>(doc),
        other => panic!("a kind this test does not know: {other:?}"),
    };
    let mut out = Vec::new();
    differences("", doc, &typed, &mut out);
    out
}

#[test]
fn every_document_is_an_object_of_its_kind_field_for_field() {
    let docs = documents(MANIFEST);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]);
    for doc in &docs {
        let unknown = unknown_fields(doc);
        assert!(unknown.is_empty(), "{}: {unknown:#?}", doc["kind"]);
    }

    // The check is live: a misspelt field deep in the pod template is found.
    let mut daemon = docs[3].clone();
    daemon["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPropgation"] =
        json!("Bidirectional");
    let unknown = unknown_fields(&daemon);
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].contains("mountPropgation"), "{unknown:?}");

    // What the DaemonSet promises, beyond its shape.
    let pod = &docs[3]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]), "every taint tolerated");
    let agent = &pod["containers"][0];
    assert_eq!(
        agent["command"][1], "service-proxy",
        "the kubelet runs pods on a real cluster, not skiff-agent"
    );
    assert_eq!(agent["securityContext"]["privileged"], true);
    assert_eq!(agent["volumeMounts"][0]["mountPath"], "/sys/fs/bpf");
    assert_eq!(agent["volumeMounts"][0]["mountPropagation"], "Bidirectional");
    let init = &pod["initContainers"][0];
    assert!(init["command"][2].as_str().is_some_and(|s| s.contains("skiff-cni install")), "{init}");
}

/// kubectl pointed at one server.
struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl on the blocking pool, so the server and the hollow agents go on serving it.
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
}

/// A server with its loops, hollow nodes and kubectl for it. Dropped in reverse: agents,
/// server, files.
struct Cluster {
    _hollow: hollow::Hollow,
    kubectl: Kubectl,
    server: common::Server,
    _dir: tempfile::TempDir,
}

/// The manifest, as kubectl gets it.
fn manifest_path() -> String {
    format!("{}/../deploy/kubernetes/skiff-agent.yaml", env!("CARGO_MANIFEST_DIR"))
}

async fn cluster(nodes: &[&str]) -> Cluster {
    let server = common::start(1000).await;
    let hollow = hollow::start(&server.client, nodes, json!({}), hollow::Options::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, &server.local.kubeconfig).expect("kubeconfig");
    Cluster { _hollow: hollow, kubectl: Kubectl { kubeconfig }, server, _dir: dir }
}

#[test]
fn kubectl_accepts_the_manifest_client_side() {
    common::runtime().block_on(async {
        let c = cluster(&[]).await;
        let out = c.kubectl.ok(&["apply", "--dry-run=client", "-f", &manifest_path()]).await;
        assert!(out.contains("serviceaccount/skiff-agent created (dry run)"), "{out}");
        assert!(
            out.contains("clusterrolebinding.rbac.authorization.k8s.io/skiff-agent created (dry run)"),
            "{out}"
        );
        assert!(out.contains("daemonset.apps/skiff-agent created (dry run)"), "{out}");
        // A dry run writes nothing.
        let daemons: Api<DaemonSet> = Api::namespaced(c.server.client.clone(), "kube-system");
        assert!(daemons.get_opt("skiff-agent").await.expect("get").is_none());
    });
}

#[test]
fn the_daemon_set_runs_on_every_node_and_rolls_out() {
    common::runtime().block_on(async {
        let nodes = ["node-a", "node-b", "node-c"];
        let c = cluster(&nodes).await;
        // A control-plane taint on one node: the manifest's tolerations must get past it.
        c.kubectl.ok(&["taint", "nodes", "node-c", "node-role.kubernetes.io/control-plane:NoSchedule"]).await;

        let out = c.kubectl.ok(&["apply", "-f", &manifest_path()]).await;
        assert!(out.contains("daemonset.apps/skiff-agent created"), "{out}");
        let roles: Api<ClusterRole> = Api::all(c.server.client.clone());
        let role = roles.get("skiff-agent").await.expect("the ClusterRole was stored");
        assert!(role.rules.is_some_and(|r| !r.is_empty()), "its rules were kept");
        let out = c
            .kubectl
            .ok(&["rollout", "status", "ds/skiff-agent", "-n", "kube-system", "--timeout=60s"])
            .await;
        assert!(out.contains("successfully rolled out"), "{out}");

        let pods: Api<Pod> = Api::namespaced(c.server.client.clone(), "kube-system");
        let live =
            common::eventually_within("one live agent pod per node", Duration::from_secs(30), || async {
                let list = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/name=skiff-agent"))
                    .await
                    .ok()?;
                let live: Vec<Pod> =
                    list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
                (live.len() == nodes.len()).then_some(live)
            })
            .await;
        let on: BTreeSet<String> = live.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
        assert_eq!(on, nodes.iter().map(|n| (*n).to_owned()).collect::<BTreeSet<_>>(), "one pod per node");
        for pod in &live {
            let spec = pod.spec.as_ref().expect("spec");
            assert_eq!(spec.service_account_name.as_deref(), Some("skiff-agent"));
            assert_eq!(spec.host_network, Some(true));
        }
    });
}
