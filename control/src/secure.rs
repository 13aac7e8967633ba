//! Serving the API the only way it is served: HTTPS with the cluster PKI, every request
//! authenticated and authorized. `skiff-control serve` and [`crate::local::LocalServer`] both
//! start here, so tests exercise the same stack users run.

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context as _;

use crate::{
    api::{self, ApiServer},
    auth::{AccountLookup, Authenticator, PodLookup, SecretLookup, sa_token::TokenKeys},
    pki::{self, InitConfig, Pki},
    store::Store,
};

/// Creates the PKI under `pki` when it has no CA yet (the first start of a cluster), for a server
/// reached at `addr`; an existing PKI is used as it is, completed with what a newer version of
/// `init` issues. Returns whether it was created.
pub fn ensure_pki(pki: &Pki, addr: SocketAddr, service_cidr: &str) -> anyhow::Result<bool> {
    if pki.ca_cert().exists() {
        if !pki.kubelet_client_cert().exists() {
            pki.init(&pki.config()?).context("adding the kubelet client certificate to the PKI")?;
        }
        return Ok(false);
    }
    let mut sans = Vec::new();
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        sans.push(addr.ip().to_string());
    }
    let config = InitConfig {
        server: format!("https://{addr}"),
        apiserver_sans: sans,
        service_cidr: service_cidr.to_owned(),
        ..InitConfig::default()
    };
    pki.init(&config).with_context(|| format!("creating the PKI under {}", pki.root().display()))?;
    Ok(true)
}

/// The admin kubeconfig of `pki`, pointed at `url` (the address this server really listens on).
pub fn admin_kubeconfig(pki: &Pki, url: &str) -> anyhow::Result<String> {
    let config = pki.config()?;
    let admin = pki::files::read(&pki.admin_kubeconfig())?;
    let client = pki::kubeconfig::client_of(&admin).context("admin.conf holds no client certificate")?;
    let ca = pki::files::read(&pki.ca_cert())?;
    Ok(pki::kubeconfig::render(&config.cluster_name, url, &ca, "kubernetes-admin", &client))
}

/// Wires `server` to `pki` (ServiceAccount token keys, the CA that signs CSRs) and builds what
/// serving needs: the TLS configuration and the authenticator (client certificates, the static
/// tokens of `token_file`, ServiceAccount and bootstrap tokens).
pub fn prepare<S: Store + Clone>(
    server: &Arc<ApiServer<S>>,
    pki: &Pki,
    token_file: Option<&Path>,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<Authenticator>)> {
    let tls = crate::tls::server_config(pki)?;
    let auth = match token_file {
        Some(file) => Authenticator::with_token_file(file)?,
        None => Authenticator::default(),
    };
    let sa_key =
        std::fs::read(pki.sa_key()).with_context(|| format!("reading {}", pki.sa_key().display()))?;
    let keys = Arc::new(TokenKeys::from_pem(&sa_key)?);
    server.set_token_keys(keys.clone());
    server.set_ca(Arc::new(pki.ca()?));
    server.set_kubelet_tls(crate::tls::kubelet_client_config(pki)?);
    let serving = pki::inspect::parse_pem(&pki::files::read(&pki.apiserver_cert())?)?;
    server.set_apiserver_sans(serving.sans);
    let accounts = server.clone();
    let lookup: AccountLookup = Arc::new(move |ns, name| accounts.service_account_uid(ns, name));
    let secrets = server.clone();
    let bootstrap: SecretLookup = Arc::new(move |ns, name| secrets.secret(ns, name));
    let pods = server.clone();
    let pod_lookup: PodLookup = Arc::new(move |ns, name| pods.pod_uid(ns, name));
    let auth =
        auth.with_service_accounts(keys, lookup).with_bootstrap_tokens(bootstrap).with_bound_pods(pod_lookup);
    Ok((tls, Arc::new(auth)))
}

/// Serves `server` over TLS on `listener` behind authentication and authorization until `stop`.
pub async fn serve<S: Store + Clone>(
    listener: tokio::net::TcpListener,
    server: Arc<ApiServer<S>>,
    (tls, auth): (Arc<rustls::ServerConfig>, Arc<Authenticator>),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    crate::tls::serve(listener, tls, api::secure_router(server, auth), stop).await;
    Ok(())
}
