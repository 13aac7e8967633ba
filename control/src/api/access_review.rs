//! SubjectAccessReview (authorization.k8s.io/v1): "may this user do this?", answered by the same
//! authorizers that guard every request and never stored. Node agents ask it before serving
//! their log and metrics endpoints (the kubelet's webhook authorization), so RBAC decides who
//! reads them. SelfSubjectAccessReview asks it about the requester (`kubectl auth can-i`).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{ApiServer, Request, handlers, status::ApiError};
use crate::{
    auth::UserInfo,
    authz::{self, Attributes, Verdict, attributes::ResourceAttributes},
    store::Store,
};

/// The attributes a review's `spec` asks about, for the user it names (`self_user`: the
/// requester's own, for a SelfSubjectAccessReview).
fn attributes(kind: &str, spec: &Value, self_user: Option<&UserInfo>) -> Result<Attributes, ApiError> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let invalid =
        |field: &str, why: &str| ApiError::invalid(kind, "", vec![(field.to_owned(), why.to_owned())]);
    let user = match self_user {
        Some(user) => user.clone(),
        None => UserInfo {
            name: text(&spec["user"]),
            groups: spec["groups"].as_array().into_iter().flatten().map(text).collect(),
        },
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(invalid(
            "spec.user",
            "Invalid value: \"\": at least one of user or group must be specified",
        ));
    }
    let (resource, non_resource) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    match (resource.is_object(), non_resource.is_object()) {
        (true, false) => Ok(Attributes {
            user,
            verb: text(&resource["verb"]),
            resource: Some(ResourceAttributes {
                group: text(&resource["group"]),
                resource: text(&resource["resource"]),
                subresource: text(&resource["subresource"]),
                namespace: text(&resource["namespace"]),
                name: text(&resource["name"]),
            }),
            path: String::new(),
        }),
        (false, true) => Ok(Attributes {
            user,
            verb: text(&non_resource["verb"]),
            resource: None,
            path: text(&non_resource["path"]),
        }),
        _ => Err(invalid(
            "spec.resourceAttributes",
            "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

/// POST subjectaccessreviews or selfsubjectaccessreviews (`kind`): the review back with its
/// `status` filled in.
pub fn create<S: Store + Clone>(
    server: &ApiServer<S>,
    kind: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let mut review = handlers::parse_body(&req.body, &req.content_type)?;
    let self_user = match kind {
        "SelfSubjectAccessReview" => Some(
            req.user
                .as_ref()
                .ok_or_else(|| ApiError::bad_request("no user to review: the request is anonymous"))?,
        ),
        _ => None,
    };
    let attrs = attributes(kind, &review["spec"], self_user)?;
    review["status"] = match authz::review(&server.store, &attrs) {
        Verdict::Allow(by) => json!({"allowed": true, "reason": by}),
        Verdict::Deny(why) => json!({"allowed": false, "reason": why}),
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!(kind);
    Ok((StatusCode::CREATED, axum::Json(review)).into_response())
}
