//! `serviceaccounts/<name>/token` (TokenRequest, authentication.k8s.io/v1): a signed token for
//! the ServiceAccount, as `kubectl create token` asks for. With `boundObjectRef` naming a Pod of
//! this account the token is bound to that pod (valid only while it exists). A node agent may
//! only ask for tokens bound to pods on its node (the NodeRestriction admission rule; the node
//! authorizer has already checked that one of its pods runs as the account).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{ApiServer, Request, handlers, path::Target, status::ApiError};
use crate::{
    auth::sa_token::{BoundPod, DEFAULT_EXPIRATION_S, MAX_EXPIRATION_S, MIN_EXPIRATION_S, ServiceAccountRef},
    store::Store,
};

/// The audience tokens are for when the request names none.
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// POST serviceaccounts/<name>/token.
pub async fn create_token<S: Store + Clone>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let keys = server.token_keys().ok_or_else(|| {
        ApiError::bad_request("this server issues no ServiceAccount tokens (it was started without a PKI)")
    })?;
    let namespace = target.namespace.clone().unwrap_or_default();
    let key = target.resource.key(Some(&namespace), name);
    let stored = server.store.get(&key).ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
    let account: Value =
        serde_json::from_slice(&stored.value).map_err(|e| ApiError::internal(e.to_string()))?;
    let uid = account["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let body = handlers::optional_body(req)?;
    let spec = &body["spec"];
    let lifetime = spec["expirationSeconds"].as_i64().unwrap_or(DEFAULT_EXPIRATION_S);
    if lifetime < MIN_EXPIRATION_S {
        return Err(ApiError::invalid(
            "TokenRequest",
            name,
            vec![(
                "spec.expirationSeconds".into(),
                format!("Invalid value: {lifetime}: may not specify a duration less than 10 minutes"),
            )],
        ));
    }
    let lifetime = lifetime.min(MAX_EXPIRATION_S);
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_AUDIENCE.to_owned()]);
    let now = jiff::Timestamp::now();
    let pod = bound_pod(server, &namespace, name, &spec["boundObjectRef"])?;
    if let Some(node) = req.user.as_ref().and_then(node_of) {
        let forbidden = |why: &str| {
            ApiError::forbidden(format!(
                "serviceaccounts \"{name}\" is forbidden: node requested token {why}"
            ))
        };
        match &pod {
            None => return Err(forbidden("not bound to a pod")),
            Some((_, on)) if on.as_deref() != Some(node) => {
                return Err(forbidden("bound to a pod scheduled on a different node"));
            }
            Some(_) => {}
        }
    }
    let pod = pod.map(|(p, _)| p);
    let account_ref = ServiceAccountRef { namespace: namespace.clone(), name: name.to_owned(), uid, pod };
    let token = keys
        .issue(&account_ref, &audiences, now.as_second(), lifetime)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = jiff::Timestamp::from_second(now.as_second() + lifetime)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let answer = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": lifetime, "boundObjectRef": spec["boundObjectRef"]},
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// The node a user is, if it is one.
fn node_of(user: &crate::auth::UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == "system:nodes") {
        return None;
    }
    user.name.strip_prefix("system:node:")
}

/// The pod `reference` (a TokenRequest's `boundObjectRef`) binds the token to, with the node it
/// is bound to; `None` when the request binds nothing. Kubernetes' checks: the pod exists, has
/// the uid the reference gives (if any) and runs as this account.
fn bound_pod<S: Store + Clone>(
    server: &ApiServer<S>,
    namespace: &str,
    account: &str,
    reference: &Value,
) -> Result<Option<(BoundPod, Option<String>)>, ApiError> {
    if reference.is_null() {
        return Ok(None);
    }
    let kind = reference["kind"].as_str().unwrap_or_default();
    if kind != "Pod" {
        return Err(ApiError::bad_request(format!(
            "cannot bind token to object of kind {kind:?}: only Pods"
        )));
    }
    let api_version = reference["apiVersion"].as_str().unwrap_or("v1");
    if !api_version.is_empty() && api_version != "v1" {
        return Err(ApiError::bad_request(format!("cannot bind token to {api_version} Pod: only v1")));
    }
    let name = reference["name"].as_str().unwrap_or_default();
    let pod = server.pod(namespace, name).ok_or_else(|| ApiError::not_found("pods", name))?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    if let Some(wanted) = reference["uid"].as_str().filter(|u| !u.is_empty())
        && wanted != uid
    {
        return Err(ApiError::conflict_message(format!(
            "the UID in the bound object reference ({wanted}) does not match the UID in record. \
             The object might have been deleted and then recreated"
        )));
    }
    // A pod without an account (a mirror pod) runs as none, never as `default`.
    let runs_as = pod["spec"]["serviceAccountName"].as_str().unwrap_or("");
    if runs_as != account {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount {account:?} to pod running with different serviceaccount name."
        )));
    }
    let node = pod["spec"]["nodeName"].as_str().map(str::to_owned);
    Ok(Some((BoundPod { name: name.to_owned(), uid }, node)))
}
