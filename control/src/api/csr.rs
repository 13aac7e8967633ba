//! CertificateSigningRequests (certificates.k8s.io/v1). Creating one records who asked
//! (`spec.username`, `spec.groups`), as the API server does; a kubelet's request for its client
//! certificate (signer `kubernetes.io/kube-apiserver-client-kubelet`, subject
//! `system:node:<name>` in `system:nodes`, client-auth usages only) from a bootstrap token or from
//! that node itself is approved and signed by the cluster CA at once — the CSR approving and
//! signing controllers collapsed into the create, so a joining node waits one round trip.
//! Anything else stays pending (no certificate) for an administrator.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{ApiServer, Request, handlers, objects::FieldValidation, path::Target, status::ApiError};
use crate::{auth::UserInfo, store::Store};

/// The signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// Why a request is not auto-approved (`None`: it is, for this node name).
pub fn kubelet_client_request(spec: &Value, requester: &UserInfo) -> Result<String, String> {
    if spec["signerName"].as_str() != Some(KUBELET_CLIENT_SIGNER) {
        return Err("not a kubelet client certificate request".into());
    }
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
    if subject.organizations != ["system:nodes"] || !subject.sans.is_empty() {
        return Err("a kubelet client certificate names only system:nodes and no SANs".into());
    }
    let usages: Vec<&str> =
        spec["usages"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let allowed = ["digital signature", "key encipherment", "client auth"];
    if !usages.contains(&"client auth") || usages.iter().any(|u| !allowed.contains(u)) {
        return Err("usages must be client auth (with digital signature, key encipherment)".into());
    }
    let bootstrapper = requester.groups.iter().any(|g| g == crate::auth::bootstrap::GROUP);
    let itself =
        requester.groups.iter().any(|g| g == "system:nodes") && requester.name == subject.common_name;
    if !(bootstrapper || itself) {
        return Err(format!("{} may not request a certificate for node {node}", requester.name));
    }
    Ok(node)
}

/// Signs the request in `spec` with `ca` for its asked lifetime (default a year): the
/// base64 PEM `status.certificate`.
fn sign_spec(ca: &crate::pki::issue::Ca, spec: &Value) -> Result<String, ApiError> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(spec["request"].as_str().unwrap_or_default())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::bad_request("spec.request is not a base64 PEM CSR"))?;
    let lifetime = spec["expirationSeconds"].as_i64().map_or(365 * 86400, |s| s.clamp(600, 365 * 86400));
    let cert = ca
        .sign_request(&pem, time::Duration::seconds(lifetime))
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
        match kubelet_client_request(&value["spec"], user) {
            Ok(node) => {
                let certificate = sign_spec(ca, &value["spec"])?;
                let now = now_rfc3339();
                value["status"] = json!({
                    "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved",
                        "message": format!("Auto approving the client certificate of node {node}."),
                        "lastUpdateTime": now, "lastTransitionTime": now}],
                    "certificate": certificate,
                });
                tracing::info!(%node, requester = %user.name, "node client certificate approved and signed");
            }
            Err(why) => tracing::info!(requester = %user.name, %why, "certificate request left pending"),
        }
    }
    let validation = FieldValidation::from_param(req.params.get("fieldValidation"))?;
    let (stored, _) = handlers::create_stored(server, target, value, validation, None).await?;
    Ok((StatusCode::CREATED, axum::Json(handlers::render(&stored)?)).into_response())
}

/// Signers whose approved requests the cluster CA signs as client certificates.
const CLIENT_SIGNERS: [&str; 2] = [KUBELET_CLIENT_SIGNER, "kubernetes.io/kube-apiserver-client"];

/// PUT certificatesigningrequests/<name>/approval (`kubectl certificate approve|deny`): records
/// the conditions; an approved client-certificate request is signed then, its subject as asked
/// (an administrator's approval is the authority here).
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
                && CLIENT_SIGNERS.contains(&signer)
                && let Some(ca) = &ca
            {
                new["status"]["certificate"] = json!(sign_spec(ca, &old["spec"])?);
            }
            Ok(new)
        })
        .await?;
    Ok((StatusCode::OK, axum::Json(handlers::render(&stored)?)).into_response())
}
