//! The agent's status endpoints, on a Unix socket for `skiff` on the node and optionally on TCP
//! for Prometheus:
//! - `GET /healthz`: 200 while the agent serves;
//! - `GET /readyz`: 200 once the first complete listing of Services and EndpointSlices is applied,
//!   503 before;
//! - `GET /metrics`: Prometheus text (see [`metrics`]);
//! - `GET /v1/state`: what the agent wants in the datapath ([`crate::inspect::svc::AgentState`]),
//!   which `skiff svc list/diff`, `ct`, `trace --svc` and `explain` read.

mod histogram;
pub mod metrics;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

pub use histogram::Histogram;

use crate::{
    inspect::svc::{AgentState, DesiredFrontend},
    proxy::{ServiceFrontends, ServiceRef},
};

/// The service proxy's applied state, shared with the status endpoints (the proxy updates one
/// Service's entry per change, so reading it never costs the proxy a full copy).
pub type DesiredView = Arc<Mutex<HashMap<ServiceRef, ServiceFrontends>>>;

/// What the endpoints report; shared by the agent's loops.
pub struct Status {
    pub node: String,
    /// `ebpf` or `iptables`.
    pub mode: &'static str,
    /// The eBPF datapath's pins (metrics read the maps there); `None` in iptables mode.
    pub pin_dir: Option<PathBuf>,
    ready: AtomicBool,
    desired: DesiredView,
    reconcile: Mutex<Histogram>,
    /// For pods by phase: the API and this node's name.
    client: Option<kube::Client>,
    /// The node's network namespace when it is not the agent's own (for interface names).
    node_netns: Mutex<Option<PathBuf>>,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status").field("node", &self.node).field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl Status {
    pub fn new(
        node: &str,
        mode: &'static str,
        pin_dir: Option<PathBuf>,
        client: Option<kube::Client>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node: node.to_owned(),
            mode,
            pin_dir,
            ready: AtomicBool::new(false),
            desired: DesiredView::default(),
            reconcile: Mutex::new(Histogram::reconcile()),
            client,
            node_netns: Mutex::new(None),
        })
    }

    /// The node's network namespace, when the agent runs outside it (`--node-netns`).
    pub fn set_node_netns(&self, netns: Option<PathBuf>) {
        *self.node_netns.lock().unwrap_or_else(|e| e.into_inner()) = netns;
    }

    /// The node namespace's interfaces, by index.
    fn interfaces(&self) -> Vec<(u32, String)> {
        let netns = self.node_netns.lock().unwrap_or_else(|e| e.into_inner()).clone();
        crate::kubelet::netns::on_thread(netns.as_deref(), || {
            nix::net::if_::if_nameindex()
                .map(|list| {
                    list.iter().map(|i| (i.index(), i.name().to_string_lossy().into_owned())).collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default()
    }

    /// The view the service proxy keeps up to date.
    pub fn desired_view(&self) -> DesiredView {
        self.desired.clone()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// One reconcile pass (a batch of watch events applied and committed) took `took`.
    pub fn observe_reconcile(&self, took: Duration) {
        self.reconcile.lock().unwrap_or_else(|e| e.into_inner()).observe(took.as_secs_f64());
    }

    pub fn reconcile_histogram(&self) -> Histogram {
        self.reconcile.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The desired state, frontends in address order (`/v1/state` adds the interfaces, which
    /// take a thread in the node namespace to list, so metrics do without them).
    pub fn state(&self) -> AgentState {
        let desired = self.desired.lock().unwrap_or_else(|e| e.into_inner());
        let mut frontends: Vec<(_, DesiredFrontend)> = desired
            .values()
            .flat_map(|s| s.frontends.iter().map(|(k, f)| (*k, DesiredFrontend::new(k, f))))
            .collect();
        frontends.sort_by_key(|(k, _)| *k);
        let mut cluster_ips: Vec<_> = desired.values().flat_map(|s| s.vips.iter().copied()).collect();
        cluster_ips.sort();
        cluster_ips.dedup();
        AgentState {
            node: self.node.clone(),
            mode: self.mode.to_owned(),
            ready: self.is_ready(),
            cluster_ips,
            frontends: frontends.into_iter().map(|(_, f)| f).collect(),
            interfaces: Vec::new(),
        }
    }
}

fn text(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".into())
}

async fn readyz(State(status): State<Arc<Status>>) -> Response {
    if status.is_ready() {
        text(StatusCode::OK, "ok\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first listing of Services and EndpointSlices\n".into(),
        )
    }
}

async fn state(State(status): State<Arc<Status>>) -> Response {
    let mut state = status.state();
    state.interfaces = status.interfaces();
    axum::Json(state).into_response()
}

async fn metrics_text(State(status): State<Arc<Status>>) -> Response {
    let body = metrics::render(&status).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
        .into_response()
}

pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/state", get(state))
        .with_state(status)
}

/// Binds the socket now, so a second agent on the same path fails at start, not later.
pub fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("another agent already serves {}", path.display());
    }
    let _ = std::fs::remove_file(path);
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// Serves the endpoints on a bound Unix socket until `stop` completes.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    status: Arc<Status>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(status))
        .with_graceful_shutdown(stop)
        .await
        .context("serving the status socket")
}

/// Serves the endpoints on TCP until `stop` completes.
pub async fn serve_tcp(
    status: Arc<Status>,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(status)).with_graceful_shutdown(stop).await.context("serving metrics")
}
