//! What every Active namespace holds, as kube-controller-manager's ServiceAccount and root-CA
//! publisher controllers keep it: a `default` ServiceAccount (recreated when deleted) and the
//! `kube-root-ca.crt` ConfigMap whose `ca.crt` is the cluster CA (restored when edited or
//! deleted), which pods' projected token volumes read to trust the API server.
//!
//! The loop watches store keys rather than the typed cache (neither kind is cached for anyone
//! else), queueing a namespace whenever it, its `default` ServiceAccount or its
//! `kube-root-ca.crt` changes; reconciling reads the store, which is authoritative.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Ctx, Loop, Work, queue::Queue};
use crate::{
    api::{ApiError, registry},
    store::{Object, Store},
};

const COMPONENT: &str = "service-account-controller";
/// The ServiceAccount every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";
/// The ConfigMap carrying the cluster CA into every namespace, and its key.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
pub const ROOT_CA_KEY: &str = "ca.crt";

#[derive(Debug, Default)]
pub struct ServiceAccounts;

impl ServiceAccounts {
    /// Queues the namespace a store write concerns, if it is one this loop keeps.
    pub fn observe(&mut self, key: &str, queue: &mut Queue<Work>) {
        let Some((r, namespace, name)) = registry::by_key(key) else { return };
        let namespace = match (r.kind, namespace) {
            ("Namespace", None) => name,
            ("ServiceAccount", Some(ns)) if name == DEFAULT_ACCOUNT => ns,
            ("ConfigMap", Some(ns)) if name == ROOT_CA_CONFIG_MAP => ns,
            _ => return,
        };
        queue.push((Loop::ServiceAccounts, namespace.to_owned()));
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        namespace: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let server = &ctx.server;
        let namespaces = registry::builtin("namespaces", "")?;
        let Some(ns) = server.store.get(&namespaces.key(None, namespace)) else { return Ok(None) };
        let ns = crate::api::decode_object(&ns)?;
        // A namespace being emptied gets nothing new (the API server would refuse it anyway).
        if ns.pointer("/metadata/deletionTimestamp").is_some() || ns["status"]["phase"] != "Active" {
            return Ok(None);
        }
        let accounts = registry::builtin("serviceaccounts", "")?;
        if server.store.get(&accounts.key(Some(namespace), DEFAULT_ACCOUNT)).is_none() {
            ignore_exists(server.create_as(default_account(namespace), COMPONENT).await)?;
        }
        // Without a PKI (in-process tests) there is no CA to publish.
        let Some(ca) = server.ca() else { return Ok(None) };
        let config_maps = registry::builtin("configmaps", "")?;
        let wanted = json!({ROOT_CA_KEY: ca.cert_pem});
        match server.store.get(&config_maps.key(Some(namespace), ROOT_CA_CONFIG_MAP)) {
            None => {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": namespace,
                        "annotations": {"kubernetes.io/description": DESCRIPTION}},
                    "data": wanted});
                ignore_exists(server.create_as(cm, COMPONENT).await)?;
            }
            Some(stored) => {
                let mut cm = crate::api::decode_object(&stored)?;
                // Other keys are left alone, as upstream's publisher does; only ours is restored.
                if cm["data"][ROOT_CA_KEY] != wanted[ROOT_CA_KEY] {
                    if !cm["data"].is_object() {
                        cm["data"] = json!({});
                    }
                    cm["data"][ROOT_CA_KEY] = wanted[ROOT_CA_KEY].clone();
                    cm["metadata"]["resourceVersion"] = json!(stored.mod_revision.to_string());
                    server.replace_as(cm, false, COMPONENT).await?;
                }
            }
        }
        Ok(None)
    }
}

/// What upstream's root-CA publisher writes on the ConfigMap.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using \
                           internal endpoints such as the internal service IP or kubernetes.default.svc. \
                           No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Another writer (the API server's own admission, a racing client) creating it first is fine.
fn ignore_exists(created: Result<Object, ApiError>) -> Result<(), ApiError> {
    match created {
        Err(e) if e.reason != "AlreadyExists" => Err(e),
        _ => Ok(()),
    }
}

/// The `default` ServiceAccount object for `namespace` (the API server creates it on first use
/// too, see `api/service_accounts.rs`).
pub fn default_account(namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DEFAULT_ACCOUNT, "namespace": namespace}})
}
