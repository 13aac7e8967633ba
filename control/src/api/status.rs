//! Errors as the `metav1.Status` bodies Kubernetes clients understand.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// A failed request: HTTP code, Status reason, message and optional details.
#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(plural: &str, name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", format!("{plural} \"{name}\" not found"))
            .with_details(json!({"name": name, "kind": plural}))
    }

    pub fn no_such_path(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn already_exists(plural: &str, name: &str) -> Self {
        Self::new(StatusCode::CONFLICT, "AlreadyExists", format!("{plural} \"{name}\" already exists"))
            .with_details(json!({"name": name, "kind": plural}))
    }

    pub fn conflict(plural: &str, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
        .with_details(json!({"name": name, "kind": plural}))
    }

    /// A 409 with a message of its own (e.g. a pod already bound).
    pub fn conflict_message(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is over {limit} bytes"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!("only application/json is served here, the client accepts {accept:?}"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body's media type {content_type:?} is not supported"),
        )
    }

    /// 422 with one cause per invalid field.
    pub fn invalid(kind: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let message = format!(
            "{kind} \"{name}\" is invalid: {}",
            causes.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join(", ")
        );
        let causes: Vec<Value> = causes
            .into_iter()
            .map(
                |(field, message)| json!({"reason": "FieldValueInvalid", "field": field, "message": message}),
            )
            .collect();
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
            .with_details(json!({"name": name, "kind": kind, "causes": causes}))
    }

    /// 409 for a server-side apply that would take fields other managers own: one cause per
    /// (manager, field).
    pub fn apply_conflicts(conflicts: &[(String, String)]) -> Self {
        let plural = if conflicts.len() == 1 { "" } else { "s" };
        let listed: Vec<String> =
            conflicts.iter().map(|(m, f)| format!("conflict with \"{m}\": {f}")).collect();
        let message =
            format!("Apply failed with {} conflict{plural}: {}", conflicts.len(), listed.join("\n"));
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f}))
            .collect();
        Self::new(StatusCode::CONFLICT, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// An apply conflict (as opposed to a lost compare-and-swap race).
    pub fn is_field_conflict(&self) -> bool {
        self.details.as_ref().and_then(|d| d.get("causes")).is_some() && self.code == StatusCode::CONFLICT
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The Status object (also what a watch's ERROR event carries).
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.status())).into_response()
    }
}
