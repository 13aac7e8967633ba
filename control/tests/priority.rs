//! Pod priority over the real HTTPS server: the built-in PriorityClasses, Priority admission
//! (class resolution, the global default, upstream's 403s and 422s), and kubectl end to end —
//! `kubectl create priorityclass`, then a pod of that class preempting on a full cluster of
//! hollow nodes.

mod common;

use std::{path::PathBuf, process::Output, time::Duration};

use common::hollow;
use k8s_openapi::api::{
    core::v1::{Event, Pod},
    scheduling::v1::PriorityClass,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// The code and message of a failed call.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn class(name: &str, value: i32, global_default: bool) -> PriorityClass {
    serde_json::from_value(
        json!({"metadata": {"name": name}, "value": value, "globalDefault": global_default}),
    )
    .expect("class")
}

fn pod(name: &str, spec_extra: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod")
}

fn priority_of(pod: &Pod) -> (Option<i32>, Option<String>, Option<String>) {
    let spec = pod.spec.clone().unwrap_or_default();
    (spec.priority, spec.priority_class_name, spec.preemption_policy)
}

#[test]
fn built_in_classes_exist_and_admission_resolves_pod_priority() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let classes: Api<PriorityClass> = Api::all(server.client.clone());
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let node_critical = classes.get("system-node-critical").await.expect("built-in");
        assert_eq!(node_critical.value, Some(2_000_001_000));
        assert_eq!(node_critical.preemption_policy.as_deref(), Some("PreemptLowerPriority"));
        assert_eq!(
            classes.get("system-cluster-critical").await.expect("built-in").value,
            Some(2_000_000_000)
        );

        // No class, no default: 0 and PreemptLowerPriority.
        let plain = pods.create(&PostParams::default(), &pod("plain", json!({}))).await.expect("create");
        assert_eq!(priority_of(&plain), (Some(0), None, Some("PreemptLowerPriority".into())));
        let critical = pods
            .create(
                &PostParams::default(),
                &pod("critical", json!({"priorityClassName": "system-node-critical"})),
            )
            .await
            .expect("create");
        assert_eq!(critical.spec.as_ref().and_then(|s| s.priority), Some(2_000_001_000));

        let (code, message) = api_error(
            pods.create(&PostParams::default(), &pod("x", json!({"priorityClassName": "foo"}))).await,
        );
        assert_eq!(code, 403);
        assert_eq!(message, "pods \"x\" is forbidden: no PriorityClass with name foo was found");
        let (code, message) = api_error(
            pods.create(
                &PostParams::default(),
                &pod("y", json!({"priorityClassName": "system-node-critical", "priority": 7})),
            )
            .await,
        );
        assert_eq!(code, 403);
        assert_eq!(
            message,
            "pods \"y\" is forbidden: the integer value of priority (7) must not be provided in pod spec; \
             priority admission controller computed 2000001000 from the given PriorityClass name"
        );

        // User classes stay at or below a billion.
        let (code, message) =
            api_error(classes.create(&PostParams::default(), &class("huge", 1_000_000_001, false)).await);
        assert_eq!(code, 422);
        assert!(
            message.contains("maximum allowed value of a user defined priority is 1000000000"),
            "{message}"
        );

        // One global default: pods without a class get it (and its name); a second is refused.
        classes.create(&PostParams::default(), &class("baseline", 100, true)).await.expect("default class");
        let defaulted =
            pods.create(&PostParams::default(), &pod("defaulted", json!({}))).await.expect("create");
        assert_eq!(
            priority_of(&defaulted),
            (Some(100), Some("baseline".into()), Some("PreemptLowerPriority".into()))
        );
        let (code, message) =
            api_error(classes.create(&PostParams::default(), &class("another", 200, true)).await);
        assert_eq!(code, 403);
        assert_eq!(
            message,
            "priorityclasses.scheduling.k8s.io \"another\" is forbidden: PriorityClass baseline is already \
             marked as default. Only one default can exist"
        );
        classes.create(&PostParams::default(), &class("another", 200, false)).await.expect("not default");
        let patch = Patch::Merge(json!({"globalDefault": true}));
        let (code, _) = api_error(classes.patch("another", &PatchParams::default(), &patch).await);
        assert_eq!(code, 403, "becoming a second default by update is refused too");
        let patch = Patch::Merge(json!({"description": "the default"}));
        classes
            .patch("baseline", &PatchParams::default(), &patch)
            .await
            .expect("the default itself may change");

        // value and preemptionPolicy are fixed.
        let (code, message) = api_error(
            classes.patch("another", &PatchParams::default(), &Patch::Merge(json!({"value": 5}))).await,
        );
        assert_eq!(code, 422);
        assert!(message.contains("value: Forbidden: may not be changed in an update."), "{message}");
        let never = Patch::Merge(json!({"preemptionPolicy": "Never"}));
        assert_eq!(api_error(classes.patch("another", &PatchParams::default(), &never).await).0, 422);
        let (code, message) = api_error(classes.delete("system-node-critical", &Default::default()).await);
        assert_eq!(code, 403, "{message}");
        classes.delete("another", &Default::default()).await.expect("a user class may go");

        // A pod replaced without its priority fields keeps them; changing them is refused.
        let mut replaced = pods.get("critical").await.expect("pod");
        if let Some(spec) = replaced.spec.as_mut() {
            (spec.priority, spec.priority_class_name, spec.preemption_policy) = (None, None, None);
        }
        let kept = pods.replace("critical", &PostParams::default(), &replaced).await.expect("replace");
        assert_eq!(kept.spec.as_ref().and_then(|s| s.priority), Some(2_000_001_000));
        let raise = Patch::Merge(json!({"spec": {"priority": 5}}));
        assert_eq!(api_error(pods.patch("critical", &PatchParams::default(), &raise).await).0, 422);
    });
}

/// kubectl pointed at one server, run on the blocking pool so the server and the hollow agents
/// go on serving it.
struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
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

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// A pod requesting one cpu, of `class` when given.
fn filler(name: &str, class: Option<&str>) -> String {
    let class = class.map_or(String::new(), |c| format!("\n  priorityClassName: {c}"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:{class}\n  containers:\n  - {{name: c, image: busybox, resources: {{requests: {{cpu: \"1\"}}}}}}\n"
    )
}

#[test]
fn kubectl_created_class_lets_a_pod_preempt_on_a_full_cluster() {
    common::runtime().block_on(async {
        let server = common::start(1000).await;
        let options = hollow::Options { cpu: "2", ..hollow::Options::default() };
        let _nodes = hollow::start(&server.client, &["n1", "n2"], json!({}), options).await;
        let dir = tempfile::tempdir().expect("tmp");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, &server.local.kubeconfig).expect("kubeconfig");
        let k = Kubectl { kubeconfig };
        let apply = |name: &str, class: Option<&str>| {
            let path = dir.path().join(format!("{name}.yaml"));
            std::fs::write(&path, filler(name, class)).expect("manifest");
            path
        };

        let created =
            k.ok(&["create", "priorityclass", "high", "--value=1000", "--description=urgent work"]).await;
        assert!(created.contains("priorityclass.scheduling.k8s.io/high created"), "{created}");
        let listed = k.ok(&["get", "pc", "high", "--no-headers"]).await;
        let columns: Vec<&str> = listed.split_whitespace().collect();
        assert_eq!(
            (columns[0], columns[1], columns[2], columns[4]),
            ("high", "1000", "false", "PreemptLowerPriority"),
            "{listed}"
        );
        let low = dir.path().join("low.yaml");
        std::fs::write(
            &low,
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: -10\npreemptionPolicy: Never\n",
        )
        .expect("manifest");
        k.ok(&["apply", "-f", low.to_str().expect("utf-8")]).await;
        let value = k.ok(&["get", "pc", "low", "-o", "jsonpath={.value} {.preemptionPolicy}"]).await;
        assert_eq!(value, "-10 Never");
        let listed = k.ok(&["get", "priorityclasses"]).await;
        assert!(
            listed.contains("system-cluster-critical") && listed.contains("system-node-critical"),
            "{listed}"
        );

        // Four one-cpu pods fill the two two-cpu nodes.
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let fillers = ["fill-1", "fill-2", "fill-3", "fill-4"];
        for name in fillers {
            let path = apply(name, None);
            k.ok(&["apply", "-f", path.to_str().expect("utf-8")]).await;
        }
        common::eventually_within("the fillers to run", Duration::from_secs(30), || async {
            let all = pods.list(&ListParams::default()).await.ok()?.items;
            (all.len() == 4 && all.iter().all(running)).then_some(())
        })
        .await;

        let path = apply("urgent", Some("high"));
        k.ok(&["apply", "-f", path.to_str().expect("utf-8")]).await;
        let urgent = common::eventually_within("urgent to run", Duration::from_secs(30), || async {
            let urgent = pods.get("urgent").await.ok()?;
            (running(&urgent) && node_of(&urgent).is_some()).then_some(urgent)
        })
        .await;
        assert_eq!(urgent.spec.as_ref().and_then(|s| s.priority), Some(1000));
        let node = node_of(&urgent).expect("bound");
        let wide = k.ok(&["get", "pod", "urgent", "-o", "wide", "--no-headers"]).await;
        assert_eq!(wide.matches(node.as_str()).count(), 2, "node and nominated node: {wide}");
        assert_eq!(
            urgent.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()),
            Some(node.as_str())
        );

        // Exactly one filler made room, on the urgent pod's node, and was told why.
        let left: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.clone())
            .filter(|n| n.starts_with("fill-"))
            .collect();
        assert_eq!(left.len(), 3, "one victim only: {left:?}");
        let victim = fillers.iter().find(|f| !left.contains(&(**f).to_owned())).expect("a victim");
        let events: Api<Event> = Api::namespaced(server.client.clone(), "default");
        let preempted: Vec<String> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some(*victim) && e.reason.as_deref() == Some("Preempted")
            })
            .filter_map(|e| e.message)
            .collect();
        let uid = urgent.metadata.uid.clone().unwrap_or_default();
        assert_eq!(preempted, [format!("Preempted by pod {uid} on node {node}")]);
    });
}
