//! An API server on loopback, in-process, over a fresh store.
#![allow(dead_code)] // each test binary uses a different part

use skiff_control::local::LocalServer;

pub struct Server {
    pub url: String,
    pub client: kube::Client,
    _server: LocalServer,
    _dir: tempfile::TempDir,
}

/// Starts a server (on the current tokio runtime) keeping `history` events for watch resume.
pub async fn start(history: usize) -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let server = LocalServer::start(dir.path(), history).await.expect("server");
    let mut config = kube::Config::new(server.url.parse().expect("url"));
    // The tests check the server's answers themselves; kube-rs would retry 5xx behind their back.
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("client");
    Server { url: server.url.clone(), client, _server: server, _dir: dir }
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
