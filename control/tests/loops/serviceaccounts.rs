//! The ServiceAccount loop: every Active namespace keeps a `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap holding the cluster CA, restored whenever they go or change.

use std::sync::Arc;

use serde_json::json;
use skiff_control::{api::deletion::Options, controllers::Config};

use crate::world::{World, runtime};

/// A world whose API server knows a cluster CA (as `serve --pki-dir` gives it).
async fn world_with_ca() -> (World, String) {
    let w = World::new(Config::default()).await;
    let issued = skiff_control::pki::issue::new_ca("test-ca", time::Duration::hours(1)).expect("ca");
    let ca = skiff_control::pki::issue::Ca::load(&issued.cert_pem, &issued.key_pem).expect("load");
    w.server.set_ca(Arc::new(ca));
    (w, issued.cert_pem)
}

#[test]
fn every_active_namespace_keeps_a_default_account_and_the_root_ca() {
    runtime().block_on(async {
        let (mut w, ca) = world_with_ca().await;
        w.settle().await;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(w.get("ServiceAccount", Some(ns), "default").is_some(), "{ns} has its account");
            let cm = w.get("ConfigMap", Some(ns), "kube-root-ca.crt").expect("root CA published");
            assert_eq!(cm["data"]["ca.crt"], ca.as_str());
        }

        w.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})).await;
        w.settle().await;
        let account = w.get("ServiceAccount", Some("team"), "default").expect("a new namespace's account");
        let uid = account["metadata"]["uid"].clone();
        assert_eq!(
            w.get("ConfigMap", Some("team"), "kube-root-ca.crt").expect("cm")["data"]["ca.crt"],
            ca.as_str()
        );

        // Deleted: recreated (a new object).
        w.server
            .delete_key("/registry/core/serviceaccounts/team/default", &Options::default())
            .await
            .expect("delete account");
        w.server
            .delete_key("/registry/core/configmaps/team/kube-root-ca.crt", &Options::default())
            .await
            .expect("delete cm");
        assert!(w.get("ServiceAccount", Some("team"), "default").is_none());
        w.settle().await;
        let again = w.get("ServiceAccount", Some("team"), "default").expect("recreated");
        assert_ne!(again["metadata"]["uid"], uid);
        assert_eq!(
            w.get("ConfigMap", Some("team"), "kube-root-ca.crt").expect("cm")["data"]["ca.crt"],
            ca.as_str()
        );

        // Edited: our key restored, another key left alone.
        w.edit("ConfigMap", Some("team"), "kube-root-ca.crt", false, |cm| {
            cm["data"] = json!({"ca.crt": "forged", "extra": "kept"});
        })
        .await;
        w.settle().await;
        let cm = w.get("ConfigMap", Some("team"), "kube-root-ca.crt").expect("cm");
        assert_eq!(cm["data"]["ca.crt"], ca.as_str());
        assert_eq!(cm["data"]["extra"], "kept");

        // A namespace being deleted gets nothing back.
        w.server.delete_key("/registry/core/namespaces/team", &Options::default()).await.expect("delete ns");
        w.settle().await;
        assert!(w.get("Namespace", None, "team").is_none(), "emptied and gone");
        assert!(w.get("ServiceAccount", Some("team"), "default").is_none());
        assert!(w.get("ConfigMap", Some("team"), "kube-root-ca.crt").is_none());
    });
}

#[test]
fn pods_created_by_loops_run_as_default_with_the_token_volume() {
    runtime().block_on(async {
        let (mut w, _) = world_with_ca().await;
        w.create(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
            .await;
        w.settle().await;
        let pods = w.list("Pod", Some("default"));
        assert_eq!(pods.len(), 1);
        let spec = &pods[0]["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        let volume = spec["volumes"][0]["name"].as_str().expect("token volume");
        assert!(volume.starts_with("kube-api-access-"));
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["name"], volume);
    });
}
