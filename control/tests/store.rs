//! The embedded store: semantics, watch resume, durability across reopen and across SIGKILL.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use skiff_control::store::{
    EventKind, Store as _, StoreError,
    embedded::{EmbeddedStore, Options},
};

fn open(path: &Path) -> EmbeddedStore {
    EmbeddedStore::open(path, Options::default()).expect("open store")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[test]
fn create_update_delete_follow_revisions_and_compare_and_swap() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(&dir.path().join("db"));
    runtime().block_on(async {
        let a = store.create("/pods/default/a", b"v1".to_vec()).await.expect("create");
        assert_eq!((a.create_revision, a.mod_revision), (1, 1));
        assert!(matches!(
            store.create("/pods/default/a", b"x".to_vec()).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        let b = store.create("/pods/default/b", b"v1".to_vec()).await.expect("create b");
        assert_eq!(b.mod_revision, 2);

        let a2 = store.update("/pods/default/a", b"v2".to_vec(), Some(1)).await.expect("update");
        assert_eq!((a2.create_revision, a2.mod_revision), (1, 3));
        let stale = store.update("/pods/default/a", b"v3".to_vec(), Some(1)).await;
        assert!(matches!(stale, Err(StoreError::Conflict { expected: 1, actual: 3, .. })), "{stale:?}");
        assert_eq!(store.get("/pods/default/a").expect("a").value, b"v2", "a rejected write changed nothing");
        assert!(matches!(
            store.update("/pods/default/zz", vec![], None).await,
            Err(StoreError::NotFound { .. })
        ));

        let (items, rev) = store.list("/pods/default/");
        assert_eq!(
            items.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["/pods/default/a", "/pods/default/b"]
        );
        assert_eq!(rev, 3);
        assert!(store.list("/pods/other/").0.is_empty());

        assert!(matches!(store.delete("/pods/default/b", Some(1)).await, Err(StoreError::Conflict { .. })));
        let gone = store.delete("/pods/default/b", Some(2)).await.expect("delete");
        assert_eq!(gone.mod_revision, 4);
        assert!(store.get("/pods/default/b").is_none());
        assert_eq!(store.revision(), 4);
    });
}

#[test]
fn concurrent_writes_get_distinct_consecutive_revisions() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = open(&dir.path().join("db"));
    let revisions = runtime().block_on(async {
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.create(&format!("/k/{i:04}"), vec![1]).await.expect("create").mod_revision
                })
            })
            .collect();
        let mut revs = Vec::new();
        for t in tasks {
            revs.push(t.await.expect("join"));
        }
        revs
    });
    let mut sorted = revisions.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=500).collect::<Vec<u64>>());
}

#[test]
fn watches_replay_from_a_revision_then_follow_live_and_410_when_too_old() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = EmbeddedStore::open(&dir.path().join("db"), Options { history: 4 }).expect("open");
    runtime().block_on(async {
        for i in 1..=3 {
            store.create(&format!("/svc/{i}"), vec![i]).await.expect("create");
        }
        store.create("/other/x", vec![9]).await.expect("create other");
        // Resume after revision 1: events 2 and 3 under /svc/, then live ones.
        let mut w = store.watch("/svc/", 1).expect("watch");
        let replayed: Vec<u64> = [w.next().await, w.next().await]
            .into_iter()
            .map(|e| e.expect("event").expect("ok").revision)
            .collect();
        assert_eq!(replayed, [2, 3]);
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

        // History holds 4 events; resuming from revision 0 < horizon is refused like etcd's 410.
        for i in 10..14 {
            store.create(&format!("/svc/{i}"), vec![i]).await.expect("create");
        }
        assert!(matches!(store.watch("/svc/", 1), Err(StoreError::Compacted { .. })));
    });
}

#[test]
fn lists_at_a_past_revision_rewind_the_history() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = EmbeddedStore::open(&dir.path().join("db"), Options { history: 4 }).expect("open");
    runtime().block_on(async {
        store.create("/p/a", b"a1".to_vec()).await.expect("create");
        let b = store.create("/p/b", b"b1".to_vec()).await.expect("create");
        store.create("/q/x", b"x".to_vec()).await.expect("create");
        let then = store.revision();
        store.update("/p/a", b"a2".to_vec(), None).await.expect("update");
        store.delete("/p/b", None).await.expect("delete");
        store.create("/p/c", b"c1".to_vec()).await.expect("create");

        let past = store.list_at("/p/", then).expect("within the history");
        let seen: Vec<(&str, &[u8], u64)> =
            past.iter().map(|o| (o.key.as_str(), o.value.as_slice(), o.mod_revision)).collect();
        assert_eq!(seen, [("/p/a", &b"a1"[..], 1), ("/p/b", &b"b1"[..], b.mod_revision)]);
        assert_eq!(store.list_at("/p/", store.revision()).expect("now"), store.list("/p/").0);

        for n in 0..4 {
            store.create(&format!("/r/{n}"), b"r".to_vec()).await.expect("create");
        }
        assert!(matches!(store.list_at("/p/", then), Err(StoreError::Compacted { .. })));
    });
}

#[test]
fn everything_survives_a_reopen_with_the_same_revisions() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("db");
    let store = open(&path);
    let before = runtime().block_on(async {
        store.create("/a", b"1".to_vec()).await.expect("a");
        store.create("/b", b"2".to_vec()).await.expect("b");
        store.update("/a", b"3".to_vec(), None).await.expect("a again");
        store.delete("/b", None).await.expect("delete b");
        store.list("/")
    });
    store.close();
    let reopened = open(&path);
    assert_eq!(reopened.list("/"), before);
    assert_eq!(reopened.revision(), 4);
    let next = runtime().block_on(reopened.create("/c", vec![])).expect("c");
    assert_eq!(next.mod_revision, 5, "revisions continue after a restart");
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
