//! `pods/<name>/log`: the API server finds the pod's node and proxies the request to the node
//! agent's log endpoint (`/containerLogs/<ns>/<pod>/<container>` on the port the Node reports in
//! `status.daemonEndpoints.kubeletEndpoint`), streaming the answer back — `kubectl logs`,
//! `-f` included.

use std::{sync::LazyLock, time::Duration};

use axum::{
    body::Body,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

use super::{ApiServer, Request, handlers::render, path::Target, registry, status::ApiError};
use crate::store::Store;

/// Query parameters passed on to the node.
const PASSED: &[&str] = &["follow", "previous", "tailLines", "limitBytes", "sinceSeconds", "timestamps"];

/// The client for the nodes' log endpoints. It keeps no idle connections: each request has its
/// own, closed when the answer ends (and none outlives the runtime that opened it).
static CLIENT: LazyLock<Client<HttpConnector, Empty<axum::body::Bytes>>> =
    LazyLock::new(|| Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http());

pub async fn logs<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let ns = target.namespace.clone().unwrap_or_default();
    let key = target.resource.key(Some(&ns), name);
    let pod = render(&server.store.get(&key).ok_or_else(|| ApiError::not_found("pods", name))?)?;
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    let container = match req.params.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).any(|n| n == c) => c.to_owned(),
        Some(c) => return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty());
    let node =
        node.ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let nodes = registry::builtin("nodes", "")?;
    let node_obj =
        server.store.get(&nodes.key(None, node)).ok_or_else(|| ApiError::not_found("nodes", node))?;
    let node_obj = render(&node_obj)?;
    let ip = node_obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::internal(format!("node {node} reports no InternalIP")))?
        .to_owned();
    let port = node_obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(10250);
    let query: Vec<String> =
        PASSED.iter().filter_map(|k| req.params.get(k).map(|v| format!("{k}={v}"))).collect();
    let url = format!("http://{ip}:{port}/containerLogs/{ns}/{name}/{container}?{}", query.join("&"));
    let request =
        hyper::Request::get(&url).body(Empty::new()).map_err(|e| ApiError::internal(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), CLIENT.request(request))
        .await
        .map_err(|_| ApiError::timeout(format!("the node {node} did not answer for the logs")))?
        .map_err(|e| ApiError::internal(format!("reaching node {node} for the logs: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let message = String::from_utf8_lossy(&body).into_owned();
        return Err(if status == StatusCode::NOT_FOUND {
            ApiError::bad_request(message)
        } else {
            ApiError::internal(message)
        });
    }
    Ok(([(header::CONTENT_TYPE, "text/plain")], Body::new(response.into_body())).into_response())
}
