//! The garbage collector. It deletes objects whose owners (`ownerReferences`) are all gone,
//! drops references to owners that are gone while others remain, and carries out the two
//! deletions that wait for it: `Orphan` (release every dependent, then let the owner go) and
//! `Foreground` (delete every dependent, then the owner).

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::Value;

use super::{Loop, Work, queue::Queue};
use crate::{
    api::{
        ApiError, ApiServer,
        deletion::{self, FOREGROUND, ORPHAN, Options, Propagation},
        registry,
    },
    store::Store,
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    metadata: Meta,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    owner_references: Vec<OwnerRef>,
    #[serde(default)]
    finalizers: Vec<String>,
    deletion_timestamp: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerRef {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
}

/// Who owns whom. Only objects with owner references (or a deletion in progress) are parsed;
/// everything else passes through on a byte scan, so the collector costs little per write.
#[derive(Debug, Default)]
pub struct Graph {
    /// Dependent key → the (uid, key) of each owner it names.
    owners: HashMap<String, Vec<(String, Option<String>)>>,
    /// Owner uid → dependent keys.
    dependents: HashMap<String, BTreeSet<String>>,
    /// Owner key → the owner uids dependents name at that key.
    uids_at: HashMap<String, BTreeSet<String>>,
}

fn mentions(value: &[u8], needle: &[u8]) -> bool {
    value.windows(needle.len()).any(|w| w == needle)
}

/// The namespace of the object stored at `key` (none for a cluster-scoped one).
fn namespace_of(key: &str) -> Option<&str> {
    registry::by_key(key).and_then(|(_, ns, _)| ns)
}

/// The storage key an owner reference of a dependent in `namespace` points at; `None` for a kind
/// this server does not serve. A cluster-scoped owner's key ignores the namespace.
fn owner_key(namespace: Option<&str>, owner: &OwnerRef) -> Option<String> {
    let r = registry::by_kind(&owner.api_version, &owner.kind)?;
    Some(r.key(namespace, &owner.name))
}

impl Graph {
    /// Records a created or updated object and queues what it may need.
    pub(super) fn put(&mut self, key: &str, value: &[u8], queue: &mut Queue<Work>) {
        let owned = mentions(value, b"\"ownerReferences\"");
        let deleting = mentions(value, b"\"deletionTimestamp\"");
        if !owned && !deleting {
            self.unlink(key);
            return;
        }
        let head: Head = serde_json::from_slice(value).unwrap_or_default();
        let meta = head.metadata;
        self.unlink(key);
        let namespace = namespace_of(key);
        let owners: Vec<(String, Option<String>)> =
            meta.owner_references.iter().map(|o| (o.uid.clone(), owner_key(namespace, o))).collect();
        for (uid, at) in &owners {
            self.dependents.entry(uid.clone()).or_default().insert(key.to_owned());
            if let Some(at) = at {
                self.uids_at.entry(at.clone()).or_default().insert(uid.clone());
            }
        }
        if !owners.is_empty() {
            self.owners.insert(key.to_owned(), owners);
        }
        let waiting = meta.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND);
        let deleting = meta.deletion_timestamp.is_some();
        if !meta.owner_references.is_empty() || (deleting && waiting) || (deleting && is_namespace(key)) {
            queue.push((Loop::Gc, key.to_owned()));
        }
    }

    /// Forgets a deleted object; queues its dependents (maybe orphaned now), its owners (maybe
    /// waiting in the foreground for it) and its namespace (maybe waiting to be empty).
    pub(super) fn remove(&mut self, key: &str, queue: &mut Queue<Work>) {
        for (_, owner_key) in self.owners.get(key).into_iter().flatten() {
            if let Some(owner_key) = owner_key {
                queue.push((Loop::Gc, owner_key.clone()));
            }
        }
        self.unlink(key);
        for uid in self.uids_at.get(key).into_iter().flatten() {
            for dependent in self.dependents.get(uid).into_iter().flatten() {
                queue.push((Loop::Gc, dependent.clone()));
            }
        }
        if let Some(ns) = namespace_of(key)
            && let Ok(namespaces) = registry::builtin("namespaces", "")
        {
            queue.push((Loop::Gc, namespaces.key(None, ns)));
        }
    }

    fn unlink(&mut self, key: &str) {
        for (uid, at) in self.owners.remove(key).unwrap_or_default() {
            if let Some(set) = self.dependents.get_mut(&uid) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&uid);
                    if let Some(at) = at
                        && let Some(uids) = self.uids_at.get_mut(&at)
                    {
                        uids.remove(&uid);
                        if uids.is_empty() {
                            self.uids_at.remove(&at);
                        }
                    }
                }
            }
        }
    }

    /// Keys of the objects naming `uid` as an owner.
    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Whether the stored `value` is marked for deletion.
fn being_deleted(value: &[u8]) -> bool {
    mentions(value, b"\"deletionTimestamp\"")
        && serde_json::from_slice::<Head>(value).is_ok_and(|h| h.metadata.deletion_timestamp.is_some())
}

fn is_namespace(key: &str) -> bool {
    registry::by_key(key).is_some_and(|(r, _, _)| r.kind == "Namespace")
}

/// Where an owner stands, read from the store (the graph may lag behind it).
#[derive(Debug, PartialEq, Eq)]
enum OwnerState {
    /// There, and not waiting for its dependents to go.
    Solid,
    /// Being deleted in the foreground: its dependents go first.
    Waiting,
    /// Gone (or replaced by a namesake with another uid).
    Dangling,
}

fn owner_state<S: Store>(server: &ApiServer<S>, namespace: Option<&str>, owner: &OwnerRef) -> OwnerState {
    // An owner of a kind this server does not serve cannot be checked: keep the dependent.
    let Some(key) = owner_key(namespace, owner) else { return OwnerState::Solid };
    let Some(found) = server.store.get(&key) else { return OwnerState::Dangling };
    let head: Head = serde_json::from_slice(&found.value).unwrap_or_default();
    if head.metadata.uid != owner.uid {
        OwnerState::Dangling
    } else if head.metadata.deletion_timestamp.is_some()
        && head.metadata.finalizers.iter().any(|f| f == FOREGROUND)
    {
        OwnerState::Waiting
    } else {
        OwnerState::Solid
    }
}

pub(super) async fn examine<S: Store + Clone>(
    server: &ApiServer<S>,
    graph: &Graph,
    key: &str,
    object: &Value,
) -> Result<(), ApiError> {
    let head = Head::deserialize(object).unwrap_or_default();
    let meta = &head.metadata;
    let deleting = meta.deletion_timestamp.is_some();
    if deleting && meta.finalizers.iter().any(|f| f == ORPHAN) {
        for dependent in graph.dependents_of(&meta.uid) {
            server.edit_metadata(&dependent, |o| remove_owner(o, |r| r.uid == meta.uid)).await?;
        }
        server.edit_metadata(key, |o| deletion::remove_finalizer(o, ORPHAN)).await?;
        return Ok(());
    }
    if deleting && meta.finalizers.iter().any(|f| f == FOREGROUND) {
        let dependents: Vec<String> =
            graph.dependents_of(&meta.uid).into_iter().filter(|d| server.store.get(d).is_some()).collect();
        let foreground = Options { propagation: Propagation::Foreground, ..Options::default() };
        for dependent in &dependents {
            // One already being deleted goes on its own terms, as upstream's collector leaves it:
            // deleting it again would put back the foregroundDeletion finalizer its own pass took
            // off once it had nothing left to wait for, and the two passes would take turns
            // rewriting it (and racing every other writer of it) for as long as it stays.
            if server.store.get(dependent).is_some_and(|o| being_deleted(&o.value)) {
                continue;
            }
            match server.delete_key(dependent, &foreground).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        // The owner goes when the last dependent has; their deletions queue it again.
        if dependents.iter().all(|d| server.store.get(d).is_none()) {
            server.edit_metadata(key, |o| deletion::remove_finalizer(o, FOREGROUND)).await?;
        }
        return Ok(());
    }
    if meta.owner_references.is_empty() || deleting {
        return Ok(());
    }
    let namespace = namespace_of(key);
    let states: Vec<(&OwnerRef, OwnerState)> =
        meta.owner_references.iter().map(|o| (o, owner_state(server, namespace, o))).collect();
    let any = |s: OwnerState| states.iter().any(|(_, state)| *state == s);
    if any(OwnerState::Solid) {
        if any(OwnerState::Dangling) {
            let gone: Vec<String> = states
                .iter()
                .filter(|(_, s)| *s == OwnerState::Dangling)
                .map(|(o, _)| o.uid.clone())
                .collect();
            server.edit_metadata(key, |o| remove_owner(o, |r| gone.contains(&r.uid))).await?;
        }
        return Ok(());
    }
    let propagation =
        if any(OwnerState::Waiting) { Propagation::Foreground } else { Propagation::Background };
    tracing::debug!(%key, ?propagation, "collecting an object whose owners are gone");
    match server.delete_key(key, &Options { propagation, ..Options::default() }).await {
        Err(e) if e.code != 404 => Err(e),
        _ => Ok(()),
    }
}

/// Drops the owner references `gone` picks; whether any went.
fn remove_owner(object: &mut Value, gone: impl Fn(&OwnerRef) -> bool) -> bool {
    let Some(refs) = object.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = refs.len();
    refs.retain(|r| OwnerRef::deserialize(r).map(|r| !gone(&r)).unwrap_or(true));
    let changed = refs.len() != before;
    if refs.is_empty()
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("ownerReferences");
    }
    changed
}
