//! NodeRestriction: what the node authorizer (`authz/node.rs`) cannot see because it is in the
//! request's body. For a requester that is a node (`system:node:<n>` in `system:nodes`): it may
//! create only its own Node, never set or change labels under `node-restriction.kubernetes.io/`,
//! never change its Node's taints once registered; create only mirror pods bound to itself that
//! reference no other objects; never move a pod to another node; and create only its own Lease.
//! The authorizer already keeps a node to updating its own Node, its own pods' status and its own
//! Lease by name. Messages are kube-apiserver's.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::requester;
use crate::api::{registry::Resource, status::ApiError};

/// Labels no node may set about itself: they steer workloads that trust them.
const RESTRICTED_PREFIX: &str = "node-restriction.kubernetes.io/";
const MIRROR: &str = "kubernetes.io/config.mirror";

fn forbidden(r: &Resource, name: &str, why: String) -> ApiError {
    ApiError::forbidden(format!("{} \"{name}\" is forbidden: {why}", r.plural))
}

fn labels(object: &Value) -> Map<String, Value> {
    object.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Restricted labels added, changed or removed between `old` and `new`.
fn restricted_changes(old: &Value, new: &Value) -> Vec<String> {
    let (before, after) = (labels(old), labels(new));
    let changed: BTreeSet<&String> =
        before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
    changed.into_iter().filter(|k| k.starts_with(RESTRICTED_PREFIX)).cloned().collect()
}

/// A create by the requester, if it is a node; `node_uid` looks a Node's uid up (a mirror pod's
/// owner must be the node as it is now, not an earlier Node of that name).
pub fn admit_create(
    r: &Resource,
    name: &str,
    object: &Value,
    node_uid: impl Fn(&str) -> Option<String>,
) -> Result<(), ApiError> {
    let Some(node) = requester::node() else { return Ok(()) };
    match r.kind {
        "Node" => {
            if name != node {
                return Err(forbidden(
                    r,
                    name,
                    format!("node \"{node}\" is not allowed to modify node \"{name}\""),
                ));
            }
            let set = restricted_changes(&Value::Null, object);
            if !set.is_empty() {
                return Err(forbidden(
                    r,
                    name,
                    format!("node \"{node}\" is not allowed to set the following labels: {}", set.join(", ")),
                ));
            }
            Ok(())
        }
        "Pod" => mirror_pod(r, name, &node, object, node_uid),
        "Lease" => {
            let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
            if namespace != Some("kube-node-lease") {
                return Err(forbidden(
                    r,
                    name,
                    "can only access leases in the \"kube-node-lease\" system namespace".into(),
                ));
            }
            if name != node {
                return Err(forbidden(
                    r,
                    name,
                    "can only access node lease with the same name as the requesting node".into(),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The only pods a node creates: mirrors of its static pods, bound to it, owned by nothing but
/// its Node, using no Secrets, ConfigMaps, ServiceAccounts or claims (a node could otherwise
/// read any of them by making a pod that names it).
fn mirror_pod(
    r: &Resource,
    name: &str,
    node: &str,
    pod: &Value,
    node_uid: impl Fn(&str) -> Option<String>,
) -> Result<(), ApiError> {
    let refuse = |why: String| Err(forbidden(r, name, why));
    if pod.pointer("/metadata/annotations").and_then(|a| a.get(MIRROR)).is_none() {
        return refuse(format!(
            "pod does not have \"{MIRROR}\" annotation, node \"{node}\" can only create mirror pods"
        ));
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return refuse(format!("node \"{node}\" can only create pods with spec.nodeName set to itself"));
    }
    let owners =
        pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
    if owners.len() > 1 {
        return refuse(format!(
            "node \"{node}\" can only create pods with a single owner reference set to itself"
        ));
    }
    if let Some(owner) = owners.first() {
        if owner["apiVersion"] != "v1" || owner["kind"] != "Node" || owner["name"].as_str() != Some(node) {
            return refuse(format!(
                "node \"{node}\" can only create pods with an owner reference set to itself"
            ));
        }
        if owner["controller"] != Value::Bool(true) {
            return refuse(format!(
                "node \"{node}\" can only create pods with a controller owner reference set to itself"
            ));
        }
        if owner["blockOwnerDeletion"] == Value::Bool(true) {
            return refuse(format!("node \"{node}\" must not set blockOwnerDeletion on an owner reference"));
        }
        let Some(uid) = node_uid(node) else { return Err(ApiError::not_found("nodes", node)) };
        let claimed = owner["uid"].as_str().unwrap_or_default();
        if claimed != uid {
            return refuse(format!("node {node} UID mismatch: expected {claimed} got {uid}"));
        }
    }
    if pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
        return refuse(format!("node \"{node}\" can not create pods that reference a service account"));
    }
    if references(pod, true) {
        return refuse(format!("node \"{node}\" can not create pods that reference secrets"));
    }
    if references(pod, false) {
        return refuse(format!("node \"{node}\" can not create pods that reference configmaps"));
    }
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten();
    if volumes.clone().any(|v| v.get("persistentVolumeClaim").is_some()) {
        return refuse(format!("node \"{node}\" can not create pods that reference persistentvolumeclaims"));
    }
    Ok(())
}

/// Whether the pod names any Secret (`secret`) or ConfigMap, anywhere a pod can.
fn references(pod: &Value, secret: bool) -> bool {
    let names = |v: &Value| {
        let mut out = Vec::new();
        collect_names(v, secret, &mut out);
        out
    };
    !names(&pod["spec"]).is_empty()
}

/// The Secret/ConfigMap names under `v`: volumes (also projected), env `valueFrom`, `envFrom`,
/// image pull secrets.
fn collect_names(v: &Value, secret: bool, out: &mut Vec<String>) {
    let keys: &[&str] = if secret {
        &["secret", "secretKeyRef", "secretRef", "imagePullSecrets"]
    } else {
        &["configMap", "configMapKeyRef", "configMapRef"]
    };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if keys.contains(&k.as_str()) {
                    out.push(k.clone());
                }
                collect_names(child, secret, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_names(i, secret, out)),
        _ => {}
    }
}

/// An update by the requester, if it is a node: `old` is the stored object, `new` what would
/// be stored.
pub fn admit_update(r: &Resource, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let Some(node) = requester::node() else { return Ok(()) };
    match r.kind {
        "Node" => {
            if name != node {
                return Err(forbidden(
                    r,
                    name,
                    format!("node \"{node}\" is not allowed to modify node \"{name}\""),
                ));
            }
            let taints = |o: &Value| {
                o.pointer("/spec/taints").cloned().filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
            };
            if taints(old) != taints(new) {
                return Err(forbidden(r, name, format!("node \"{node}\" is not allowed to modify taints")));
            }
            let changed = restricted_changes(old, new);
            if !changed.is_empty() {
                return Err(forbidden(
                    r,
                    name,
                    format!("is not allowed to modify labels: {}", changed.join(", ")),
                ));
            }
            Ok(())
        }
        "Pod" => {
            let bound = |o: &Value| o.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_owned);
            if bound(old).as_deref() != Some(node.as_str()) {
                return Err(forbidden(
                    r,
                    name,
                    format!(
                        "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                    ),
                ));
            }
            if bound(new) != bound(old) {
                return Err(forbidden(
                    r,
                    name,
                    format!("node \"{node}\" is not allowed to change a pod's spec.nodeName"),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{api::registry, auth::UserInfo};

    fn admit_create_plain(r: &Resource, name: &str, object: &Value) -> Result<(), ApiError> {
        admit_create(r, name, object, |n| (n == "n1").then(|| "u".to_owned()))
    }

    fn as_node<T>(f: impl FnOnce() -> T) -> T {
        let user = UserInfo { name: "system:node:n1".into(), groups: vec!["system:nodes".into()] };
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("test value");
        rt.block_on(requester::scope(Some(user), async { f() }))
    }

    #[test]
    fn a_node_registers_itself_only_and_without_restricted_labels() {
        let nodes = registry::builtin("nodes", "").expect("test value");
        let own = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        as_node(|| admit_create_plain(nodes, "n1", &own)).expect("own node, taints at registration");
        let err = as_node(|| admit_create_plain(nodes, "n2", &own)).expect_err("other node");
        assert_eq!(
            err.message,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        let labelled =
            json!({"metadata": {"name": "n1", "labels": {"node-restriction.kubernetes.io/pool": "gpu"}}});
        assert!(as_node(|| admit_create_plain(nodes, "n1", &labelled)).is_err());
        // Not a node: unrestricted.
        admit_create_plain(nodes, "n2", &labelled).expect("admin");
    }

    #[test]
    fn updates_keep_taints_and_restricted_labels() {
        let nodes = registry::builtin("nodes", "").expect("test value");
        let old = json!({"metadata": {"name": "n1", "labels": {"node-restriction.kubernetes.io/pool": "a"}}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        let mut untainted = old.clone();
        untainted["spec"]["taints"] = json!([]);
        let err = as_node(|| admit_update(nodes, "n1", &old, &untainted)).expect_err("taints");
        assert!(err.message.ends_with("node \"n1\" is not allowed to modify taints"), "{}", err.message);
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"]["node-restriction.kubernetes.io/pool"] = json!("b");
        let err = as_node(|| admit_update(nodes, "n1", &old, &relabelled)).expect_err("label");
        assert!(
            err.message.ends_with("is not allowed to modify labels: node-restriction.kubernetes.io/pool")
        );
        let mut other = old.clone();
        other["metadata"]["labels"]["team"] = json!("x");
        as_node(|| admit_update(nodes, "n1", &old, &other)).expect("ordinary labels are the node's");
    }

    #[test]
    fn nodes_create_only_self_contained_mirror_pods() {
        let pods = registry::builtin("pods", "").expect("test value");
        let mirror = json!({"metadata": {"name": "m", "annotations": {MIRROR: "h"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
        as_node(|| admit_create_plain(pods, "m", &mirror)).expect("mirror");
        let mut plain = mirror.clone();
        plain["metadata"]["annotations"] = json!({});
        assert!(
            as_node(|| admit_create_plain(pods, "m", &plain))
                .expect_err("plain")
                .message
                .contains("can only create mirror pods")
        );
        let mut elsewhere = mirror.clone();
        elsewhere["spec"]["nodeName"] = json!("n2");
        assert!(as_node(|| admit_create_plain(pods, "m", &elsewhere)).is_err());
        let mut secretive = mirror.clone();
        secretive["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "token"}}]);
        let err = as_node(|| admit_create_plain(pods, "m", &secretive)).expect_err("secret");
        assert!(err.message.ends_with("can not create pods that reference secrets"));
        let mut stale = mirror.clone();
        stale["metadata"]["ownerReferences"][0]["uid"] = json!("old");
        let err = as_node(|| admit_create_plain(pods, "m", &stale)).expect_err("an earlier n1");
        assert!(err.message.ends_with("node n1 UID mismatch: expected old got u"), "{}", err.message);
        let mut configured = mirror;
        configured["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "cm"}}]);
        assert!(as_node(|| admit_create_plain(pods, "m", &configured)).is_err());
    }
}
