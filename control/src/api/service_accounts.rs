//! ServiceAccount admission for new Pods, as kube-apiserver's `ServiceAccount` plugin does it:
//! the pod runs as `spec.serviceAccountName` (default `default`, mirrored into the deprecated
//! `spec.serviceAccount`), which must exist (else 403), and unless the pod or its account opts
//! out with `automountServiceAccountToken: false` it gets the projected `kube-api-access-*`
//! volume (a bound token, the cluster CA, its namespace) mounted read-only at the standard path
//! in every container. Mirror pods of static pods are left alone: their node wrote them.

use serde_json::{Value, json};

use super::{ApiError, ApiServer, objects, registry};
pub use crate::controllers::serviceaccounts::DEFAULT_ACCOUNT;
use crate::{
    controllers::serviceaccounts::{ROOT_CA_CONFIG_MAP, ROOT_CA_KEY, default_account},
    store::Store,
};

/// Where containers find their credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The annotation the node agent puts on mirror pods.
const MIRROR: &str = "kubernetes.io/config.mirror";
/// The token lifetime the volume asks for (upstream's 1 h plus 7 s, so agents asking for
/// exactly 3607 s are recognisably the admission's default).
const TOKEN_EXPIRATION_S: i64 = 3607;

impl<S: Store> ApiServer<S> {
    /// Pod `namespace/name` as stored.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let r = registry::builtin("pods", "").ok()?;
        super::decode_object(&self.store.get(&r.key(Some(namespace), name))?).ok()
    }

    /// The uid of pod `namespace/name`, if it exists (pod-bound token authentication).
    pub fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.pod(namespace, name)?["metadata"]["uid"].as_str().map(str::to_owned)
    }
}

/// The projected volume admission adds, named `name`.
fn token_volume(name: &str) -> Value {
    json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_S, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": ROOT_CA_KEY, "path": ROOT_CA_KEY}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}})
}

/// The account `namespace/name` as stored. A missing `default` is created on the spot: the
/// ServiceAccount loop would create it moments later, and a namespace's first pod should not
/// race it (upstream clients retry through that race; ours need not).
async fn account<S: Store>(
    server: &ApiServer<S>,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let r = registry::builtin("serviceaccounts", "")?;
    let key = r.key(Some(namespace), name);
    if server.store.get(&key).is_none() && name == DEFAULT_ACCOUNT {
        let mut account = default_account(namespace);
        objects::prepare_create(r, Some(namespace), &mut account)?;
        let bytes = serde_json::to_vec(&account).map_err(|e| ApiError::internal(e.to_string()))?;
        match server.store.create(&key, bytes).await {
            Ok(stored) => return super::decode_object(&stored).map(Some),
            // Another writer (the loop) got there first; its write may still be on its way to
            // readers (the store commits writes in groups), so the account is known to exist
            // even if the read below misses it.
            Err(crate::store::StoreError::AlreadyExists { .. }) => {
                return Ok(Some(server.store.get(&key).map_or(Ok(account), |o| super::decode_object(&o))?));
            }
            Err(e) => return Err(ApiError::internal(e.to_string())),
        }
    }
    server.store.get(&key).map(|o| super::decode_object(&o)).transpose()
}

/// Admits the new pod `pod` in `namespace` (defaulted, not yet stored).
pub async fn admit<S: Store>(
    server: &ApiServer<S>,
    namespace: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    if pod.pointer("/metadata/annotations").and_then(|a| a.get(MIRROR)).is_some() {
        return Ok(());
    }
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else { return Ok(()) };
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let name = text(&spec["serviceAccountName"])
        .or_else(|| text(&spec["serviceAccount"]))
        .unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned());
    spec["serviceAccountName"] = json!(name);
    spec["serviceAccount"] = json!(name);
    let Some(account) = account(server, namespace, &name).await? else {
        let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        return Err(ApiError::forbidden(format!(
            "pods \"{pod_name}\" is forbidden: error looking up service account {namespace}/{name}: \
             serviceaccount \"{name}\" not found"
        )));
    };
    let Some(spec) = pod.get_mut("spec") else { return Ok(()) };
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        mount_token(spec);
    }
    Ok(())
}

/// Adds the token volume and mounts it in every container that has nothing at [`MOUNT_PATH`].
fn mount_token(spec: &mut Value) {
    let taken = |spec: &Value, name: &str| {
        spec["volumes"].as_array().into_iter().flatten().any(|v| v["name"] == name)
    };
    let mut volume = format!("kube-api-access-{}", objects::random_suffix());
    while taken(spec, &volume) {
        volume = format!("kube-api-access-{}", objects::random_suffix());
    }
    let mut used = false;
    for list in ["initContainers", "containers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let mounted =
                c["volumeMounts"].as_array().into_iter().flatten().any(|m| m["mountPath"] == MOUNT_PATH);
            if mounted {
                continue;
            }
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            if let Some(mounts) = c["volumeMounts"].as_array_mut() {
                mounts.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
                used = true;
            }
        }
    }
    if !used {
        return;
    }
    if !spec["volumes"].is_array() {
        spec["volumes"] = json!([]);
    }
    if let Some(volumes) = spec["volumes"].as_array_mut() {
        volumes.push(token_volume(&volume));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_already_mounting_the_path_keep_their_mount() {
        let mut spec = json!({"containers": [
            {"name": "a", "image": "x"},
            {"name": "b", "image": "x", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}],
            "initContainers": [{"name": "i", "image": "x"}],
            "volumes": [{"name": "own", "emptyDir": {}}]});
        mount_token(&mut spec);
        let volume = spec["volumes"][1]["name"].as_str().expect("added").to_owned();
        assert!(volume.starts_with("kube-api-access-") && volume.len() == "kube-api-access-".len() + 5);
        assert_eq!(spec["volumes"][1]["projected"]["defaultMode"], 420);
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["name"], volume.as_str());
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().map(Vec::len), Some(1));
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["mountPath"], MOUNT_PATH);

        let mut all_own = json!({"containers": [{"name": "b", "image": "x",
            "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}]});
        mount_token(&mut all_own);
        assert!(all_own["volumes"].is_null(), "no container needs the volume");
    }
}
