//! `serviceaccounts/<name>/token` (TokenRequest, authentication.k8s.io/v1): a signed token for
//! the ServiceAccount, as `kubectl create token` asks for.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{ApiServer, Request, handlers, path::Target, status::ApiError};
use crate::{
    auth::sa_token::{DEFAULT_EXPIRATION_S, MAX_EXPIRATION_S, MIN_EXPIRATION_S, ServiceAccountRef},
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
    let account_ref = ServiceAccountRef { namespace: namespace.clone(), name: name.to_owned(), uid };
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
