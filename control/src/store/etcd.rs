//! The store on etcd (v3 API), for control planes of more than one API server. Every key lives
//! under a prefix (`/registry` by default, as kube-apiserver's); revisions are etcd's: an object's
//! resourceVersion is its `mod_revision`, a list's the revision its snapshot is at (etcd's header
//! revision when only this cluster writes there; otherwise the last write under the prefix,
//! at which the snapshot is exact all the same). Writes are
//! transactions that compare the key's `create_revision` (create, "exists") or `mod_revision`
//! (compare-and-swap), so two API servers never overwrite each other's work.
//!
//! Reads come from a mirror that one etcd watch (from the revision of an initial listing, with
//! previous values) keeps current — etcd's events carry every writer's changes, this server's
//! and others'. A write returns once the mirror has seen it, so a client reads its own writes on
//! the server it wrote through. When etcd has compacted past what the mirror has seen (a long
//! disconnection), the mirror re-lists and open watches end, so clients re-list as after a 410;
//! [`EtcdStore::compact`] compacts etcd and the mirror's history together.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::sync::watch;

use super::{Event, EventKind, Object, Result, Revision, Store, StoreError, WatchStream, mirror::Mirror};

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the keys live in etcd.
    pub prefix: String,
    /// Events the mirror keeps for watch resume.
    pub history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { prefix: "/registry".into(), history: 100_000 }
    }
}

/// How long a write waits for the mirror to see it before reporting the backend as behind.
const CATCH_UP: Duration = Duration::from_secs(10);

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision()).try_into().unwrap_or(0)
}

/// The etcd-backed store. Cheap to clone; the watch task ends with the last clone.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: String,
    mirror: std::sync::RwLock<Mirror>,
    /// The mirror's revision, for writers waiting to see their write.
    seen: watch::Sender<Revision>,
    follow: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.follow.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://127.0.0.1:2379`, …), lists everything under the prefix
    /// and starts following it (on the current tokio runtime).
    pub async fn open(endpoints: &[String], options: Options) -> Result<Self> {
        // Keepalives notice a dead connection; require_leader keeps a partitioned member from
        // serving a silent watch.
        let connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(connect)).await.map_err(backend)?;
        let prefix = options.prefix.trim_end_matches('/').to_owned();
        let (objects, revision) = list_all(&client, &prefix).await?;
        let inner = Arc::new(Inner {
            client,
            prefix,
            mirror: std::sync::RwLock::new(Mirror::new(objects, revision, options.history)),
            seen: watch::Sender::new(revision),
            follow: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(follow(Arc::downgrade(&inner)));
        *inner.follow.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        Ok(Self { inner })
    }

    /// Compacts etcd's history up to `revision` (physically) and the mirror's with it: watches
    /// and lists from before `revision` are `Compacted` (410 to clients) from now on.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        let at =
            i64::try_from(revision).map_err(|_| StoreError::Compacted { requested: revision, oldest: 0 })?;
        let mut kv = kv(&self.inner.client);
        kv.compact(at, Some(CompactionOptions::new().with_physical())).await.map_err(backend)?;
        self.write_mirror().compact(revision);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        self.inner.mirror.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_mirror(&self) -> std::sync::RwLockWriteGuard<'_, Mirror> {
        self.inner.mirror.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Runs `txn`; `Ok(Ok(..))` when its comparison held, `Ok(Err(current))` with the key's
    /// current value (from the `or_else` get) when it did not.
    async fn run(&self, txn: Txn) -> Result<std::result::Result<TxnResponse, Option<KeyValue>>> {
        let mut kv = kv(&self.inner.client);
        let response = kv.txn(txn).await.map_err(backend)?;
        if response.succeeded() {
            return Ok(Ok(response));
        }
        let current = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        Ok(Err(current))
    }

    /// Waits until the mirror has seen `revision`.
    async fn caught_up(&self, revision: Revision) -> Result<()> {
        let mut seen = self.inner.seen.subscribe();
        match tokio::time::timeout(CATCH_UP, seen.wait_for(|r| *r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Backend(
                format!("etcd's watch did not deliver revision {revision} within {CATCH_UP:?}").into(),
            )),
        }
    }

    /// The answer to a failed comparison on `key`.
    fn refused(key: &str, expected: Option<Revision>, current: Option<KeyValue>) -> StoreError {
        match (current, expected) {
            (None, _) => StoreError::NotFound { key: key.to_owned() },
            (Some(kv), Some(expected)) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: kv.mod_revision().try_into().unwrap_or(0),
            },
            (Some(_), None) => StoreError::AlreadyExists { key: key.to_owned() },
        }
    }
}

/// Largest etcd response accepted: a whole-prefix listing or a catch-up watch batch of a big
/// cluster is far beyond gRPC's 4 MiB default.
const MAX_MESSAGE: usize = 1 << 30;

fn kv(client: &Client) -> etcd_client::KvClient {
    client.kv_client().max_decoding_message_size(MAX_MESSAGE)
}

/// The comparison a compare-and-swap on `key` needs: its mod revision is `expected`, or (none
/// expected) it exists.
fn unchanged(key: &str, expected: Option<Revision>) -> Compare {
    match expected {
        Some(e) => Compare::mod_revision(key, CompareOp::Equal, i64::try_from(e).unwrap_or(-1)),
        None => Compare::create_revision(key, CompareOp::Greater, 0),
    }
}

/// Everything under `prefix` and the revision of that snapshot.
async fn list_all(client: &Client, prefix: &str) -> Result<(BTreeMap<String, Object>, Revision)> {
    let mut kv = kv(client);
    let response =
        kv.get(format!("{prefix}/"), Some(GetOptions::new().with_prefix())).await.map_err(backend)?;
    let revision = revision_of(response.header());
    let objects =
        response.kvs().iter().filter_map(|kv| object(prefix, kv, None)).map(|o| (o.key.clone(), o)).collect();
    Ok((objects, revision))
}

/// The object an etcd key-value holds (its key without `prefix`), with `mod_revision` instead
/// of its own when given (a delete's revision).
fn object(prefix: &str, kv: &KeyValue, mod_revision: Option<i64>) -> Option<Object> {
    let key = kv.key_str().ok()?.strip_prefix(prefix)?.to_owned();
    Some(Object {
        key,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision().try_into().ok()?,
        mod_revision: mod_revision.unwrap_or(kv.mod_revision()).try_into().ok()?,
    })
}

/// Keeps the mirror current: one watch from the mirror's revision on, re-established after an
/// error, and a fresh listing when etcd has compacted past it. Ends when the store is dropped.
async fn follow(store: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match watch_once(&store).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => tracing::warn!(error = %e, "etcd watch ended; resuming"),
        }
        if store.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One watch: applies events until the stream ends (`Ok` after a compaction re-list, or once the
/// store is dropped). It holds the store only while applying a response, so dropping the last
/// clone of the store ends it.
async fn watch_once(store: &std::sync::Weak<Inner>) -> std::result::Result<(), etcd_client::Error> {
    let Some(inner) = store.upgrade() else { return Ok(()) };
    let (client, prefix) = (inner.client.clone(), inner.prefix.clone());
    let prefix = &prefix;
    let from = inner.mirror.read().unwrap_or_else(std::sync::PoisonError::into_inner).revision + 1;
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(i64::try_from(from).unwrap_or(i64::MAX));
    drop(inner);
    let mut watch = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut stream = watch.watch(format!("{prefix}/"), Some(options)).await?;
    while let Some(response) = stream.message().await? {
        let Some(inner) = store.upgrade() else { return Ok(()) };
        if response.compact_revision() > 0 {
            // etcd no longer has the events after our revision: start over from a listing.
            let (objects, revision) = match list_all(&client, prefix).await {
                Ok(listed) => listed,
                Err(e) => return Err(etcd_client::Error::WatchError(e.to_string())),
            };
            tracing::warn!(revision, "etcd compacted past the mirror; re-listed");
            inner.mirror.write().unwrap_or_else(std::sync::PoisonError::into_inner).reset(objects, revision);
            inner.seen.send_replace(revision);
            return Ok(());
        }
        if response.canceled() {
            return Err(etcd_client::Error::WatchError(format!("canceled: {}", response.cancel_reason())));
        }
        // The mirror's revision moves with the events under the prefix only (not with etcd's
        // progress notifications): readers waiting for "the store's revision" wait for events.
        let mut mirror = inner.mirror.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in response.events() {
            let Some(kv) = e.kv() else { continue };
            let revision: Revision = kv.mod_revision().try_into().unwrap_or(0);
            let previous = e.prev_kv().and_then(|p| object(prefix, p, None));
            let event = match e.event_type() {
                EventType::Put => {
                    let Some(object) = object(prefix, kv, None) else { continue };
                    Event { kind: EventKind::Put, revision, object, previous }
                }
                EventType::Delete => {
                    let Some(key) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix.as_str())) else {
                        continue;
                    };
                    // The last value: from etcd, or (compacted away there) from the mirror.
                    let last = previous.clone().or_else(|| mirror.get(key));
                    let Some(last) = last else { continue };
                    let object = Object { mod_revision: revision, ..last.clone() };
                    Event { kind: EventKind::Deleted, revision, object, previous: Some(last) }
                }
            };
            mirror.apply(event);
        }
        let revision = mirror.revision;
        drop(mirror);
        inner.seen.send_replace(revision);
    }
    Err(etcd_client::Error::WatchError("the watch stream ended".into()))
}

impl Store for EtcdStore {
    super::mirror::reads_from_mirror!();

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Object> {
        let k = self.key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.clone(), value.clone(), None)])
            .or_else([TxnOp::get(k, None)]);
        let response = self.run(txn).await?.map_err(|_| StoreError::AlreadyExists { key: key.to_owned() })?;
        let revision = revision_of(response.header());
        self.caught_up(revision).await?;
        Ok(Object { key: key.to_owned(), value, create_revision: revision, mod_revision: revision })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Option<Revision>) -> Result<Object> {
        let k = self.key(key);
        let condition = unchanged(&k, expected);
        let txn = Txn::new()
            .when([condition])
            .and_then([TxnOp::put(k.clone(), value.clone(), Some(PutOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(k, None)]);
        let response = self.run(txn).await?.map_err(|current| Self::refused(key, expected, current))?;
        let revision = revision_of(response.header());
        let created = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.create_revision()),
            _ => None,
        });
        self.caught_up(revision).await?;
        Ok(Object {
            key: key.to_owned(),
            value,
            create_revision: created.and_then(|c| c.try_into().ok()).unwrap_or(revision),
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Object> {
        let k = self.key(key);
        let condition = unchanged(&k, expected);
        let txn = Txn::new()
            .when([condition])
            .and_then([TxnOp::delete(k.clone(), Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(k, None)]);
        let response = self.run(txn).await?.map_err(|current| Self::refused(key, expected, current))?;
        let revision = revision_of(response.header());
        let last = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(d) => {
                d.prev_kvs().first().and_then(|kv| object(&self.inner.prefix, kv, None))
            }
            _ => None,
        });
        let last = last.ok_or_else(|| StoreError::NotFound { key: key.to_owned() })?;
        self.caught_up(revision).await?;
        Ok(Object { mod_revision: revision, ..last })
    }
}
