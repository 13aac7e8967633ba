//! CertificateSigningRequests (certificates.k8s.io/v1). Creating one records who asked
//! (`spec.username`, `spec.groups`), as the API server does; a kubelet's request for its client
//! certificate (signer `kubernetes.io/kube-apiserver-client-kubelet`, subject
//! `system:node:<name>` in `system:nodes`, client-auth usages only) from a bootstrap token or from
//! that node itself is approved and signed by the cluster CA at once — the CSR approving and
//! signing controllers collapsed into the create, so a joining node waits one round trip.
//! A node agent's serving certificate (signer `kubernetes.io/kubelet-serving`, the same subject,
//! server-auth usages, SANs among the addresses and name its Node reports) asked by that node or
//! by a cluster admin is approved the same way: the API server verifies agents' endpoints against
//! the CA, so they need one. Anything else stays pending (no certificate) for an administrator.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{ApiServer, Request, handlers, objects::FieldValidation, path::Target, status::ApiError};
use crate::{auth::UserInfo, pki::issue::Usage, store::Store};

/// The signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// The signer of node agents' serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The subject a request asks for, if it is `system:node:<name>` in `system:nodes` with
/// exactly the usage `usage` (plus digital signature, key encipherment): the node's name and the
/// subject.
fn node_subject(spec: &Value, usage: &str) -> Result<(String, crate::pki::issue::Subject), String> {
    let pem = spec["request"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("spec.request is not a base64 PEM CSR")?;
    let subject = crate::pki::issue::csr_subject(&pem).map_err(|e| e.to_string())?;
    let node = subject
        .common_name
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
        .ok_or("the subject is not system:node:<name>")?
        .to_owned();
    if subject.organizations != ["system:nodes"] {
        return Err("a node certificate names only the organization system:nodes".into());
    }
    let usages: Vec<&str> =
        spec["usages"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let allowed = ["digital signature", "key encipherment", usage];
    if !usages.contains(&usage) || usages.iter().any(|u| !allowed.contains(u)) {
        return Err(format!("usages must be {usage} (with digital signature, key encipherment)"));
    }
    Ok((node, subject))
}

/// Whether `requester` is node `subject` itself.
fn is_node(requester: &UserInfo, subject: &crate::pki::issue::Subject) -> bool {
    requester.groups.iter().any(|g| g == "system:nodes") && requester.name == subject.common_name
}

/// Why a node's serving-certificate request is not auto-approved (`Ok`: it is, for this node
/// name). `addresses` gives what the named Node reports (its addresses), `None` if there is no
/// such Node.
///
/// A node writes its own Node status, so the addresses alone would let it name anything; a SAN
/// that `reserved` says belongs to the API server (its certificate's names and addresses) or a
/// wildcard is never approved automatically.
pub fn kubelet_serving_request(
    spec: &Value,
    requester: &UserInfo,
    addresses: impl Fn(&str) -> Option<Vec<String>>,
    reserved: impl Fn(&str) -> bool,
) -> Result<String, String> {
    if spec["signerName"].as_str() != Some(KUBELET_SERVING_SIGNER) {
        return Err("not a kubelet serving certificate request".into());
    }
    let (node, subject) = node_subject(spec, "server auth")?;
    let admin = requester.groups.iter().any(|g| g == "system:masters");
    if !(admin || is_node(requester, &subject)) {
        return Err(format!("{} may not request a serving certificate for node {node}", requester.name));
    }
    let known = addresses(&node).ok_or_else(|| format!("there is no node {node}"))?;
    if subject.sans.is_empty() {
        return Err("a serving certificate names at least one address".into());
    }
    if let Some(foreign) = subject.sans.iter().find(|s| **s != node && !known.contains(s)) {
        return Err(format!("node {node} does not report the address {foreign}"));
    }
    if let Some(taken) = subject.sans.iter().find(|s| s.contains('*') || reserved(s)) {
        return Err(format!("{taken} is not a name a node may serve as"));
    }
    Ok(node)
}

/// Why a request is not auto-approved (`Ok`: it is, for this node name).
pub fn kubelet_client_request(spec: &Value, requester: &UserInfo) -> Result<String, String> {
    if spec["signerName"].as_str() != Some(KUBELET_CLIENT_SIGNER) {
        return Err("not a kubelet client certificate request".into());
    }
    let (node, subject) = node_subject(spec, "client auth")?;
    if !subject.sans.is_empty() {
        return Err("a kubelet client certificate names no SANs".into());
    }
    let bootstrapper = requester.groups.iter().any(|g| g == crate::auth::bootstrap::GROUP);
    if !(bootstrapper || is_node(requester, &subject)) {
        return Err(format!("{} may not request a certificate for node {node}", requester.name));
    }
    Ok(node)
}

/// What the CA signs a request of `signer` as, if it signs such requests at all.
fn usage_of(signer: &str) -> Option<Usage> {
    match signer {
        KUBELET_CLIENT_SIGNER | "kubernetes.io/kube-apiserver-client" => Some(Usage::Client),
        KUBELET_SERVING_SIGNER => Some(Usage::Server),
        _ => None,
    }
}

/// Signs the request in `spec` with `ca` for its asked lifetime (default a year): the
/// base64 PEM `status.certificate`.
fn sign_spec(ca: &crate::pki::issue::Ca, spec: &Value) -> Result<String, ApiError> {
    let usage = usage_of(spec["signerName"].as_str().unwrap_or_default())
        .ok_or_else(|| ApiError::bad_request("the cluster CA does not sign for this signer"))?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(spec["request"].as_str().unwrap_or_default())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::bad_request("spec.request is not a base64 PEM CSR"))?;
    let lifetime = spec["expirationSeconds"].as_i64().map_or(365 * 86400, |s| s.clamp(600, 365 * 86400));
    let cert = ca
        .sign_request(&pem, usage, time::Duration::seconds(lifetime))
        .map_err(|e| ApiError::bad_request(format!("signing the request: {e:#}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(cert))
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// POST certificatesigningrequests.
pub async fn create<S: Store + Clone>(
    server: &ApiServer<S>,
    target: &Target,
    req: &Request,
) -> Result<Response, ApiError> {
    let mut value = handlers::parse_body(&req.body, &req.content_type)?;
    if !value["spec"].is_object() {
        return Err(ApiError::invalid(
            "CertificateSigningRequest",
            "",
            vec![("spec".into(), "Required value".into())],
        ));
    }
    if let Some(user) = &req.user {
        value["spec"]["username"] = json!(user.name);
        value["spec"]["groups"] = json!(user.groups);
    }
    value["status"] = json!({});
    if let (Some(ca), Some(user)) = (server.ca(), &req.user) {
        let spec = &value["spec"];
        let decision = if spec["signerName"].as_str() == Some(KUBELET_SERVING_SIGNER) {
            kubelet_serving_request(
                spec,
                user,
                |node| node_addresses(server, node),
                |san| server.reserved_name(san),
            )
            .map(|n| (n, "serving"))
        } else {
            kubelet_client_request(spec, user).map(|n| (n, "client"))
        };
        match decision {
            Ok((node, kind)) => {
                let certificate = sign_spec(ca, spec)?;
                let now = now_rfc3339();
                value["status"] = json!({
                    "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved",
                        "message": format!("Auto approving the {kind} certificate of node {node}."),
                        "lastUpdateTime": now, "lastTransitionTime": now}],
                    "certificate": certificate,
                });
                tracing::info!(%node, requester = %user.name, kind, "node certificate approved and signed");
            }
            Err(why) => tracing::info!(requester = %user.name, %why, "certificate request left pending"),
        }
    }
    let validation = FieldValidation::from_param(req.params.get("fieldValidation"))?;
    let (stored, _) = handlers::create_stored(server, target, value, validation, None).await?;
    Ok((StatusCode::CREATED, axum::Json(handlers::render(&stored)?)).into_response())
}

/// The addresses (and host names) Node `name` reports, `None` if there is no such Node.
fn node_addresses<S: Store + Clone>(server: &ApiServer<S>, name: &str) -> Option<Vec<String>> {
    let nodes = super::registry::find("", "v1", "nodes")?;
    let node: Value = serde_json::from_slice(&server.store.get(&nodes.key(None, name))?.value).ok()?;
    Some(
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a["address"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// PUT certificatesigningrequests/<name>/approval (`kubectl certificate approve|deny`): records
/// the conditions; an approved request of a signer the cluster CA serves (client certificates,
/// node serving certificates) is signed then, its subject as asked (an administrator's approval
/// is the authority here).
pub async fn approve<S: Store + Clone>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let body = handlers::parse_body(&req.body, &req.content_type)?;
    let mut conditions = body["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let now = now_rfc3339();
    for c in &mut conditions {
        for field in ["lastUpdateTime", "lastTransitionTime"] {
            if c[field].is_null() {
                c[field] = json!(now);
            }
        }
    }
    let holds = |kind: &str| conditions.iter().any(|c| c["type"] == kind && c["status"] == "True");
    let (approved, denied) = (holds("Approved"), holds("Denied"));
    if approved && denied {
        return Err(ApiError::invalid(
            "CertificateSigningRequest",
            name,
            vec![("status.conditions".into(), "Approved and Denied are mutually exclusive".into())],
        ));
    }
    let ca = server.ca().cloned();
    // The write goes to the status (the approval subresource is part of it).
    let mut status_target = target.clone();
    status_target.subresource = Some("status".into());
    let (stored, _) =
        handlers::write_existing(server, &status_target, name, None, FieldValidation::Ignore, None, |old| {
            let mut new = old.clone();
            new["status"]["conditions"] = json!(conditions);
            let signer = old["spec"]["signerName"].as_str().unwrap_or_default();
            let unsigned = old["status"]["certificate"].as_str().is_none_or(str::is_empty);
            if approved
                && unsigned
                && usage_of(signer).is_some()
                && let Some(ca) = &ca
            {
                new["status"]["certificate"] = json!(sign_spec(ca, &old["spec"])?);
            }
            Ok(new)
        })
        .await?;
    Ok((StatusCode::OK, axum::Json(handlers::render(&stored)?)).into_response())
}
