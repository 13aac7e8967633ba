//! Pod subresources: `binding` (the scheduler's way to place a pod) and `eviction` (a polite
//! delete, as `kubectl drain` uses).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{ApiServer, Request, deletion, handlers, path::Target, status::ApiError};
use crate::store::{Store, StoreError};

fn success(message: &str) -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "message": message, "code": 201});
    (StatusCode::CREATED, axum::Json(status)).into_response()
}

/// POST pods/<name>/binding: sets `spec.nodeName`, once.
pub async fn bind<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let binding = handlers::parse_body(&req.body, &req.content_type)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid("Binding", name, vec![("target.name".into(), "Required value".into())])
        })?
        .to_owned();
    let key = target.resource.key(target.namespace.as_deref(), name);
    let current = server.store.get(&key).ok_or_else(|| ApiError::not_found("pods", name))?;
    let mut pod = handlers::decode(&current)?;
    if let Some(bound) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        return Err(ApiError::conflict_message(format!(
            "pod {name} is already assigned to node \"{bound}\""
        )));
    }
    pod["spec"]["nodeName"] = json!(node);
    let bytes = serde_json::to_vec(&pod).map_err(|e| ApiError::internal(e.to_string()))?;
    match server.store.update(&key, bytes, Some(current.mod_revision)).await {
        Ok(_) => Ok(success("")),
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict("pods", name)),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// POST pods/<name>/eviction: deletes the pod as the Eviction's `deleteOptions` say (disruption
/// budgets arrive with their controller).
pub async fn evict<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let eviction = handlers::optional_body(req)?;
    let options = eviction.get("deleteOptions").cloned().unwrap_or(Value::Null);
    let options = deletion::Options::parse(&req.params, &options)?;
    let key = target.resource.key(target.namespace.as_deref(), name);
    handlers::delete_object(server, target.resource, &key, &options).await?;
    Ok(success(""))
}
