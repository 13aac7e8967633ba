//! The bounded event history and the live fan-out behind watches.

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::broadcast;

use super::{Event, Revision, StoreError};

/// Recent events, and everyone listening for the next ones.
#[derive(Debug)]
pub(crate) struct History {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Every event after this revision is in `events` (resuming from before it is impossible).
    horizon: Revision,
    live: broadcast::Sender<Arc<Event>>,
}

impl History {
    /// A history that can resume watches from `revision` on (the store's revision at open).
    pub(crate) fn new(revision: Revision, capacity: usize) -> Self {
        // A watcher more than this many events behind the live stream is cut off (it re-lists).
        let (live, _) = broadcast::channel(capacity.max(16));
        Self { events: VecDeque::with_capacity(capacity), capacity, horizon: revision, live }
    }

    pub(crate) fn push(&mut self, event: Event) {
        let event = Arc::new(event);
        if self.events.len() == self.capacity
            && let Some(old) = self.events.pop_front()
        {
            self.horizon = old.revision;
        }
        self.events.push_back(Arc::clone(&event));
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(event);
    }

    /// Drops the events up to `revision`: resuming from before it is `Compacted` from now on.
    pub(crate) fn compact(&mut self, revision: Revision) {
        while self.events.front().is_some_and(|e| e.revision <= revision) {
            self.events.pop_front();
        }
        self.horizon = self.horizon.max(revision);
    }

    /// Turns `objects` (everything under `prefix` now) back into what was there at `revision`,
    /// undoing the later events newest first.
    pub(crate) fn undo(
        &self,
        prefix: &str,
        revision: Revision,
        objects: &mut std::collections::BTreeMap<String, super::Object>,
    ) -> Result<(), StoreError> {
        if revision < self.horizon {
            return Err(StoreError::Compacted { requested: revision, oldest: self.horizon });
        }
        for event in self.events.iter().rev().take_while(|e| e.revision > revision) {
            let key = &event.object.key;
            if !key.starts_with(prefix) {
                continue;
            }
            match &event.previous {
                Some(before) => objects.insert(key.clone(), before.clone()),
                None => objects.remove(key),
            };
        }
        Ok(())
    }

    /// A stream of events under `prefix` after `after`; `after == 0` means "from now on". Must be
    /// called under the same lock that serialises `push`, so nothing falls between backlog and live.
    pub(crate) fn watch(
        &self,
        prefix: &str,
        after: Revision,
        current: Revision,
    ) -> Result<WatchStream, StoreError> {
        let after = if after == 0 { current } else { after };
        // A revision this store never reached (a client of a store restored to an older one):
        // resuming from it would skip events, so the client re-lists.
        if after < self.horizon || after > current {
            return Err(StoreError::Compacted { requested: after, oldest: self.horizon });
        }
        let backlog = self
            .events
            .iter()
            .filter(|e| e.revision > after && e.object.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(WatchStream { backlog, live: self.live.subscribe(), prefix: prefix.to_owned(), last: after })
    }
}

/// Events of one watch, in revision order.
#[derive(Debug)]
pub struct WatchStream {
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    last: Revision,
}

impl WatchStream {
    /// The next event; `Compacted` if this watcher fell too far behind the live stream or the
    /// history was started over (it must re-list, as after a 410).
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, StoreError>> {
        if let Some(event) = self.backlog.pop_front() {
            self.last = event.revision;
            return Some(Ok(event));
        }
        loop {
            match self.live.recv().await {
                Ok(event) if event.revision > self.last && event.object.key.starts_with(&self.prefix) => {
                    self.last = event.revision;
                    return Some(Ok(event));
                }
                // Events elsewhere still move this watch's revision on, so a bookmark (and a resume
                // from it) does not fall behind on a quiet prefix.
                Ok(event) => {
                    self.last = self.last.max(event.revision);
                    continue;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some(Err(StoreError::Compacted { requested: self.last, oldest: self.last + 1 }));
                }
                // The history was started over (a backend that lost track of events re-listed):
                // this watcher must re-list too, as after a 410.
                Err(broadcast::error::RecvError::Closed) => {
                    return Some(Err(StoreError::Compacted { requested: self.last, oldest: self.last + 1 }));
                }
            }
        }
    }

    /// The revision of the last event delivered (or the start point).
    pub fn last_revision(&self) -> Revision {
        self.last
    }
}
