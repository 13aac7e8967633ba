//! Admission against the real HTTPS server: LimitRanger defaults and bounds, ResourceQuota
//! refusals, racing creates and usage given back by the quota controller, and NodeRestriction
//! for a node's own identity (kube-rs and kubectl as clients).

mod common;

use std::process::{Command, Output};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{LimitRange, Node, Pod, ResourceQuota},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

fn pod(name: &str, resources: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}}))
    .expect("pod")
}

/// The code and message of a refused call.
fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("json")
}

/// Creates a quota and waits until its controller has counted (status.used set).
async fn quota(client: &Client, ns: &str, name: &str, hard: Value) -> Api<ResourceQuota> {
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let q: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"hard": hard}})).expect("quota");
    quotas.create(&PostParams::default(), &q).await.expect("create quota");
    common::eventually("the quota's first count", || {
        let quotas = quotas.clone();
        async move { quotas.get(name).await.ok()?.status?.used.map(|_| ()) }
    })
    .await;
    quotas
}

#[test]
fn limit_ranges_default_pods_and_refuse_those_over_the_maximum() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let ranges: Api<LimitRange> = Api::namespaced(server.client.clone(), "default");
        let range: LimitRange =
            serde_json::from_value(json!({"metadata": {"name": "limits"}, "spec": {"limits": [
            {"type": "Container", "max": {"cpu": "1"}, "default": {"cpu": "500m", "memory": "128Mi"},
             "defaultRequest": {"cpu": "100m"}}]}}))
            .expect("range");
        let stored = ranges.create(&PostParams::default(), &range).await.expect("create limitrange");
        assert_eq!(
            to_json(&stored)["spec"]["limits"][0]["defaultRequest"]["memory"],
            "128Mi",
            "the stored range has its defaults filled in"
        );

        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let created = pods.create(&PostParams::default(), &pod("plain", json!({}))).await.expect("create");
        let resources = &to_json(&created)["spec"]["containers"][0]["resources"];
        assert_eq!(resources["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
        assert_eq!(resources["requests"], json!({"cpu": "100m", "memory": "128Mi"}));

        let (code, message) =
            refusal(pods.create(&PostParams::default(), &pod("x", json!({"limits": {"cpu": "2"}}))).await);
        assert_eq!(code, 403);
        assert_eq!(message, "pods \"x\" is forbidden: maximum cpu usage per Container is 1, but limit is 2");
        assert!(pods.get_opt("x").await.expect("get").is_none(), "nothing was stored");

        // A range no pod could satisfy, and a quota of nonsense, are invalid objects.
        let impossible: LimitRange = serde_json::from_value(json!({"metadata": {"name": "impossible"},
            "spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]}}))
        .expect("range");
        let (code, message) = refusal(ranges.create(&PostParams::default(), &impossible).await);
        assert_eq!(code, 422);
        assert!(
            message.contains(
                "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"
            ),
            "{message}"
        );
        let quotas: Api<ResourceQuota> = Api::namespaced(server.client.clone(), "default");
        let nonsense: ResourceQuota =
            serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "many"}}}))
                .expect("quota");
        let (code, message) = refusal(quotas.create(&PostParams::default(), &nonsense).await);
        assert_eq!(code, 422, "{message}");
        assert!(message.contains("spec.hard[pods]"), "{message}");
    });
}

#[test]
fn a_pod_quota_refuses_the_pod_over_it_until_one_is_deleted() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let client = &server.client;
        let quotas = quota(client, "default", "two-pods", json!({"pods": "2"})).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        for name in ["a", "b"] {
            pods.create(&PostParams::default(), &pod(name, json!({}))).await.expect("within quota");
        }
        let (code, message) = refusal(pods.create(&PostParams::default(), &pod("c", json!({}))).await);
        assert_eq!(code, 403);
        assert_eq!(
            message,
            "pods \"c\" is forbidden: exceeded quota: two-pods, requested: pods=1, used: pods=2, limited: pods=2"
        );
        // An unbound pod goes at once; the controller's recount gives its unit back.
        pods.delete("a", &DeleteParams::default()).await.expect("delete a");
        common::eventually("the freed unit", || {
            let quotas = quotas.clone();
            async move {
                let used = quotas.get("two-pods").await.ok()?.status?.used?;
                (used.get("pods")?.0 == "1").then_some(())
            }
        })
        .await;
        pods.create(&PostParams::default(), &pod("c", json!({}))).await.expect("room again");

        // A compute quota needs every container to state what it limits.
        quota(client, "default", "cpu", json!({"limits.cpu": "4"})).await;
        let (code, message) = refusal(pods.create(&PostParams::default(), &pod("d", json!({}))).await);
        assert_eq!(code, 403);
        assert_eq!(message, "pods \"d\" is forbidden: failed quota: cpu: must specify limits.cpu for: c");
    });
}

/// A quota cannot be slipped past by a status sent with the create (the agent runs the pod all
/// the same) or by raising a running pod's requests afterwards (its spec is fixed but for images
/// and a few scheduling fields, as upstream).
#[test]
fn a_pod_is_charged_whatever_status_it_is_sent_with_and_cannot_be_resized() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let client = &server.client;
        let quotas = quota(client, "default", "compute", json!({"pods": "2", "requests.cpu": "1"})).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut finished = to_json(&pod("done", json!({"requests": {"cpu": "500m"}})));
        finished["status"] = json!({"phase": "Succeeded"});
        let finished: Pod = serde_json::from_value(finished).expect("pod");
        let created = pods.create(&PostParams::default(), &finished).await.expect("create");
        assert_eq!(to_json(&created)["status"], json!({"phase": "Pending"}), "a new pod starts Pending");
        let used = quotas.get("compute").await.expect("quota").status.and_then(|s| s.used).expect("used");
        assert_eq!(used["pods"].0, "1", "charged as an active pod");
        assert_eq!(used["requests.cpu"].0, "500m");

        let (code, message) = refusal(
            pods.patch(
                "done",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "64"}}}]}})),
            )
            .await,
        );
        assert_eq!(code, 422);
        assert!(
            message.starts_with(
                "Pod \"done\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
            ),
            "{message}"
        );
        let stored = to_json(&pods.get("done").await.expect("get"));
        assert_eq!(stored["spec"]["containers"][0]["resources"]["requests"]["cpu"], "500m");
        let patched = pods
            .patch(
                "done",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.36"}],
                    "activeDeadlineSeconds": 600}})),
            )
            .await
            .expect("an image and a deadline may change");
        assert_eq!(to_json(&patched)["spec"]["containers"][0]["image"], "busybox:1.36");
    });
}

#[test]
fn racing_creates_never_pass_the_limit() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let client = &server.client;
        let quotas = quota(client, "default", "five", json!({"pods": "5", "count/configmaps": "3"})).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let attempts = (0..20).map(|i| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({}))).await }
        });
        let results = futures::future::join_all(attempts).await;
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        for r in results.into_iter().filter(|r| r.is_err()) {
            let (code, message) = refusal(r);
            assert_eq!(code, 403, "{message}");
            assert!(message.contains("exceeded quota: five"), "{message}");
        }
        assert_eq!(admitted, 5, "exactly the limit gets in");
        assert_eq!(pods.list(&Default::default()).await.expect("list").items.len(), 5);

        let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client.clone(), "default");
        // The namespace's kube-root-ca.crt (published by the loops) counts against the quota too.
        common::eventually("kube-root-ca.crt published", || {
            let configmaps = configmaps.clone();
            async move { configmaps.get_opt("kube-root-ca.crt").await.ok().flatten().map(drop) }
        })
        .await;
        let existing = configmaps.list(&Default::default()).await.expect("list").items.len();
        let attempts = (0..10).map(|i| {
            let configmaps = configmaps.clone();
            async move {
                let cm = serde_json::from_value(json!({"metadata": {"name": format!("cm{i}")}})).expect("cm");
                configmaps.create(&PostParams::default(), &cm).await
            }
        });
        let admitted = futures::future::join_all(attempts).await.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted + existing, 3, "{existing} there already");
        let used = quotas.get("five").await.expect("quota").status.expect("status").used.expect("used");
        assert_eq!(used["pods"].0, "5");
        assert_eq!(used["count/configmaps"].0, "3");
    });
}

/// A client acting as node `name`.
async fn node_client(server: &common::Server, name: &str) -> Client {
    let yaml =
        server.local.kubeconfig_for(&format!("system:node:{name}"), &["system:nodes"]).expect("kubeconfig");
    let raw = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(raw, &Default::default()).await.expect("config");
    Client::try_from(config).expect("client")
}

#[test]
fn node_restriction_keeps_a_node_to_itself() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let n1 = node_client(&server, "n1").await;
        let nodes: Api<Node> = Api::all(n1.clone());
        let node = |name: &str, extra: Value| -> Node {
            let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            serde_json::from_value(v).expect("node")
        };
        // Registering with taints is the node's to do; registering another node is not.
        nodes
            .create(&PostParams::default(), &node("n1", json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}})))
            .await
            .expect("own node");
        let (code, message) = refusal(nodes.create(&PostParams::default(), &node("n2", json!({}))).await);
        assert_eq!((code, message.as_str()), (403, "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""));
        let admin_nodes: Api<Node> = Api::all(server.client.clone());
        admin_nodes.create(&PostParams::default(), &node("n2", json!({}))).await.expect("admin makes n2");

        let merge = |p: Value| Patch::Merge(p);
        nodes
            .patch("n1", &PatchParams::default(), &merge(json!({"metadata": {"labels": {"team": "a"}}})))
            .await
            .expect("an ordinary label");
        let (code, message) = refusal(
            nodes
                .patch("n1", &PatchParams::default(), &merge(json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "x"}}})))
                .await,
        );
        assert_eq!(code, 403);
        assert!(message.ends_with("is not allowed to modify labels: node-restriction.kubernetes.io/pool"), "{message}");
        let (code, message) = refusal(nodes.patch("n1", &PatchParams::default(), &merge(json!({"spec": {"taints": null}}))).await);
        assert_eq!((code, message.as_str()), (403, "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints"));
        let (code, _) = refusal(nodes.patch("n2", &PatchParams::default(), &merge(json!({"metadata": {"labels": {"team": "a"}}}))).await);
        assert_eq!(code, 403, "another node's object");

        // Pods: status of its own, not another node's; mirror pods only, bound to itself.
        let admin_pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        for (name, bound) in [("mine", "n1"), ("theirs", "n2")] {
            let p: Pod = serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"nodeName": bound, "containers": [{"name": "c", "image": "busybox"}]}}))
            .expect("pod");
            admin_pods.create(&PostParams::default(), &p).await.expect("admin creates");
        }
        let pods: Api<Pod> = Api::namespaced(n1.clone(), "default");
        let running = merge(json!({"status": {"phase": "Running"}}));
        pods.patch_status("mine", &PatchParams::default(), &running).await.expect("own pod's status");
        let (code, _) = refusal(pods.patch_status("theirs", &PatchParams::default(), &running).await);
        assert_eq!(code, 403);

        let mirror = |name: &str, node: &str, extra: Value| -> Pod {
            let mut v = json!({"metadata": {"name": name, "annotations": {"kubernetes.io/config.mirror": "hash"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
            if let (Some(spec), Some(e)) = (v["spec"].as_object_mut(), extra.as_object()) {
                spec.extend(e.clone());
            }
            serde_json::from_value(v).expect("pod")
        };
        pods.create(&PostParams::default(), &mirror("static-n1", "n1", json!({}))).await.expect("mirror pod");
        // Owned by its Node as the agent writes them; the owner must be this very Node.
        let uid = nodes.get("n1").await.expect("n1").metadata.uid.expect("uid");
        let mut owned = mirror("owned-n1", "n1", json!({}));
        owned.metadata.owner_references = Some(vec![serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": uid, "controller": true}),
        )
        .expect("owner")]);
        pods.create(&PostParams::default(), &owned).await.expect("mirror pod owned by n1");
        let mut stale = owned.clone();
        stale.metadata.name = Some("stale-n1".into());
        if let Some(owner) = stale.metadata.owner_references.as_mut().and_then(|o| o.first_mut()) {
            owner.uid = "an-earlier-n1".into();
        }
        let (code, message) = refusal(pods.create(&PostParams::default(), &stale).await);
        assert_eq!(code, 403);
        assert!(message.ends_with(&format!("node n1 UID mismatch: expected an-earlier-n1 got {uid}")), "{message}");
        let (code, message) = refusal(pods.create(&PostParams::default(), &mirror("elsewhere", "n2", json!({}))).await);
        assert_eq!((code, message.as_str()), (403, "pods \"elsewhere\" is forbidden: node \"n1\" can only create pods with spec.nodeName set to itself"));
        let (code, message) = refusal(pods.create(&PostParams::default(), &pod("plain", json!({}))).await);
        assert_eq!(code, 403);
        assert!(message.ends_with("node \"n1\" can only create mirror pods"), "{message}");
        let secret_volume = json!({"volumes": [{"name": "s", "secret": {"secretName": "db"}}]});
        let (code, message) = refusal(pods.create(&PostParams::default(), &mirror("secretive", "n1", secret_volume)).await);
        assert_eq!((code, message.as_str()), (403, "pods \"secretive\" is forbidden: node \"n1\" can not create pods that reference secrets"));

        // Its own Lease only.
        let leases: Api<Lease> = Api::namespaced(n1, "kube-node-lease");
        let lease = |name: &str| -> Lease {
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"holderIdentity": name}})).expect("lease")
        };
        leases.create(&PostParams::default(), &lease("n1")).await.expect("own lease");
        let (code, message) = refusal(leases.create(&PostParams::default(), &lease("n2")).await);
        assert_eq!(code, 403);
        assert!(message.ends_with("can only access node lease with the same name as the requesting node"), "{message}");
    });
}

struct Kubectl {
    kubeconfig: std::path::PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl is installed (cargo xtask setup)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn kubectl_sees_quota_refusals_and_usage() {
    let rt = common::runtime();
    let server = rt.block_on(common::start(1000));
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, &server.local.kubeconfig).expect("kubeconfig");
    let kubectl = Kubectl { kubeconfig };

    kubectl.ok(&["create", "namespace", "team"]);
    kubectl.ok(&["create", "quota", "team-pods", "-n", "team", "--hard=pods=2,configmaps=10"]);
    let manifest = dir.path().join("limits.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: defaults, namespace: team}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 200m}\n",
    )
    .expect("manifest");
    kubectl.ok(&["apply", "-f", manifest.to_str().expect("utf-8")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kubectl.ok(&["get", "quota", "team-pods", "-n", "team", "-o", "jsonpath={.status.used.pods}"])
        != "0"
    {
        assert!(std::time::Instant::now() < deadline, "the quota was never counted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for name in ["one", "two"] {
        kubectl.ok(&["run", name, "-n", "team", "--image=busybox"]);
    }
    let out = kubectl.run(&["run", "three", "-n", "team", "--image=busybox"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pods \"three\" is forbidden: exceeded quota: team-pods, requested: pods=1, used: pods=2, limited: pods=2"),
        "{stderr}"
    );
    let limits = kubectl.ok(&[
        "get",
        "pod",
        "one",
        "-n",
        "team",
        "-o",
        "jsonpath={.spec.containers[0].resources.limits.cpu}",
    ]);
    assert_eq!(limits, "200m", "the LimitRange's default");
    let described = kubectl.ok(&["describe", "quota", "team-pods", "-n", "team"]);
    let row = described
        .lines()
        .find(|l| l.trim_start().starts_with("pods"))
        .unwrap_or_else(|| panic!("{described}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["pods", "2", "2"], "{described}");
    let table = kubectl.ok(&["get", "quota", "-n", "team"]);
    assert!(table.contains("team-pods") && table.contains("pods: 2/2"), "{table}");
    drop(rt);
}

/// NamespaceLifecycle: once a namespace is being deleted (held here by a pod's finalizer), every
/// create in it is a 403 in kube-apiserver's words and nothing is written; the namespace goes
/// once it is empty.
#[test]
fn a_terminating_namespace_refuses_new_content() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let client = &server.client;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).expect("ns");
        namespaces.create(&PostParams::default(), &ns).await.expect("create ns");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "team-a");
        let mut held = pod("held", json!({}));
        held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        pods.create(&PostParams::default(), &held).await.expect("create pod");
        namespaces.delete("team-a", &DeleteParams::default()).await.expect("delete ns");
        common::eventually("team-a Terminating", || {
            let namespaces = namespaces.clone();
            async move {
                let phase = namespaces.get("team-a").await.ok()?.status?.phase?;
                (phase == "Terminating").then_some(())
            }
        })
        .await;
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "late"}})).expect("cm");
        let (code, message) = refusal(configmaps.create(&PostParams::default(), &cm).await);
        assert_eq!(code, 403, "{message}");
        assert!(
            message
                .contains("unable to create new content in namespace team-a because it is being terminated"),
            "{message}"
        );
        assert!(configmaps.get_opt("late").await.expect("get").is_none(), "nothing written");
        pods.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .expect("release the pod");
        common::eventually("team-a gone", || {
            let namespaces = namespaces.clone();
            async move { namespaces.get_opt("team-a").await.ok()?.is_none().then_some(()) }
        })
        .await;
    });
}
