//! An API server on a loopback port inside this process, over a fresh embedded store, with the
//! control loops running: what tests, benchmarks and embedders start.

use std::{net::Ipv4Addr, path::Path, sync::Arc};

use crate::{
    api::{self, ApiServer},
    controllers::{self, leader::Election},
    store::embedded::{EmbeddedStore, Options},
};

/// A running local server; dropping it stops it.
#[derive(Debug)]
pub struct LocalServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// A kubeconfig for it.
    pub kubeconfig: String,
    serve: tokio::task::JoinHandle<()>,
    loops: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    /// Starts a server (on the current tokio runtime) storing under `dir`, keeping `history`
    /// events for watch resume, with ClusterIPs from 10.96.0.0/12.
    pub async fn start(dir: &Path, history: usize) -> anyhow::Result<Self> {
        Self::start_with(dir, history, "127.0.0.1:0".parse()?, controllers::Config::default()).await
    }

    /// Like [`LocalServer::start`], on `addr` (a restarted server keeps its address), with the
    /// loops tuned by `loops`.
    pub async fn start_with(
        dir: &Path,
        history: usize,
        addr: std::net::SocketAddr,
        loops: controllers::Config,
    ) -> anyhow::Result<Self> {
        let store = EmbeddedStore::open(&dir.join("store.redb"), Options { history })?;
        let server = Arc::new(ApiServer::new(store, (Ipv4Addr::new(10, 96, 0, 0), 12)));
        server.bootstrap(None).await.map_err(|e| anyhow::anyhow!(e.message))?;
        // One identity per store: a server restarted on it takes its own Lease back at once.
        let loops =
            controllers::spawn(server.clone(), loops, Election::new(format!("local@{}", dir.display())));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, api::router(server)).await;
        });
        Ok(Self { kubeconfig: api::kubeconfig(&url), url, serve, loops })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.serve.abort();
        self.loops.abort();
    }
}
