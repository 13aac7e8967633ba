//! Control loops that run inside skiff-control, next to the store: each observes every change
//! through one store watch, keeps an index of what it needs, and acts through the same code paths
//! as API requests (so deletions honour finalizers and pod grace periods). Level-triggered: on
//! start (and after falling behind the watch) they re-list and re-examine everything.

mod gc;
mod namespace;

use std::{
    collections::{BTreeSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use crate::{
    api::ApiServer,
    store::{EventKind, Store, StoreError},
};

/// Keys waiting to be examined, each once.
#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<String>,
    queued: BTreeSet<String>,
}

impl Queue {
    fn push(&mut self, key: String) {
        if self.queued.insert(key.clone()) {
            self.order.push_back(key);
        }
    }

    fn pop(&mut self) -> Option<String> {
        let key = self.order.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }
}

/// How long a key whose handling failed waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the garbage collector and the namespace controller on the current tokio runtime.
pub fn spawn<S: Store + Clone>(server: Arc<ApiServer<S>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match run(&server).await {
                Ok(()) => return,
                Err(e) => tracing::info!("controllers re-listing: {e}"),
            }
        }
    })
}

/// One list-then-watch pass; returns `Ok` when the store shuts down, `Err` when it must re-list.
async fn run<S: Store + Clone>(server: &ApiServer<S>) -> Result<(), StoreError> {
    let (objects, revision) = server.store.list("/registry/");
    let mut graph = gc::Graph::default();
    let mut queue = Queue::default();
    for o in &objects {
        graph.put(&o.key, &o.value, &mut queue);
    }
    let mut watch = server.store.watch("/registry/", revision)?;
    let mut retry: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(RETRY);
    loop {
        while let Some(key) = queue.pop() {
            if let Err(e) = examine(server, &graph, &key).await {
                tracing::warn!(%key, "controller: {}", e.message);
                retry.push(key);
            }
        }
        tokio::select! {
            event = watch.next() => match event {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(event)) => match event.kind {
                    EventKind::Put => graph.put(&event.object.key, &event.object.value, &mut queue),
                    EventKind::Deleted => graph.remove(&event.object.key, &mut queue),
                },
            },
            _ = tick.tick(), if !retry.is_empty() => {
                for key in retry.drain(..) {
                    queue.push(key);
                }
            }
        }
    }
}

/// Everything the loops do for one object.
async fn examine<S: Store + Clone>(
    server: &ApiServer<S>,
    graph: &gc::Graph,
    key: &str,
) -> Result<(), crate::api::ApiError> {
    let Some(current) = server.store.get(key) else { return Ok(()) };
    let object: serde_json::Value = serde_json::from_slice(&current.value)
        .map_err(|e| crate::api::ApiError::internal(format!("{key}: {e}")))?;
    gc::examine(server, graph, key, &object).await?;
    namespace::examine(server, key, &object).await
}
