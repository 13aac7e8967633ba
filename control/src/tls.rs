//! Serving over TLS (rustls): the API server's certificate from the PKI, client certificates
//! verified against the cluster CA (optional at the TLS layer, so bearer tokens still work; the
//! authentication middleware then decides), each connection's verified certificate handed to
//! the request as a [`PeerCertificate`]. A handshake or a request header that does not finish in
//! time is dropped, so garbage and slow clients cannot wedge the server.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tower::ServiceExt as _;

use crate::{auth::PeerCertificate, pki::Pki};

/// Time a client gets to finish the TLS handshake, and to send a request's headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls configuration for the API server of `pki`.
pub fn server_config(pki: &Pki) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.apiserver_cert())
        .with_context(|| format!("reading {}", pki.apiserver_cert().display()))?
        .collect::<Result<_, _>>()
        .context("the serving certificate is not PEM")?;
    let key = PrivateKeyDer::from_pem_file(pki.apiserver_key())
        .with_context(|| format!("reading {}", pki.apiserver_key().display()))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.ca_cert())
        .with_context(|| format!("reading {}", pki.ca_cert().display()))?
    {
        roots.add(ca.context("the CA is not PEM")?).context("the CA certificate")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("the client certificate verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the serving certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    app: axum::Router,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
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
            () = &mut stop => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| crate::pki::inspect::parse_der(der).ok())
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
