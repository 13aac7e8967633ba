//! Storage: one global, monotonically increasing revision (the resourceVersion of everything),
//! compare-and-swap writes, and watches that resume from a revision within a bounded history.
//!
//! [`Store`] is what the API server uses; [`embedded::EmbeddedStore`] implements it on redb
//! (durable before a write is acknowledged, with group commit) and [`etcd::EtcdStore`] on an
//! etcd cluster (several API servers sharing it). Both serve reads from an in-memory mirror
//! (`mirror.rs`) kept with a bounded history, as kube-apiserver's watch cache does.

pub mod embedded;
pub mod etcd;
mod history;
mod mirror;

use std::future::Future;

pub use history::WatchStream;

/// The global revision: every successful write gets the next one.
pub type Revision = u64;

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created the key (survives updates).
    pub create_revision: Revision,
    /// The revision of the last write: the object's resourceVersion.
    pub mod_revision: Revision,
}

/// What a watcher sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The write's revision, which is also `object.mod_revision` (a delete's too). For a delete,
    /// `object.value` is the last value before it.
    pub revision: Revision,
    pub object: Object,
    /// The object before this write, if there was one.
    pub previous: Option<Object>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} not found")]
    NotFound { key: String },
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    #[error("{key} was modified: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    #[error("revision {requested} is no longer in the history (oldest kept: {oldest})")]
    Compacted { requested: Revision, oldest: Revision },
    #[error("the store is shutting down")]
    Closed,
    #[error("storage backend")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage API. Reads see only durable writes; a write returns once it is durable.
pub trait Store: Send + Sync + 'static {
    /// The latest revision.
    fn revision(&self) -> Revision;

    fn get(&self, key: &str) -> Option<Object>;

    /// Every object under `prefix`, in key order, and the revision of this snapshot.
    fn list(&self, prefix: &str) -> (Vec<Object>, Revision);

    /// Every object under `prefix` as it was at `revision` (pages of a list are served from its
    /// snapshot); `Compacted` when the history no longer reaches back that far.
    fn list_at(&self, prefix: &str, revision: Revision) -> Result<Vec<Object>>;

    /// Creates `key`; fails with `AlreadyExists` if it is there.
    fn create(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<Object>> + Send;

    /// Replaces `key`'s value; with `expected`, only if its mod revision is that (else `Conflict`).
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> impl Future<Output = Result<Object>> + Send;

    /// Deletes `key`, returning its last state; with `expected`, only if unchanged since then.
    fn delete(&self, key: &str, expected: Option<Revision>) -> impl Future<Output = Result<Object>> + Send;

    /// Events under `prefix` after revision `after` (0: from now on), then live ones.
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;
}
