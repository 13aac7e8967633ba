//! An API server on loopback, in-process, over a fresh store.
#![allow(dead_code)] // each test binary uses a different part

use std::{net::Ipv4Addr, sync::Arc};

use skiff_control::{
    api::{self, ApiServer},
    store::embedded::{EmbeddedStore, Options},
};

pub struct Server {
    pub url: String,
    pub client: kube::Client,
    _dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

/// Starts a server (on the current tokio runtime) keeping `history` events for watch resume.
pub async fn start(history: usize) -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let store = EmbeddedStore::open(&dir.path().join("store.redb"), Options { history }).expect("store");
    let server = Arc::new(ApiServer::new(store, (Ipv4Addr::new(10, 96, 0, 0), 12)));
    server.bootstrap(None).await.expect("bootstrap");
    let _controllers = skiff_control::controllers::spawn(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, api::router(server)).await;
    });
    let mut config = kube::Config::new(url.parse().expect("url"));
    // The tests check the server's answers themselves; kube-rs would retry 5xx behind their back.
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("client");
    Server { url, client, _dir: dir, _task: task }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Polls `check` until it returns `Some`, failing the test after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
