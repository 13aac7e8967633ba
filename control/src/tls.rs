//! The API server's TLS (served by [`skiff_tls::serve`]): its certificate from the PKI, client
//! certificates verified against the cluster CA (optional at the TLS layer, so bearer tokens
//! still work; the authentication middleware then decides); and the client side it reaches node
//! agents with.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use skiff_tls::{ClientAuth, pem_certs};

use crate::pki::{Pki, files};

pub use skiff_tls::{HANDSHAKE_TIMEOUT, serve};

/// The rustls configuration for the API server of `pki`.
pub fn server_config(pki: &Pki) -> anyhow::Result<Arc<ServerConfig>> {
    let ca = pem_certs(files::read(&pki.ca_cert())?.as_bytes()).context("the CA")?;
    skiff_tls::server_config(
        files::read(&pki.apiserver_cert())?.as_bytes(),
        files::read(&pki.apiserver_key())?.as_bytes(),
        &ca,
        ClientAuth::Optional,
    )
}

/// The rustls client configuration the API server reaches node agents with: their serving
/// certificates checked against the cluster CA, `pki/apiserver-kubelet-client` as the identity.
pub fn kubelet_client_config(pki: &Pki) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in pem_certs(files::read(&pki.ca_cert())?.as_bytes()).context("the CA")? {
        roots.add(ca).context("the CA certificate")?;
    }
    let chain =
        pem_certs(files::read(&pki.kubelet_client_cert())?.as_bytes()).context("the kubelet client")?;
    let key = PrivateKeyDer::from_pem_file(pki.kubelet_client_key())
        .with_context(|| format!("reading {}", pki.kubelet_client_key().display()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the kubelet client certificate and key do not match")?;
    Ok(Arc::new(config))
}
