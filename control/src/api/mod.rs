//! The Kubernetes-compatible API server over a [`Store`].

mod access_review;
mod admission;
mod batch;
mod claims;
mod csr;
pub mod deletion;
mod discovery;
pub(crate) mod disruption;
mod fields;
mod handlers;
mod internal;
mod logs;
mod managed;
mod objects;
mod openapi;
mod patch;
mod path;
mod pods;
mod priority;
mod protobuf;
pub mod registry;
mod scale;
mod selector;
pub mod service_accounts;
mod status;
mod tables;
mod tokens;
mod watch;

use std::{collections::HashMap, net::Ipv4Addr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, Query, State},
    http::{Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

pub use admission::quota;
pub use handlers::decode as decode_object;
pub use status::ApiError;

use crate::store::{Object, Store};

/// Request bodies above this are refused with 413 (Kubernetes' limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Query parameters.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter as Go's `strconv.ParseBool` reads it (clients send `true`, `True`, `1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
    }
}

/// What a handler needs of the HTTP request.
#[derive(Debug)]
pub struct Request {
    pub params: Params,
    pub body: axum::body::Bytes,
    pub content_type: String,
    /// The `Accept` header.
    pub accept: String,
    /// The `User-Agent` header (names the field manager when the request does not).
    pub user_agent: String,
    /// The client asked for `as=Table` (kubectl get).
    pub table: bool,
    /// Who is asking (authenticated servers only).
    pub user: Option<crate::auth::UserInfo>,
}

/// Server state shared by every request.
#[derive(Debug)]
pub struct ApiServer<S> {
    pub store: S,
    /// `--service-cluster-ip-range`.
    pub service_cidr: (Ipv4Addr, u8),
    allocations: tokio::sync::Mutex<()>,
    /// Quota charges and recounts, one at a time (`admission/quota.rs`).
    quota_lock: tokio::sync::Mutex<()>,
    /// The ServiceAccount token key (`--pki-dir`'s `sa.key`), once set.
    token_keys: std::sync::OnceLock<Arc<crate::auth::sa_token::TokenKeys>>,
    /// The cluster CA, to sign node client certificates with (`--pki-dir`), once set.
    ca: std::sync::OnceLock<Arc<crate::pki::issue::Ca>>,
    /// How to reach node agents (the CA to check them with, the kubelet client identity).
    kubelet_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    /// The names and addresses in the API server's own certificate.
    apiserver_sans: std::sync::OnceLock<Vec<String>>,
}

impl<S: Store + Clone> ApiServer<S> {
    pub fn new(store: S, service_cidr: (Ipv4Addr, u8)) -> Self {
        Self {
            store,
            service_cidr,
            allocations: tokio::sync::Mutex::new(()),
            quota_lock: tokio::sync::Mutex::new(()),
            token_keys: Default::default(),
            ca: Default::default(),
            kubelet_tls: Default::default(),
            apiserver_sans: Default::default(),
        }
    }

    /// Issue ServiceAccount tokens with `keys` (TokenRequest); once.
    pub fn set_token_keys(&self, keys: Arc<crate::auth::sa_token::TokenKeys>) {
        let _ = self.token_keys.set(keys);
    }

    pub fn token_keys(&self) -> Option<&Arc<crate::auth::sa_token::TokenKeys>> {
        self.token_keys.get()
    }

    /// Sign approved node client certificates with `ca`; once.
    pub fn set_ca(&self, ca: Arc<crate::pki::issue::Ca>) {
        let _ = self.ca.set(ca);
    }

    pub fn ca(&self) -> Option<&Arc<crate::pki::issue::Ca>> {
        self.ca.get()
    }

    /// Reach node agents' endpoints with `tls`; once.
    pub fn set_kubelet_tls(&self, tls: Arc<rustls::ClientConfig>) {
        let _ = self.kubelet_tls.set(tls);
    }

    pub fn kubelet_tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.kubelet_tls.get()
    }

    /// The names and addresses the API server's certificate holds; once.
    pub fn set_apiserver_sans(&self, sans: Vec<String>) {
        let _ = self.apiserver_sans.set(sans);
    }

    /// Whether `name` is the API server's (in its certificate: its names, addresses and the
    /// `kubernetes` Service's): no node may be certified for it.
    pub fn reserved_name(&self, name: &str) -> bool {
        self.apiserver_sans.get().is_some_and(|sans| sans.iter().any(|s| s.eq_ignore_ascii_case(name)))
    }

    /// A Secret as stored (bootstrap token authentication).
    pub fn secret(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let r = registry::find("", "v1", "secrets")?;
        serde_json::from_slice(&self.store.get(&r.key(Some(namespace), name))?.value).ok()
    }

    /// The uid of ServiceAccount `namespace/name`, if it exists (for token authentication).
    pub fn service_account_uid(&self, namespace: &str, name: &str) -> Option<String> {
        let r = registry::find("", "v1", "serviceaccounts")?;
        let stored = self.store.get(&r.key(Some(namespace), name))?;
        let value: serde_json::Value = serde_json::from_slice(&stored.value).ok()?;
        value["metadata"]["uid"].as_str().map(str::to_owned)
    }

    /// Creates what every cluster starts with: the built-in namespaces and the `kubernetes`
    /// Service (with an EndpointSlice for `advertise`, the address clients reach this server at).
    pub async fn bootstrap(&self, advertise: Option<std::net::SocketAddr>) -> Result<(), ApiError> {
        handlers::bootstrap(self, advertise).await
    }

    /// Deletes (or marks) the object stored at `key` as a DELETE with `options` would.
    pub async fn delete_key(&self, key: &str, options: &deletion::Options) -> Result<Object, ApiError> {
        let (r, _, _) =
            registry::by_key(key).ok_or_else(|| ApiError::internal(format!("no resource for {key}")))?;
        handlers::delete_object(self, r, key, options).await
    }

    /// Applies a metadata edit to the object at `key` (see [`handlers::edit_metadata`]).
    pub async fn edit_metadata(
        &self,
        key: &str,
        edit: impl FnMut(&mut serde_json::Value) -> bool,
    ) -> Result<bool, ApiError> {
        let (r, _, _) =
            registry::by_key(key).ok_or_else(|| ApiError::internal(format!("no resource for {key}")))?;
        handlers::edit_metadata(self, r, key, edit).await
    }
}

/// What a resource path addresses (`None` for non-resource paths and unknown resources).
pub fn parse_path(path: &str) -> Option<path::Target> {
    path::parse(path)
}

pub use path::Target;

/// The routes behind authentication (`auth`) and authorization (the node authorizer, then RBAC
/// over the stored policy): all the API server serves.
pub fn secure_router<S: Store + Clone>(
    server: Arc<ApiServer<S>>,
    auth: Arc<crate::auth::Authenticator>,
) -> Router {
    let authz = Arc::new(crate::authz::Authorizer::new(server.clone()));
    router(server)
        .layer(axum::middleware::from_fn_with_state(authz, crate::authz::middleware::<S>))
        .layer(axum::middleware::from_fn_with_state(auth, crate::auth::middleware))
}

/// The HTTP routes: everything goes through one dispatcher, since Kubernetes paths are data.
fn router<S: Store + Clone>(server: Arc<ApiServer<S>>) -> Router {
    Router::new().fallback(dispatch::<S>).layer(DefaultBodyLimit::disable()).with_state(server)
}

async fn dispatch<S: Store + Clone>(
    State(server): State<Arc<ApiServer<S>>>,
    user: Option<axum::Extension<crate::auth::UserInfo>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Response {
    let span = tracing::debug_span!("request", %method, path = uri.path());
    let _entered = span.enter();
    let params = Params(query);
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let accept = text(header::ACCEPT);
    let table = accept.contains("as=Table");
    let req = Request {
        params,
        body,
        content_type: text(header::CONTENT_TYPE),
        accept,
        user_agent: text(header::USER_AGENT),
        table,
        user: user.map(|axum::Extension(u)| u),
    };
    // Admission steps that depend on the requester (NodeRestriction) find it in this scope.
    let answer = admission::requester::scope(req.user.clone(), route(&server, &method, uri.path(), &req));
    match answer.await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// How much of an oversized body is read (and dropped) before the 413 goes out, so that the
/// client, still sending, sees the answer rather than a connection reset.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The request body, or 413 if it is over [`MAX_BODY`].
async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        seen += chunk.len();
        if seen <= MAX_BODY {
            kept.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(kept.into())
}

fn ok_json(value: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

async fn route<S: Store + Clone>(
    server: &ApiServer<S>,
    method: &Method,
    path: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let params = &req.params;
    let trimmed = path.trim_end_matches('/');
    if method == Method::GET
        && matches!(trimmed, "/api" | "/apis")
        && let Some(version) = discovery::aggregated_version(&req.accept)
    {
        let body = discovery::aggregated(trimmed == "/api", version);
        let content_type = discovery::aggregated_content_type(version);
        return Ok(([(header::CONTENT_TYPE, content_type)], axum::Json(body)).into_response());
    }
    match (method, trimmed) {
        (&Method::GET, "/version") => return Ok(ok_json(discovery::version())),
        (&Method::GET, "/api") => return Ok(ok_json(discovery::api_versions())),
        (&Method::GET, "/apis") => return Ok(ok_json(discovery::api_groups())),
        (&Method::GET, "/healthz" | "/livez" | "/readyz") => {
            return Ok((StatusCode::OK, "ok").into_response());
        }
        (&Method::GET, "/openapi/v3") => return Ok(ok_json(openapi::index())),
        // A consistent copy of the whole store (`skiff-control backup`); RBAC lets only cluster
        // admins get it (no default role names this path).
        (&Method::GET, crate::backup::PATH) => {
            let (objects, revision) = server.store.list("");
            let mut text = Vec::new();
            crate::backup::write(&mut text, revision, &objects)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            return Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response());
        }
        (&Method::GET, "/openapi/v2") => {
            // kubectl asks for the protobuf form only; a 406 sends it down its no-v2 path.
            let json_ok = req.accept.is_empty() || ["json", "*/*"].iter().any(|m| req.accept.contains(m));
            if !json_ok {
                return Err(ApiError::not_acceptable(&req.accept));
            }
            return Ok(ok_json(openapi::v2()));
        }
        _ => {}
    }
    if method == Method::GET
        && let Some(gv) = path.strip_prefix("/openapi/v3/")
    {
        return openapi::group_version(gv).map(ok_json).ok_or_else(|| ApiError::no_such_path(path));
    }
    if let Some((group, version, rest)) = path::split(path)
        && rest.is_empty()
    {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(format!("{method} is not allowed on {path}")));
        }
        return discovery::resource_list(group, version)
            .map(ok_json)
            .ok_or_else(|| ApiError::no_such_path(path));
    }
    let target = path::parse(path).ok_or_else(|| ApiError::no_such_path(path))?;
    if let Some(sub) = &target.subresource
        && !target.resource.subresources.contains(&sub.as_str())
    {
        return Err(ApiError::no_such_path(path));
    }
    let watching = params.flag("watch");
    // A namespaced object is always addressed in its namespace; only collections span them all.
    if target.resource.namespaced
        && target.namespace.is_none()
        && (target.name.is_some() || method == Method::POST)
    {
        return Err(ApiError::no_such_path(path));
    }
    match (method, target.name.as_deref()) {
        (&Method::POST, None) if target.resource.kind.ends_with("SubjectAccessReview") => {
            access_review::create(server, target.resource.kind, req)
        }
        (_, _) if target.resource.kind.ends_with("SubjectAccessReview") => {
            Err(ApiError::method_not_allowed(format!("{method} is not supported on {path}")))
        }
        (&Method::GET, _) if watching => watch::watch(server, &target, req),
        (&Method::GET, Some(name)) if target.subresource.as_deref() == Some("log") => {
            logs::logs(server, &target, name, req).await
        }
        (_, _) if target.subresource.as_deref() == Some("log") => {
            Err(ApiError::method_not_allowed(format!("{method} is not supported on {path}")))
        }
        (&Method::GET, Some(name)) if target.subresource.as_deref() == Some("scale") => {
            handlers::get_scale(server, &target, name)
        }
        (&Method::GET, None) => handlers::list(server, &target, req),
        (&Method::GET, Some(name)) => handlers::get(server, &target, name, req),
        (&Method::POST, None) if target.resource.kind == "CertificateSigningRequest" => {
            csr::create(server, &target, req).await
        }
        (&Method::POST, None) => handlers::create(server, &target, req).await,
        (&Method::POST, Some(name))
            if target.resource.kind == "Pod" && target.subresource.as_deref() == Some("binding") =>
        {
            pods::bind(server, &target, name, req).await
        }
        (&Method::POST, Some(name))
            if target.resource.kind == "Pod" && target.subresource.as_deref() == Some("eviction") =>
        {
            pods::evict(server, &target, name, req).await
        }
        (&Method::POST, Some(name))
            if target.resource.kind == "ServiceAccount" && target.subresource.as_deref() == Some("token") =>
        {
            tokens::create_token(server, &target, name, req).await
        }
        (&Method::PUT, Some(name))
            if target.resource.kind == "CertificateSigningRequest"
                && target.subresource.as_deref() == Some("approval") =>
        {
            csr::approve(server, &target, name, req).await
        }
        (&Method::PUT, Some(name)) => handlers::update(server, &target, name, req).await,
        (&Method::PATCH, Some(name)) => handlers::patch(server, &target, name, req).await,
        (&Method::DELETE, Some(name)) => handlers::delete(server, &target, name, req).await,
        (&Method::DELETE, None) => handlers::delete_collection(server, &target, req).await,
        _ => Err(ApiError::method_not_allowed(format!("{method} is not supported on {path}"))),
    }
}
