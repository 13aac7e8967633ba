//! The storage suite: every semantic the API server relies on, run against both backends — the
//! embedded store and etcd (a real etcd on loopback per test) — plus what only one of them has:
//! durability across SIGKILL (embedded), compaction and several API servers sharing one etcd.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::etcd::Etcd;
use skiff_control::store::{
    EventKind, Store, StoreError,
    embedded::{EmbeddedStore, Options},
    etcd::{self, EtcdStore},
};

fn open(path: &Path) -> EmbeddedStore {
    EmbeddedStore::open(path, Options::default()).expect("open store")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn open_etcd(etcd: &Etcd, history: usize) -> EtcdStore {
    EtcdStore::open(&[etcd.endpoint()], etcd::Options { history, ..etcd::Options::default() })
        .await
        .expect("open the etcd store")
}

/// Runs `body` on a fresh embedded store keeping `history` events.
fn on_embedded<F: Future<Output = ()>>(history: usize, body: impl FnOnce(EmbeddedStore) -> F) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = EmbeddedStore::open(&dir.path().join("db"), Options { history }).expect("open");
    runtime().block_on(body(store));
}

/// Runs `body` on a store over a fresh etcd, its mirror keeping `history` events.
fn on_etcd<F: Future<Output = ()>>(history: usize, body: impl FnOnce(EtcdStore) -> F) {
    let etcd = Etcd::start();
    runtime().block_on(async { body(open_etcd(&etcd, history).await).await });
}

/// One test per backend for the suite function `$name` (its store keeping `$history` events).
macro_rules! on_both {
    ($name:ident, $history:expr) => {
        mod $name {
            #[test]
            fn embedded() {
                super::on_embedded($history, super::$name);
            }

            #[test]
            fn etcd() {
                super::on_etcd($history, super::$name);
            }
        }
    };
}

on_both!(create_update_delete_follow_revisions_and_compare_and_swap, 1000);
on_both!(concurrent_writes_get_distinct_increasing_revisions, 1000);
on_both!(watches_replay_from_a_revision_then_follow_live_and_410_when_too_old, 4);
on_both!(lists_at_a_past_revision_rewind_the_history, 4);

async fn create_update_delete_follow_revisions_and_compare_and_swap<S: Store>(store: S) {
    let base = store.revision();
    let a = store.create("/pods/default/a", b"v1".to_vec()).await.expect("create");
    assert_eq!((a.create_revision, a.mod_revision), (base + 1, base + 1));
    assert!(matches!(
        store.create("/pods/default/a", b"x".to_vec()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let b = store.create("/pods/default/b", b"v1".to_vec()).await.expect("create b");
    assert_eq!(b.mod_revision, base + 2);

    let a2 = store.update("/pods/default/a", b"v2".to_vec(), Some(base + 1)).await.expect("update");
    assert_eq!((a2.create_revision, a2.mod_revision), (base + 1, base + 3));
    let stale = store.update("/pods/default/a", b"v3".to_vec(), Some(base + 1)).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { expected, actual, .. }) if expected == base + 1 && actual == base + 3),
        "{stale:?}"
    );
    assert_eq!(store.get("/pods/default/a").expect("a").value, b"v2", "a rejected write changed nothing");
    assert_eq!(store.get("/pods/default/a"), Some(a2.clone()), "the mirror holds what the write returned");
    assert!(matches!(store.update("/pods/default/zz", vec![], None).await, Err(StoreError::NotFound { .. })));

    let (items, rev) = store.list("/pods/default/");
    assert_eq!(
        items.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        ["/pods/default/a", "/pods/default/b"]
    );
    assert_eq!(rev, base + 3);
    assert!(store.list("/pods/other/").0.is_empty());

    assert!(matches!(
        store.delete("/pods/default/b", Some(base + 1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(store.delete("/pods/default/zz", None).await, Err(StoreError::NotFound { .. })));
    let gone = store.delete("/pods/default/b", Some(base + 2)).await.expect("delete");
    assert_eq!((gone.mod_revision, gone.value.as_slice()), (base + 4, &b"v1"[..]));
    assert!(store.get("/pods/default/b").is_none());
    assert_eq!(store.revision(), base + 4);
}

async fn concurrent_writes_get_distinct_increasing_revisions<S: Store + Clone>(store: S) {
    let base = store.revision();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.create(&format!("/k/{i:04}"), vec![1]).await.expect("create").mod_revision
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.expect("join"));
    }
    revisions.sort_unstable();
    // Nothing else writes: one revision per write, none shared, none skipped.
    assert_eq!(revisions, (base + 1..=base + 300).collect::<Vec<u64>>());
    assert_eq!(store.list("/k/").0.len(), 300);
}

async fn watches_replay_from_a_revision_then_follow_live_and_410_when_too_old<S: Store>(store: S) {
    let base = store.revision();
    for i in 1..=3 {
        store.create(&format!("/svc/{i}"), vec![i]).await.expect("create");
    }
    store.create("/other/x", vec![9]).await.expect("create other");
    // Resume after the first write: the second and third under /svc/, then live ones.
    let mut w = store.watch("/svc/", base + 1).expect("watch");
    let replayed: Vec<u64> = [w.next().await, w.next().await]
        .into_iter()
        .map(|e| e.expect("event").expect("ok").revision)
        .collect();
    assert_eq!(replayed, [base + 2, base + 3]);
    let deleted = store.delete("/svc/1", None).await.expect("delete");
    let live = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("in time")
        .expect("event")
        .expect("ok");
    assert_eq!(
        (live.kind.clone(), live.revision, live.object.value.clone()),
        (EventKind::Deleted, deleted.mod_revision, vec![1])
    );
    assert_eq!(live.previous.as_ref().map(|p| p.mod_revision), Some(base + 1));

    // A revision the store has not reached (a client of a store since restored to an older one)
    // is refused too: resuming there would skip every event up to it.
    assert!(matches!(store.watch("/svc/", store.revision() + 5), Err(StoreError::Compacted { .. })));

    // The history holds 4 events; resuming from before it is refused, like etcd's 410.
    for i in 10..14 {
        store.create(&format!("/svc/{i}"), vec![i]).await.expect("create");
    }
    assert!(matches!(store.watch("/svc/", base + 1), Err(StoreError::Compacted { .. })));
}

async fn lists_at_a_past_revision_rewind_the_history<S: Store>(store: S) {
    let a = store.create("/p/a", b"a1".to_vec()).await.expect("create");
    let b = store.create("/p/b", b"b1".to_vec()).await.expect("create");
    store.create("/q/x", b"x".to_vec()).await.expect("create");
    let then = store.revision();
    store.update("/p/a", b"a2".to_vec(), None).await.expect("update");
    store.delete("/p/b", None).await.expect("delete");
    store.create("/p/c", b"c1".to_vec()).await.expect("create");

    let past = store.list_at("/p/", then).expect("within the history");
    let seen: Vec<(&str, &[u8], u64)> =
        past.iter().map(|o| (o.key.as_str(), o.value.as_slice(), o.mod_revision)).collect();
    assert_eq!(seen, [("/p/a", &b"a1"[..], a.mod_revision), ("/p/b", &b"b1"[..], b.mod_revision)]);
    assert_eq!(store.list_at("/p/", store.revision()).expect("now"), store.list("/p/").0);

    for n in 0..4 {
        store.create(&format!("/r/{n}"), b"r".to_vec()).await.expect("create");
    }
    assert!(matches!(store.list_at("/p/", then), Err(StoreError::Compacted { .. })));
}

/// Writes a little and returns what a reader sees afterwards.
async fn write_some<S: Store>(store: &S) -> ((Vec<skiff_control::store::Object>, u64), u64) {
    store.create("/a", b"1".to_vec()).await.expect("a");
    store.create("/b", b"2".to_vec()).await.expect("b");
    store.update("/a", b"3".to_vec(), None).await.expect("a again");
    store.delete("/b", None).await.expect("delete b");
    (store.list("/"), store.revision())
}

#[test]
fn embedded_everything_survives_a_reopen_with_the_same_revisions() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("db");
    let store = open(&path);
    let (before, revision) = runtime().block_on(write_some(&store));
    store.close();
    let reopened = open(&path);
    assert_eq!(reopened.list("/"), before);
    assert_eq!(reopened.revision(), revision);
    let next = runtime().block_on(reopened.create("/c", vec![])).expect("c");
    assert_eq!(next.mod_revision, revision + 1, "revisions continue after a restart");
}

#[test]
fn etcd_everything_survives_a_reopen_with_the_same_revisions() {
    let etcd = Etcd::start();
    runtime().block_on(async {
        let store = open_etcd(&etcd, 1000).await;
        let (before, revision) = write_some(&store).await;
        drop(store);
        let reopened = open_etcd(&etcd, 1000).await;
        assert_eq!(reopened.list("/"), before);
        assert_eq!(reopened.revision(), revision);
        let next = reopened.create("/c", vec![]).await.expect("c");
        assert_eq!(next.mod_revision, revision + 1, "revisions continue after a restart");
    });
}

#[test]
fn two_api_servers_on_one_etcd_see_each_others_writes_and_never_overwrite_them() {
    let etcd = Etcd::start();
    runtime().block_on(async {
        let (one, two) = (open_etcd(&etcd, 1000).await, open_etcd(&etcd, 1000).await);
        let mut watching = two.watch("/pods/", 0).expect("watch on two");
        let created = one.create("/pods/a", b"from one".to_vec()).await.expect("create on one");
        // Two's mirror learns it from etcd's watch: the event, then the object.
        let event = tokio::time::timeout(Duration::from_secs(5), watching.next())
            .await
            .expect("in time")
            .expect("event")
            .expect("ok");
        assert_eq!((event.kind.clone(), event.object.clone()), (EventKind::Put, created.clone()));
        assert_eq!(two.get("/pods/a"), Some(created.clone()));
        assert!(matches!(two.create("/pods/a", vec![]).await, Err(StoreError::AlreadyExists { .. })));
        // Both update from the same revision: exactly one wins, the other gets a conflict.
        let (first, second) = tokio::join!(
            one.update("/pods/a", b"one".to_vec(), Some(created.mod_revision)),
            two.update("/pods/a", b"two".to_vec(), Some(created.mod_revision)),
        );
        assert!(first.is_ok() != second.is_ok(), "{first:?} {second:?}");
        let winner = first.or(second).expect("one update won");
        assert_eq!(one.get("/pods/a"), Some(winner.clone()), "the winner's write is what one reads");
        let mut on_two = None;
        for _ in 0..100 {
            on_two = two.get("/pods/a").filter(|o| o.mod_revision == winner.mod_revision);
            if on_two.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(on_two, Some(winner));
    });
}

#[test]
fn etcd_compaction_surfaces_as_compacted_watches_and_lists() {
    let etcd = Etcd::start();
    runtime().block_on(async {
        let store = open_etcd(&etcd, 1000).await;
        let first = store.create("/c/a", vec![1]).await.expect("create");
        store.update("/c/a", vec![2], None).await.expect("update");
        let latest = store.update("/c/a", vec![3], None).await.expect("update");
        assert!(store.watch("/c/", first.mod_revision).is_ok(), "within the history before compacting");
        store.compact(latest.mod_revision).await.expect("compact");
        assert!(matches!(store.watch("/c/", first.mod_revision), Err(StoreError::Compacted { .. })));
        assert!(matches!(store.list_at("/c/", first.mod_revision), Err(StoreError::Compacted { .. })));
        // etcd itself compacted too: a second store (a restarted API server) still lists the present.
        let other = open_etcd(&etcd, 1000).await;
        assert_eq!(other.get("/c/a").map(|o| o.value), Some(vec![3]));
        let mut from_now = store.watch("/c/", 0).expect("a watch from now");
        store.delete("/c/a", None).await.expect("delete");
        let event = tokio::time::timeout(Duration::from_secs(5), from_now.next()).await.expect("in time");
        assert_eq!(event.expect("event").expect("ok").kind, EventKind::Deleted);
    });
}

#[test]
fn no_acknowledged_write_is_lost_to_sigkill() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff-store-burst"))
        .arg(&path)
        .args(["200000", "64"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn burst writer");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut acked = BTreeMap::new();
    for line in stdout.lines() {
        let line = line.expect("line");
        let mut f = line.split_whitespace();
        if f.next() == Some("acked") {
            let (Some(key), Some(rev)) = (f.next(), f.next()) else { panic!("bad line {line}") };
            acked.insert(key.to_owned(), rev.parse::<u64>().expect("revision"));
        }
        // Kill it mid-burst, with writes in flight.
        if acked.len() == 3000 {
            child.kill().expect("SIGKILL");
            break;
        }
    }
    child.wait().expect("reap");
    assert_eq!(acked.len(), 3000, "the writer finished or died before the kill");
    let store = open(&path);
    for (key, rev) in &acked {
        let object = store.get(key).unwrap_or_else(|| panic!("acknowledged {key} lost"));
        assert_eq!(object.mod_revision, *rev, "{key} came back with another revision");
    }
    assert!(store.revision() >= *acked.values().max().expect("some"));
}
