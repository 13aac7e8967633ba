//! The agent's HTTPS endpoint on `--kubelet-port`, where the kubelet's is: container logs (what
//! the API server proxies `kubectl logs` to) and the agent's Prometheus metrics. Every client
//! shows a certificate the cluster CA issued (no certificate, no handshake); what it may do is
//! decided per request by the API server ([`authz`]): `/containerLogs` is `nodes/proxy`,
//! `/metrics` is `nodes/metrics`, as on a kubelet. Denials are 403 naming user, verb and
//! subresource; handshakes and request headers that do not finish in 10 s are dropped.

pub mod authz;
pub mod identity;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use skiff_tls::{ClientAuth, PeerCertificate};

use self::{authz::Authorizer, authz::User, identity::Identity};
use super::pods::Ctx;
use crate::status::Status;

pub use skiff_tls::serve;

/// The rustls configuration: `identity` as the server, client certificates required and
/// verified against `client_cas`.
pub fn tls_config(
    identity: &Identity,
    client_cas: &[rustls::pki_types::CertificateDer<'static>],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    skiff_tls::server_config(
        identity.cert_pem.as_bytes(),
        identity.key_pem.as_bytes(),
        client_cas,
        ClientAuth::Required,
    )
}

/// The kubelet's request attributes: the verb of `method` and the `nodes` subresource of `path`.
fn attributes(method: &Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    };
    let subresource = if path == "/metrics" || path.starts_with("/metrics/") { "metrics" } else { "proxy" };
    (verb, subresource)
}

async fn authorize(State(authorizer): State<Arc<Authorizer>>, req: Request, next: Next) -> Response {
    let Some(PeerCertificate(cert)) = req.extensions().get::<PeerCertificate>() else {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    };
    let user = User { name: cert.common_name.clone(), groups: cert.organizations.clone() };
    let (verb, subresource) = attributes(req.method(), req.uri().path());
    match authorizer.allowed(&user, verb, subresource).await {
        Ok(true) => next.run(req).await,
        Ok(false) => {
            tracing::info!(user = %user.name, verb, subresource, "refused on the agent endpoint");
            let message = format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={subresource})",
                user.name
            );
            (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "text/plain")], message).into_response()
        }
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e).into_response()
        }
    }
}

async fn metrics(State(status): State<Option<Arc<Status>>>) -> Response {
    match status {
        Some(status) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            crate::status::metrics::render(&status).await,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics here").into_response(),
    }
}

/// The routes, behind authorization.
pub fn router(ctx: Arc<Ctx>, status: Option<Arc<Status>>, authorizer: Arc<Authorizer>) -> Router {
    super::logs::router(ctx)
        .merge(Router::new().route("/metrics", get(metrics)).with_state(status))
        .layer(axum::middleware::from_fn_with_state(authorizer, authorize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_kubelets_subresources() {
        assert_eq!(attributes(&Method::GET, "/metrics"), ("get", "metrics"));
        assert_eq!(attributes(&Method::GET, "/containerLogs/default/p/c"), ("get", "proxy"));
        assert_eq!(attributes(&Method::POST, "/exec/default/p/c"), ("create", "proxy"));
    }
}
