//! An API server on a loopback port inside this process, over a fresh embedded store, with the
//! control loops running: what tests, benchmarks and embedders start. It serves exactly what
//! `skiff-control serve` serves — HTTPS on its own PKI (under `dir/pki`), authentication and
//! authorization — so a test talks to it with a kubeconfig, as a user would.

use std::{net::Ipv4Addr, path::Path, sync::Arc};

use anyhow::Context as _;
use time::{Duration, OffsetDateTime};

use crate::{
    api::ApiServer,
    controllers::{self, leader::Election},
    pki::{
        Pki,
        issue::{Issued, Subject, Usage},
    },
    secure,
    store::embedded::{EmbeddedStore, Options},
};

/// A running local server; dropping it stops it.
#[derive(Debug)]
pub struct LocalServer {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The admin's kubeconfig for it (group `system:masters`).
    pub kubeconfig: String,
    /// Its PKI.
    pub pki: Pki,
    serve: tokio::task::JoinHandle<()>,
    loops: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    /// Starts a server (on the current tokio runtime) storing under `dir`, keeping `history`
    /// events for watch resume, with ClusterIPs from 10.96.0.0/12.
    pub async fn start(dir: &Path, history: usize) -> anyhow::Result<Self> {
        Self::start_with(dir, history, "127.0.0.1:0".parse()?, controllers::Config::default()).await
    }

    /// Like [`LocalServer::start`], on `addr` (a restarted server keeps its address and its
    /// PKI), with the loops tuned by `loops`.
    pub async fn start_with(
        dir: &Path,
        history: usize,
        addr: std::net::SocketAddr,
        loops: controllers::Config,
    ) -> anyhow::Result<Self> {
        let store = EmbeddedStore::open(&dir.join("store.redb"), Options { history })?;
        let server = Arc::new(ApiServer::new(store, (Ipv4Addr::new(10, 96, 0, 0), 12)));
        server.bootstrap(None).await.map_err(|e| anyhow::anyhow!(e.message))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let url = format!("https://{addr}");
        let pki = Pki::new(dir.join("pki"));
        secure::ensure_pki(&pki, addr, "10.96.0.0/12")?;
        let stack = secure::prepare(&server, &pki, None)?;
        // One identity per store: a server restarted on it takes its own Lease back at once.
        let loops =
            controllers::spawn(server.clone(), loops, Election::new(format!("local@{}", dir.display())));
        let serve = tokio::spawn(async move {
            let _ = secure::serve(listener, server, stack, std::future::pending()).await;
        });
        Ok(Self { kubeconfig: secure::admin_kubeconfig(&pki, &url)?, url, pki, serve, loops })
    }

    /// A kube-rs configuration from the admin's kubeconfig.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let raw = kube::config::Kubeconfig::from_yaml(&self.kubeconfig)?;
        Ok(kube::Config::from_custom_kubeconfig(raw, &Default::default()).await?)
    }

    /// A client acting as the admin.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.config().await?)?)
    }

    /// A fresh client certificate from this server's CA for `user` in `groups` (a node is
    /// `system:node:<name>` in `system:nodes`), valid for a day.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> anyhow::Result<Issued> {
        let subject = Subject {
            common_name: user.to_owned(),
            organizations: groups.iter().map(|g| (*g).to_owned()).collect(),
            sans: Vec::new(),
            usage: Usage::Client,
        };
        self.pki
            .ca()?
            .issue(&subject, OffsetDateTime::now_utc() - Duration::minutes(1), Duration::days(1))
            .context("issuing a client certificate")
    }

    /// A kubeconfig for `user` in `groups` with a certificate from [`LocalServer::issue_client`].
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> anyhow::Result<String> {
        let issued = self.issue_client(user, groups)?;
        let ca = crate::pki::files::read(&self.pki.ca_cert())?;
        let cluster = self.pki.config()?.cluster_name;
        Ok(crate::pki::kubeconfig::render(&cluster, &self.url, &ca, user, &issued))
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.serve.abort();
        self.loops.abort();
    }
}
