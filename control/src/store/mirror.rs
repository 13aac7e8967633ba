//! The in-memory view every backend serves reads from: each object, the revision they are at,
//! and the recent history (watch resume, lists of the past). The embedded store updates it as it
//! commits; the etcd store as etcd's watch reports writes (its own and other API servers').

use std::collections::BTreeMap;

use super::{Event, EventKind, Object, Result, Revision, WatchStream, history::History};

#[derive(Debug)]
pub(crate) struct Mirror {
    pub(crate) objects: BTreeMap<String, Object>,
    pub(crate) revision: Revision,
    history: History,
    capacity: usize,
}

impl Mirror {
    /// The view of `objects` at `revision`, keeping `capacity` events of history.
    pub(crate) fn new(objects: BTreeMap<String, Object>, revision: Revision, capacity: usize) -> Self {
        Self { objects, revision, history: History::new(revision, capacity), capacity }
    }

    /// Starts over from `objects` at `revision` (the backend lost track of events): the history
    /// is emptied and every open watch ends, so watchers re-list.
    pub(crate) fn reset(&mut self, objects: BTreeMap<String, Object>, revision: Revision) {
        *self = Self::new(objects, revision, self.capacity);
    }

    /// Applies one write.
    pub(crate) fn apply(&mut self, event: Event) {
        match event.kind {
            EventKind::Put => self.objects.insert(event.object.key.clone(), event.object.clone()),
            EventKind::Deleted => self.objects.remove(&event.object.key),
        };
        self.revision = self.revision.max(event.revision);
        self.history.push(event);
    }

    /// Forgets history up to `revision`: watches and lists from before it are `Compacted`.
    pub(crate) fn compact(&mut self, revision: Revision) {
        self.history.compact(revision);
    }

    pub(crate) fn get(&self, key: &str) -> Option<Object> {
        self.objects.get(key).cloned()
    }

    fn under(&self, prefix: &str) -> impl Iterator<Item = (&String, &Object)> {
        self.objects.range(prefix.to_owned()..).take_while(move |(k, _)| k.starts_with(prefix))
    }

    pub(crate) fn list(&self, prefix: &str) -> (Vec<Object>, Revision) {
        (self.under(prefix).map(|(_, o)| o.clone()).collect(), self.revision)
    }

    pub(crate) fn list_at(&self, prefix: &str, revision: Revision) -> Result<Vec<Object>> {
        let mut items: BTreeMap<String, Object> =
            self.under(prefix).map(|(k, o)| (k.clone(), o.clone())).collect();
        self.history.undo(prefix, revision, &mut items)?;
        Ok(items.into_values().collect())
    }

    pub(crate) fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.history.watch(prefix, after, self.revision)
    }
}

/// The read half of [`super::Store`] (`revision`, `get`, `list`, `list_at`, `watch`) for a
/// backend whose `read()` returns its mirror.
macro_rules! reads_from_mirror {
    () => {
        fn revision(&self) -> Revision {
            self.read().revision
        }

        fn get(&self, key: &str) -> Option<Object> {
            self.read().get(key)
        }

        fn list(&self, prefix: &str) -> (Vec<Object>, Revision) {
            self.read().list(prefix)
        }

        fn list_at(&self, prefix: &str, revision: Revision) -> Result<Vec<Object>> {
            self.read().list_at(prefix, revision)
        }

        fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
            self.read().watch(prefix, after)
        }
    };
}
pub(crate) use reads_from_mirror;
