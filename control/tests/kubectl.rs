//! kubectl (a client nobody here wrote) against the API server: apply with its default (strict)
//! validation, get in several formats, label, scale, patch, get all, api-resources, describe,
//! delete, a rejected unknown field, and aggregated discovery.

mod common;

use std::process::{Command, Output};

struct Kubectl {
    kubeconfig: std::path::PathBuf,
}

impl Kubectl {
    /// An API server (on its own runtime, kept alive by the caller) and kubectl configured for it.
    fn with_server() -> (tokio::runtime::Runtime, common::Server, tempfile::TempDir, Kubectl) {
        let rt = common::runtime();
        let server = rt.block_on(common::start(1000));
        let dir = tempfile::tempdir().expect("tmp");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, &server.local.kubeconfig).expect("kubeconfig");
        (rt, server, dir, Kubectl { kubeconfig })
    }

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

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "web:1", ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

#[test]
fn kubectl_manages_a_deployment_and_a_service() {
    let (_rt, server, dir, k) = Kubectl::with_server();
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, APP).expect("manifest");
    let app = app.to_str().expect("utf-8 path");

    let applied = k.ok(&["apply", "-f", app]);
    assert!(
        applied.contains("deployment.apps/web created") && applied.contains("service/web created"),
        "{applied}"
    );

    let deploy: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "web", "-o", "json"])).expect("json");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let svc_yaml = k.ok(&["get", "svc", "web", "-o", "yaml"]);
    assert!(svc_yaml.contains("clusterIP: 10.96."), "{svc_yaml}");

    k.ok(&["label", "deployment", "web", "tier=front"]);
    k.ok(&["scale", "deployment", "web", "--replicas=3"]);
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"web:2"}]}}}}"#,
    ]);
    let deploy: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "web", "-o", "json"])).expect("json");
    assert_eq!(deploy["metadata"]["labels"]["tier"], "front");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(deploy["spec"]["template"]["spec"]["containers"][0]["image"], "web:2");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 8080,
        "strategic patch lost the ports"
    );

    // Re-applying the manifest: a three-way merge keeps kubectl scale's and label's changes
    // that the manifest never mentioned and resets what it does mention.
    let reapplied = k.ok(&["apply", "-f", app]);
    assert!(reapplied.contains("deployment.apps/web configured"), "{reapplied}");

    let all = k.ok(&["get", "all"]);
    assert!(all.contains("deployment.apps/web") && all.contains("service/web"), "{all}");
    // With a cold cache kubectl discovers everything from /api and /apis in aggregated form,
    // without asking each group version.
    let cache = dir.path().join("cache");
    let cache = cache.to_str().expect("utf-8 path");
    let out = k.run(&["api-resources", "-v=6", "--cache-dir", cache]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resources = String::from_utf8_lossy(&out.stdout);
    assert!(resources.contains("endpointslices") && resources.contains("deploy"), "{resources}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("/apis?") && !log.contains("/apis/apps/v1?"), "not aggregated discovery: {log}");
    k.ok(&["describe", "deployment", "web"]);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\nbogus: 1\n")
        .expect("bad manifest");
    let out = k.run(&["apply", "-f", bad.to_str().expect("path")]);
    assert!(!out.status.success(), "an unknown field was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"bogus\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!k.run(&["get", "configmap", "bad"]).status.success(), "the rejected object was written");

    let deleted = k.ok(&["delete", "-f", app]);
    assert!(deleted.contains("deleted"), "{deleted}");
    assert!(!k.run(&["get", "deployment", "web"]).status.success());
    drop(server);
}

#[test]
fn kubectl_server_side_apply_owns_fields_and_reports_conflicts() {
    let (_rt, server, dir, k) = Kubectl::with_server();
    let manifest = dir.path().join("web.yaml");
    let deployment = APP.split("---").next().expect("the Deployment");
    std::fs::write(&manifest, deployment).expect("manifest");
    let manifest = manifest.to_str().expect("utf-8 path");

    let out = k.ok(&["apply", "--server-side", "-f", manifest]);
    assert!(out.contains("serverside-applied"), "{out}");
    k.ok(&["scale", "deployment", "web", "--replicas=5"]);

    // The manifest still says 2 replicas; the scaler owns that field now.
    let out = k.run(&["apply", "--server-side", "-f", manifest]);
    assert!(!out.status.success(), "a conflicting apply succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conflict") && err.contains(".spec.replicas"), "{err}");
    let replicas = k.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "5", "a refused apply changed the object");

    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", manifest]);
    let deploy: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "web", "-o", "json", "--show-managed-fields"]))
            .expect("json");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let managed = deploy["metadata"]["managedFields"].as_array().expect("managedFields");
    let applier = managed.iter().find(|e| e["operation"] == "Apply").expect("an Apply entry");
    assert_eq!(applier["manager"], "kubectl");
    assert!(applier["fieldsV1"]["f:spec"]["f:replicas"].is_object(), "{applier}");
    assert!(
        managed
            .iter()
            .all(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_none() || e["operation"] == "Apply"),
        "the scaler still owns replicas: {managed:?}"
    );

    // Dropping a label from the manifest removes it: nobody else owns it.
    std::fs::write(
        dir.path().join("web.yaml"),
        deployment.replace("{name: web, labels: {app: web}}", "{name: web}"),
    )
    .expect("manifest");
    k.ok(&["apply", "--server-side", "-f", manifest]);
    let labels = k.ok(&["get", "deployment", "web", "-o", "jsonpath={.metadata.labels}"]);
    assert!(!labels.contains("app"), "the dropped label is still there: {labels}");
    drop(server);
}

/// kubectl's typed `create` commands send protobuf bodies.
#[test]
fn kubectl_create_commands_send_protobuf_and_it_is_understood() {
    let (_rt, server, _dir, k) = Kubectl::with_server();
    let get = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&k.ok(&all)).expect("json")
    };

    let out = k.run(&["create", "deployment", "web", "--image=web:1", "--replicas=0", "--port=8080", "-v=8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("application/vnd.kubernetes.protobuf"), "kubectl sent no protobuf: {log}");
    let deploy = get(&["deployment", "web"]);
    assert_eq!(deploy["spec"]["replicas"], 0, "an explicit zero was lost");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (container["image"].as_str(), container["ports"][0]["containerPort"].as_i64()),
        (Some("web:1"), Some(8080))
    );
    assert_eq!(deploy["spec"]["template"]["spec"]["restartPolicy"], "Always", "defaults applied");

    k.ok(&["create", "configmap", "settings", "--from-literal=mode=fast"]);
    assert_eq!(get(&["configmap", "settings"])["data"]["mode"], "fast");
    k.ok(&["create", "secret", "generic", "creds", "--from-literal=password=hunter2"]);
    assert_eq!(get(&["secret", "creds"])["data"]["password"], "aHVudGVyMg==");
    k.ok(&["create", "service", "nodeport", "edge", "--tcp=80:8080"]);
    let svc = get(&["service", "edge"]);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().expect("a node port");
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    k.ok(&["create", "namespace", "team-a"]);
    assert_eq!(get(&["namespace", "team-a"])["status"]["phase"], "Active");
    k.ok(&["create", "serviceaccount", "robot", "-n", "team-a"]);
    assert_eq!(get(&["serviceaccount", "robot", "-n", "team-a"])["metadata"]["namespace"], "team-a");

    // RBAC objects are stored (not yet enforced): the group's kinds decode like the rest.
    k.ok(&["create", "clusterrole", "reader", "--verb=get,list", "--resource=pods,services"]);
    let rule = &get(&["clusterrole", "reader"])["rules"][0];
    assert_eq!(
        (&rule["verbs"], &rule["resources"]),
        (&serde_json::json!(["get", "list"]), &serde_json::json!(["pods", "services"]))
    );
    k.ok(&[
        "create",
        "clusterrolebinding",
        "robot-reads",
        "--clusterrole=reader",
        "--serviceaccount=team-a:robot",
    ]);
    let binding = get(&["clusterrolebinding", "robot-reads"]);
    assert_eq!(
        (&binding["roleRef"]["name"], &binding["subjects"][0]["namespace"]),
        (&serde_json::json!("reader"), &serde_json::json!("team-a"))
    );
    k.ok(&["create", "role", "cm-writer", "-n", "team-a", "--verb=update", "--resource=configmaps"]);
    k.ok(&[
        "create",
        "rolebinding",
        "robot-writes",
        "-n",
        "team-a",
        "--role=cm-writer",
        "--serviceaccount=team-a:robot",
    ]);
    assert_eq!(get(&["rolebinding", "robot-writes", "-n", "team-a"])["roleRef"]["kind"], "Role");
    drop(server);
}
