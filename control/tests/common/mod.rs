//! An API server on loopback, in-process, over a fresh store.
#![allow(dead_code)] // each test binary uses a different part

pub mod etcd;
pub mod hollow;

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use skiff_control::{controllers, local::LocalServer};

pub struct Server {
    pub url: String,
    pub client: kube::Client,
    pub local: LocalServer,
    _dir: tempfile::TempDir,
}

/// Starts a server (on the current tokio runtime) keeping `history` events for watch resume.
pub async fn start(history: usize) -> Server {
    start_with(history, controllers::Config::default()).await
}

/// Like [`start`], with the control loops tuned by `loops`.
pub async fn start_with(history: usize, loops: controllers::Config) -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let addr = "127.0.0.1:0".parse().expect("addr");
    let server = LocalServer::start_with(dir.path(), history, addr, loops).await.expect("server");
    let mut config = server.config().await.expect("admin config");
    // The tests check the server's answers themselves; kube-rs would retry 5xx behind their back.
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("client");
    Server { url: server.url.clone(), client, local: server, _dir: dir }
}

/// `skiff-control serve --bind-address 127.0.0.1:0` plus what `configure` adds, as a process:
/// the child and the address it printed once listening.
pub fn spawn_serve(configure: impl FnOnce(&mut Command)) -> (Child, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff-control"));
    cmd.args(["serve", "--bind-address", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(Stdio::null());
    configure(&mut cmd);
    let mut child = cmd.spawn().expect("skiff-control");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let addr =
        line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("skiff-control said {line:?}"));
    (child, addr.parse().expect("an address"))
}

/// A client from the kubeconfig file at `path`, pointed at `url` when given (else its server).
pub async fn client_from(path: &std::path::Path, url: Option<&str>) -> kube::Client {
    let raw = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(raw, &Default::default()).await.expect("config");
    if let Some(url) = url {
        config.cluster_url = url.parse().expect("url");
    }
    kube::Client::try_from(config).expect("client")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Polls `check` until it returns `Some`, failing the test after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(10), check).await
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually_within<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
