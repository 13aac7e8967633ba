//! The default store: redb on local disk. One writer thread takes every pending write, checks it
//! against the current state, commits the whole batch in one fsync'd transaction (group commit),
//! and only then makes it visible to readers and watchers and acknowledges it. Reads are served
//! from an in-memory copy of every object.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, RwLock},
};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{Event, EventKind, Object, Result, Revision, Store, StoreError, WatchStream, mirror::Mirror};

/// key → (create revision, mod revision, value)
const OBJECTS: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
/// Writes folded into one transaction at most.
const MAX_BATCH: usize = 4096;

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Events kept for watch resume.
    pub history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { history: 100_000 }
    }
}

#[derive(Debug)]
enum Op {
    Create,
    Update { expected: Option<Revision> },
    Delete { expected: Option<Revision> },
}

#[derive(Debug)]
struct Request {
    key: String,
    value: Vec<u8>,
    op: Op,
    reply: oneshot::Sender<Result<Object>>,
}

/// The redb-backed store. Cheap to clone; the writer thread ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    state: Arc<RwLock<Mirror>>,
    writes: mpsc::Sender<Request>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(Box::new(e.into()))
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path` and loads it.
    pub fn open(path: &Path, options: Options) -> Result<Self> {
        Self::start(Database::create(path).map_err(backend)?, options)
    }

    /// Writes a new store at `path` holding `objects` at `revision` (a restored backup); refuses
    /// to replace an existing file.
    pub fn restore(path: &Path, revision: Revision, objects: &[Object]) -> Result<()> {
        if path.exists() {
            return Err(StoreError::AlreadyExists { key: path.display().to_string() });
        }
        let db = Database::create(path).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        {
            let mut table = txn.open_table(OBJECTS).map_err(backend)?;
            for o in objects {
                table
                    .insert(o.key.as_str(), (o.create_revision, o.mod_revision, o.value.as_slice()))
                    .map_err(backend)?;
            }
            txn.open_table(META).map_err(backend)?.insert(REVISION, revision).map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    /// A store in memory only (the same code over redb's in-memory backend): for tests of what
    /// runs on top of a store.
    pub fn in_memory(options: Options) -> Result<Self> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(backend)?;
        Self::start(db, options)
    }

    fn start(db: Database, options: Options) -> Result<Self> {
        let (objects, revision) = load(&db)?;
        let state = Arc::new(RwLock::new(Mirror::new(objects, revision, options.history)));
        let (writes, requests) = mpsc::channel(MAX_BATCH);
        let writer_state = Arc::clone(&state);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(db, requests, writer_state))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self { state, writes, writer: Arc::new(std::sync::Mutex::new(Some(handle))) })
    }

    /// Stops the writer after the writes already queued and closes the database file, so it can
    /// be opened again. Call it on the last clone: while another clone lives, the writer (and so
    /// this call) waits for it.
    pub fn close(self) {
        let Self { writes, writer, .. } = self;
        drop(writes);
        let handle = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    async fn write(&self, key: &str, value: Vec<u8>, op: Op) -> Result<Object> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Request { key: key.to_owned(), value, op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        // A panic while holding the lock leaves consistent data (writes are applied whole).
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn load(db: &Database) -> Result<(BTreeMap<String, Object>, Revision)> {
    let txn = db.begin_write().map_err(backend)?;
    // Make sure both tables exist, so a fresh store reads as empty.
    txn.open_table(OBJECTS).map_err(backend)?;
    txn.open_table(META).map_err(backend)?;
    txn.commit().map_err(backend)?;
    let read = db.begin_read().map_err(backend)?;
    let revision =
        read.open_table(META).map_err(backend)?.get(REVISION).map_err(backend)?.map_or(0, |v| v.value());
    let mut objects = BTreeMap::new();
    for entry in read.open_table(OBJECTS).map_err(backend)?.iter().map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let (create_revision, mod_revision, value) = v.value();
        let key = k.value().to_owned();
        objects.insert(key.clone(), Object { key, value: value.to_vec(), create_revision, mod_revision });
    }
    Ok((objects, revision))
}

/// A write checked and given its revision, waiting for the batch commit.
struct Staged {
    reply: oneshot::Sender<Result<Object>>,
    event: Event,
}

fn writer(db: Database, mut requests: mpsc::Receiver<Request>, state: Arc<RwLock<Mirror>>) {
    while let Some(first) = requests.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (staged, rejected, revision) = stage(batch, &state);
        // A write rejected for what an earlier write of the batch did (a Conflict, AlreadyExists,
        // NotFound) is answered only once that write is visible: a writer that rereads and retries
        // on the answer must see what it lost to, not the state before it.
        let reject = |rejected: Vec<Rejected>| {
            for (reply, err) in rejected {
                let _ = reply.send(Err(err));
            }
        };
        if staged.is_empty() {
            reject(rejected);
            continue;
        }
        if let Err(err) = persist(&db, &staged, revision) {
            let msg = err.to_string();
            tracing::error!(error = %msg, "store commit failed; batch rejected");
            for s in staged {
                let _ = s.reply.send(Err(StoreError::Backend(msg.clone().into())));
            }
            reject(rejected);
            continue;
        }
        let mut st = state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut replies = Vec::with_capacity(staged.len());
        for Staged { reply, event } in staged {
            replies.push((reply, event.object.clone()));
            st.apply(event);
        }
        drop(st);
        for (reply, object) in replies {
            let _ = reply.send(Ok(object));
        }
        reject(rejected);
    }
}

/// A write refused at staging, and why; answered after the batch is visible.
type Rejected = (oneshot::Sender<Result<Object>>, StoreError);

/// Checks each request against the state plus the batch's earlier writes; sets aside the ones
/// that fail and gives the rest consecutive revisions.
fn stage(batch: Vec<Request>, state: &RwLock<Mirror>) -> (Vec<Staged>, Vec<Rejected>, Revision) {
    let st = state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut revision = st.revision;
    let mut overlay: HashMap<String, Option<Object>> = HashMap::new();
    let mut staged = Vec::with_capacity(batch.len());
    let mut rejected = Vec::new();
    for Request { key, value, op, reply } in batch {
        let current = match overlay.get(&key) {
            Some(entry) => entry.clone(),
            None => st.objects.get(&key).cloned(),
        };
        let event = match (op, current) {
            (Op::Create, Some(_)) => Err(StoreError::AlreadyExists { key }),
            (Op::Update { .. } | Op::Delete { .. }, None) => Err(StoreError::NotFound { key }),
            (Op::Update { expected: Some(e) } | Op::Delete { expected: Some(e) }, Some(cur))
                if e != cur.mod_revision =>
            {
                Err(StoreError::Conflict { key, expected: e, actual: cur.mod_revision })
            }
            (Op::Delete { .. }, Some(last)) => {
                revision += 1;
                overlay.insert(key, None);
                Ok(Event {
                    kind: EventKind::Deleted,
                    revision,
                    object: Object { mod_revision: revision, ..last.clone() },
                    previous: Some(last),
                })
            }
            (Op::Create | Op::Update { .. }, previous) => {
                revision += 1;
                let create_revision = previous.as_ref().map_or(revision, |p| p.create_revision);
                let object = Object { key: key.clone(), value, create_revision, mod_revision: revision };
                overlay.insert(key, Some(object.clone()));
                Ok(Event { kind: EventKind::Put, revision, object, previous })
            }
        };
        match event {
            Ok(event) => staged.push(Staged { reply, event }),
            Err(err) => rejected.push((reply, err)),
        }
    }
    (staged, rejected, revision)
}

fn persist(db: &Database, staged: &[Staged], revision: Revision) -> std::result::Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut objects = txn.open_table(OBJECTS)?;
        for Staged { event, .. } in staged {
            let o = &event.object;
            match event.kind {
                EventKind::Put => {
                    objects
                        .insert(o.key.as_str(), (o.create_revision, o.mod_revision, o.value.as_slice()))?;
                }
                EventKind::Deleted => {
                    objects.remove(o.key.as_str())?;
                }
            }
        }
        txn.open_table(META)?.insert(REVISION, revision)?;
    }
    // Default durability: the commit returns after fsync.
    txn.commit()?;
    Ok(())
}

impl Store for EmbeddedStore {
    super::mirror::reads_from_mirror!();

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Object> {
        self.write(key, value, Op::Create).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Option<Revision>) -> Result<Object> {
        self.write(key, value, Op::Update { expected }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Object> {
        self.write(key, Vec::new(), Op::Delete { expected }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers race for one key, both from the same revision: the one refused with a
    /// Conflict rereads at once and must find the winner's write (else its retry, built on the
    /// old state, is refused again). Writes sent together usually land in one batch, where the
    /// refusal used to be answered before the winning write was visible.
    #[tokio::test]
    async fn a_write_refused_for_a_conflict_sees_the_winner_on_reread() {
        let store = EmbeddedStore::in_memory(Options::default()).expect("store");
        let key = "/registry/k";
        for round in 0..200u32 {
            let base = match store.get(key) {
                Some(o) => o.mod_revision,
                None => store.create(key, b"0".to_vec()).await.expect("create").mod_revision,
            };
            // The loser rereads as soon as it is answered, not when both are.
            let store = &store;
            let write = |value: String| async move {
                store.update(key, value.into_bytes(), Some(base)).await.map_err(|e| (e, store.get(key)))
            };
            let (a, b) = tokio::join!(write(format!("a{round}")), write(format!("b{round}")));
            let (won, (lost, now)) = match (a, b) {
                (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
                other => panic!("round {round}: one write wins, one conflicts: {other:?}"),
            };
            assert!(matches!(lost, StoreError::Conflict { .. }), "round {round}: {lost:?}");
            let now = now.expect("stored");
            assert_eq!(now.mod_revision, won.mod_revision, "round {round}: the winner is not visible yet");
        }
    }
}
