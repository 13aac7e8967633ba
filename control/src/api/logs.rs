//! `pods/<name>/log`: the API server finds the pod's node and proxies the request to the node
//! agent's log endpoint (`/containerLogs/<ns>/<pod>/<container>` on the port the Node reports in
//! `status.daemonEndpoints.kubeletEndpoint`), streaming the answer back — `kubectl logs`,
//! `-f` included. The agent is reached over TLS: its serving certificate is checked against the
//! cluster CA for the node's address, and the API server shows its own client certificate
//! (`kube-apiserver-kubelet-client`), which the agent authorizes through a SubjectAccessReview.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{ApiServer, Request, handlers::render, path::Target, registry, status::ApiError};
use crate::store::Store;

/// Query parameters passed on to the node.
const PASSED: &[&str] = &["follow", "previous", "tailLines", "limitBytes", "sinceSeconds", "timestamps"];

/// GET `path` (with its query) from node `node`'s agent at `ip:port` over TLS with `tls`, on a connection
/// of its own that closes when the answer ends (none outlives the runtime that opened it).
async fn fetch(
    tls: Arc<rustls::ClientConfig>,
    node: &str,
    ip: &str,
    port: u16,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let address: std::net::IpAddr = ip.parse().map_err(|_| format!("{ip:?} is not an IP address"))?;
    let tcp = tokio::net::TcpStream::connect((address, port)).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::IpAddress(address.into());
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with the agent: {e}"))?;
    // The CA signs other servers too: the certificate must be this node's own.
    let holder = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|der| crate::pki::inspect::parse_der(der).ok())
        .map(|info| info.common_name);
    if holder.as_deref() != Some(format!("system:node:{node}").as_str()) {
        return Err(format!("the agent at {ip} presented the certificate of {holder:?}, not of node {node}"));
    }
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(header::HOST, format!("{ip}:{port}"))
        .body(Empty::<axum::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender.send_request(request).await.map_err(|e| e.to_string())
}

pub async fn logs<S: Store + Clone>(
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
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(10250);
    let query: Vec<String> =
        PASSED.iter().filter_map(|k| req.params.get(k).map(|v| format!("{k}={v}"))).collect();
    let path = format!("/containerLogs/{ns}/{name}/{container}?{}", query.join("&"));
    let tls = server
        .kubelet_tls()
        .ok_or_else(|| ApiError::internal("this server has no identity to reach node agents with"))?;
    let response = tokio::time::timeout(Duration::from_secs(30), fetch(tls.clone(), node, &ip, port, &path))
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
