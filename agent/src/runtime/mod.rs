//! The container runtime: containerd, driven through its native gRPC API (containerd-client).
//! Everything the agent creates lives in one containerd namespace and carries skiff's labels.
//!
//! - [`image`]: importing image archives (OCI layout or `docker save`) into the content store
//!   and unpacking them to the snapshotter, and resolving local images.
//! - [`container`]: creating, starting, signalling, waiting for and removing containers.
//! - [`oci`]: the OCI runtime spec of a container.
//! - [`busybox`]: the locally built test image (Debian's busybox-static).

pub mod busybox;
pub mod cgroup;
pub mod container;
pub mod image;
pub mod oci;
pub mod pull;

use std::{path::Path, time::Duration};

use containerd_client::{
    services::v1::{CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest, Lease},
    tonic::{self, Code, Request, metadata::MetadataValue},
};

/// containerd's usual socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The containerd namespace skiff's pods and images live in.
pub const DEFAULT_NAMESPACE: &str = "skiff";

/// The snapshotter every image is unpacked to and every container runs on.
pub const SNAPSHOTTER: &str = "overlayfs";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("connecting to containerd at {socket}")]
    Connect { socket: String, source: tonic::transport::Error },
    #[error("containerd {call}: {status}")]
    Call { call: &'static str, status: Box<tonic::Status> },
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
    #[error("container {id}: {reason}")]
    Container { id: String, reason: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Maps a failed call to [`RuntimeError::Call`].
fn call(name: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
    move |status| RuntimeError::Call { call: name, status: Box::new(status) }
}

/// `Ok` for NotFound: deleting what is already gone succeeds.
fn gone_ok<T>(result: std::result::Result<T, tonic::Status>, name: &'static str) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(call(name)(s)),
    }
}

/// A connection to containerd, scoped to one containerd namespace.
#[derive(Clone)]
pub struct Runtime {
    client: std::sync::Arc<containerd_client::Client>,
    namespace: String,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("namespace", &self.namespace).finish()
    }
}

impl Runtime {
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self> {
        let client = containerd_client::Client::from_path(socket)
            .await
            .map_err(|source| RuntimeError::Connect { socket: socket.display().to_string(), source })?;
        Ok(Self { client: std::sync::Arc::new(client), namespace: namespace.to_owned() })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn client(&self) -> &containerd_client::Client {
        &self.client
    }

    /// A request in this runtime's namespace (and under `lease`, if given).
    fn request<T>(&self, message: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(message);
        let md = req.metadata_mut();
        if let Ok(ns) = MetadataValue::try_from(self.namespace.as_str()) {
            md.insert("containerd-namespace", ns);
        }
        if let Some(lease) = lease.and_then(|l| MetadataValue::try_from(l).ok()) {
            md.insert("containerd-lease", lease);
        }
        req
    }

    /// Creates a lease that expires on its own after `ttl` (so a crash cannot pin content
    /// forever); everything created under it is safe from garbage collection until released.
    async fn lease(&self, purpose: &str, ttl: Duration) -> Result<String> {
        let id = format!("skiff-{purpose}-{}", std::process::id());
        let id = format!("{id}-{}", jiff::Timestamp::now().as_nanosecond());
        let expire = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::from_secs(3600)))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let labels = [("containerd.io/gc.expire".to_owned(), expire.to_string())].into_iter().collect();
        let req = self.request(CreateLeaseRequest { id: id.clone(), labels }, None);
        let created = self.client().leases().create(req).await.map_err(call("Leases.Create"))?;
        Ok(created.into_inner().lease.map_or(id, |l: Lease| l.id))
    }

    async fn release(&self, lease: &str) -> Result<()> {
        let req = self.request(DeleteLeaseRequest { id: lease.to_owned(), sync: false }, None);
        gone_ok(self.client().leases().delete(req).await, "Leases.Delete")
    }
}
