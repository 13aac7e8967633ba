//! TLS as skiff serves it, shared by the API server and the node agent's endpoint: a rustls
//! server configuration that verifies client certificates against a CA ([`server_config`]), an
//! accept loop that bounds handshakes and request headers and hands each request its
//! connection's verified certificate ([`serve`], [`PeerCertificate`]), and certificates read
//! back ([`cert`]).

pub mod cert;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tower::ServiceExt as _;

pub use self::cert::CertInfo;

/// Time a client gets to finish the TLS handshake, and to send a request's headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The verified client certificate of the connection a request came on (a request extension).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<CertInfo>);

/// Whether a client must show a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Verified when shown; a client without one may still authenticate otherwise (tokens).
    Optional,
    /// No certificate from the CA, no handshake.
    Required,
}

/// The certificates of PEM text, DER-encoded (a chain, a CA bundle).
pub fn pem_certs(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().context("not PEM certificates")
}

/// A server configuration: `chain_pem` and `key_pem` as the server, client certificates checked
/// against `client_cas` (DER) as `client_auth` says, HTTP/1.1.
pub fn server_config(
    chain_pem: &[u8],
    key_pem: &[u8],
    client_cas: &[CertificateDer<'static>],
    client_auth: ClientAuth,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = pem_certs(chain_pem).context("the serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("the serving key is not PEM")?;
    let mut roots = RootCertStore::empty();
    for ca in client_cas {
        roots.add(ca.clone()).context("a client CA certificate")?;
    }
    anyhow::ensure!(!roots.is_empty(), "no CA to verify clients with");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = match client_auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier.build().context("the client certificate verifier")?)
        .with_single_cert(chain, key)
        .context("the serving certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS with `config` on `listener` until `stop` completes. Each request
/// carries its connection's [`PeerCertificate`] when the client showed one; a handshake or a
/// request header that does not finish in [`HANDSHAKE_TIMEOUT`] is dropped, so garbage and slow
/// clients cannot wedge the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    app: axum::Router,
    stop: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| cert::parse_der(der).ok())
                .map(|info| PeerCertificate(Arc::new(info)));
            let service = app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                if let Some(cert) = &cert {
                    req.extensions_mut().insert(cert.clone());
                }
                req.map(axum::body::Body::new)
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), hyper_util::service::TowerToHyperService::new(service))
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
