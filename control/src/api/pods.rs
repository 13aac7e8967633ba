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
    bind_key(server, &key, name, &node).await?;
    Ok(success(""))
}

/// Sets `spec.nodeName` of the pod `name` stored at `key`, unless it is bound already. A write
/// racing this one (a status update) is retried against the new state, as the API server's
/// guaranteed update does.
pub(super) async fn bind_key<S: Store>(
    server: &ApiServer<S>,
    key: &str,
    name: &str,
    node: &str,
) -> Result<crate::store::Object, ApiError> {
    for _ in 0..5 {
        let current = server.store.get(key).ok_or_else(|| ApiError::not_found("pods", name))?;
        let mut pod = handlers::decode(&current)?;
        if let Some(bound) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_message(format!(
                "pod {name} is already assigned to node \"{bound}\""
            )));
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict_message(format!(
                "pod {name} is being deleted, cannot be assigned"
            )));
        }
        pod["spec"]["nodeName"] = json!(node);
        // As the API server's binding does: the pod is scheduled now (replacing a False left by
        // earlier failed attempts).
        let scheduled =
            json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": super::objects::now()});
        match pod["status"]["conditions"].as_array_mut() {
            Some(list) => {
                list.retain(|c| c["type"] != "PodScheduled");
                list.push(scheduled);
            }
            None => pod["status"]["conditions"] = json!([scheduled]),
        }
        let bytes = serde_json::to_vec(&pod).map_err(|e| ApiError::internal(e.to_string()))?;
        match server.store.update(key, bytes, Some(current.mod_revision)).await {
            Ok(stored) => return Ok(stored),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::internal(e.to_string())),
        }
    }
    Err(ApiError::conflict("pods", name))
}

/// POST pods/<name>/eviction: deletes the pod as the Eviction's `deleteOptions` say (disruption
/// budgets arrive with their controller).
pub async fn evict<S: Store + Clone>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let eviction = handlers::optional_body(req)?;
    let options = eviction.get("deleteOptions").cloned().unwrap_or(Value::Null);
    let options = deletion::Options::parse(&req.params, &options)?;
    let key = target.resource.key(target.namespace.as_deref(), name);
    let stored = server.store.get(&key).ok_or_else(|| ApiError::not_found("pods", name))?;
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_slice(&stored.value).map_err(|e| ApiError::internal(e.to_string()))?;
    // A pod already on its way out needs no budget (Kubernetes lets such evictions through).
    if pod.metadata.deletion_timestamp.is_none() {
        super::disruption::admit(server, target.namespace.as_deref().unwrap_or_default(), &pod).await?;
    }
    handlers::delete_object(server, target.resource, &key, &options).await?;
    Ok(success(""))
}
