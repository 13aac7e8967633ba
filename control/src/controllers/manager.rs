//! The loop runner: one store watch into the cache, changes fanned out to the loops, queued keys
//! reconciled one at a time with the cache caught up first.

use std::time::Duration;

use futures::FutureExt as _;
use jiff::Timestamp;

use super::{
    Ctx, Loop, Work, batch,
    cache::Cache,
    clock, daemonsets, deployments, disruption, gc, loadbalancer, namespace, nodeipam, nodes,
    queue::{Backoff, Queue},
    quota, replicasets, scheduling, serviceaccounts, slices,
};
use crate::{
    api::ApiError,
    store::{Event, EventKind, Object, Revision, Store, StoreError, WatchStream},
};

/// Back-off of a key whose reconcile failed.
const BACKOFF: Backoff = Backoff { base: Duration::from_millis(10), max: Duration::from_secs(30) };
/// [`Manager::settle`] gives up after this many reconciles (a loop that never settles is a bug).
const SETTLE_LIMIT: usize = 1_000_000;
/// Where every object lives in the store.
const PREFIX: &str = "/registry/";

/// The loops with state of their own (rebuilt on re-list).
#[derive(Debug)]
struct Loops {
    graph: gc::Graph,
    nodes: nodes::Lifecycle,
    lb: loadbalancer::Assigner,
    scheduler: scheduling::Scheduler,
    slices: slices::Slices,
    replicasets: replicasets::ReplicaSets,
    deployments: deployments::Deployments,
    daemonsets: daemonsets::DaemonSets,
    ipam: nodeipam::NodeIpam,
    jobs: batch::Jobs,
    cronjobs: batch::CronJobs,
    disruption: disruption::Disruption,
    accounts: serviceaccounts::ServiceAccounts,
    quotas: quota::Quotas,
}

impl Loops {
    fn new() -> Self {
        Self {
            graph: gc::Graph::default(),
            nodes: nodes::Lifecycle::default(),
            lb: loadbalancer::Assigner,
            scheduler: scheduling::Scheduler::default(),
            slices: slices::Slices,
            replicasets: replicasets::ReplicaSets,
            deployments: deployments::Deployments,
            daemonsets: daemonsets::DaemonSets::default(),
            ipam: nodeipam::NodeIpam,
            jobs: batch::Jobs::default(),
            cronjobs: batch::CronJobs,
            disruption: disruption::Disruption,
            accounts: serviceaccounts::ServiceAccounts,
            quotas: quota::Quotas::default(),
        }
    }
}

#[derive(Debug)]
pub struct Manager<S: Store + Clone> {
    ctx: Ctx<S>,
    cache: Cache,
    loops: Loops,
    queue: Queue<Work>,
    watch: WatchStream,
}

impl<S: Store + Clone> Manager<S> {
    /// Lists everything, queues every object for every loop that cares, and starts watching.
    pub fn new(ctx: Ctx<S>) -> Result<Self, StoreError> {
        let (objects, revision) = ctx.server.store.list(PREFIX);
        // Everything, not only PREFIX: catching up to the store's revision needs every write,
        // the API server's own bookkeeping keys (address claims) included.
        let watch = ctx.server.store.watch("/", revision)?;
        let mut manager =
            Self { ctx, cache: Cache::default(), loops: Loops::new(), queue: Queue::default(), watch };
        for o in &objects {
            manager.observe(&o.key, Some(o));
        }
        manager.cache.revision = revision;
        Ok(manager)
    }

    /// Starts over from a fresh list (after falling behind the watch).
    fn relist(&mut self) -> Result<(), StoreError> {
        let fresh = Self::new(self.ctx.clone())?;
        let queue = std::mem::take(&mut self.queue);
        *self = fresh;
        // Keys already waiting (with their back-offs) still wait.
        let mut queue = queue;
        while let Some(work) = queue.pop(Timestamp::MAX) {
            self.queue.push(work);
        }
        Ok(())
    }

    /// What the loops read (for tests and diagnostics).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn observe(&mut self, key: &str, stored: Option<&Object>) {
        match stored {
            Some(o) => self.loops.graph.put(key, &o.value, &mut self.queue),
            None => self.loops.graph.remove(key, &mut self.queue),
        }
        self.loops.accounts.observe(key, &mut self.queue);
        self.loops.quotas.observe(key, stored.is_some(), &mut self.queue);
        let Some(change) = self.cache.apply(key, stored) else { return };
        let (cache, queue) = (&self.cache, &mut self.queue);
        self.loops.nodes.observe(&change, cache, queue);
        self.loops.lb.observe(&change, cache, queue);
        self.loops.scheduler.observe(&change, cache, queue);
        self.loops.slices.observe(&change, cache, queue);
        self.loops.replicasets.observe(&change, cache, queue);
        self.loops.deployments.observe(&change, cache, queue);
        self.loops.ipam.observe(&change, cache, queue);
        self.loops.daemonsets.observe(&change, cache, queue);
        self.loops.jobs.observe(&change, cache, queue);
        self.loops.cronjobs.observe(&change, cache, queue);
        self.loops.disruption.observe(&change, cache, queue);
    }

    fn on_event(&mut self, event: &Event) {
        if event.object.key.starts_with(PREFIX) {
            let stored = (event.kind == EventKind::Put).then_some(&event.object);
            self.observe(&event.object.key, stored);
        }
        self.cache.revision = event.revision;
    }

    /// Applies watch events until the cache reflects `revision`.
    async fn catch_up(&mut self, revision: Revision) -> Result<(), StoreError> {
        while self.cache.revision < revision {
            match self.watch.next().await {
                Some(Ok(event)) => self.on_event(&event),
                Some(Err(e)) => return Err(e),
                None => return Err(StoreError::Closed),
            }
        }
        // Whatever else has arrived meanwhile, without waiting.
        while let Some(next) = self.watch.next().now_or_never() {
            match next {
                Some(Ok(event)) => self.on_event(&event),
                Some(Err(e)) => return Err(e),
                None => return Err(StoreError::Closed),
            }
        }
        Ok(())
    }

    /// Catches up with the store, re-listing if the watch fell too far behind.
    async fn refresh(&mut self) -> Result<(), StoreError> {
        match self.catch_up(self.ctx.server.store.revision()).await {
            Err(StoreError::Compacted { .. }) => {
                tracing::info!("controllers fell behind the store; re-listing");
                self.relist()
            }
            other => other,
        }
    }

    async fn reconcile(&mut self, work: Work) {
        let (cache, ctx) = (&self.cache, &self.ctx);
        let key = work.1.as_str();
        let result: Result<Option<Timestamp>, ApiError> = match work.0 {
            Loop::Gc => examine(ctx, &self.loops.graph, key).await.map(|()| None),
            Loop::Nodes => self.loops.nodes.reconcile(ctx, cache, key).await,
            Loop::LoadBalancer => self.loops.lb.reconcile(ctx, cache, key).await,
            Loop::Scheduler => self.loops.scheduler.reconcile(ctx, cache, key).await,
            Loop::EndpointSlice => self.loops.slices.reconcile(ctx, cache, key).await,
            Loop::ReplicaSet => self.loops.replicasets.reconcile(ctx, cache, key).await,
            Loop::Deployment => self.loops.deployments.reconcile(ctx, cache, key).await,
            Loop::NodeIpam => self.loops.ipam.reconcile(ctx, cache, key).await,
            Loop::DaemonSet => self.loops.daemonsets.reconcile(ctx, cache, key).await,
            Loop::Job => self.loops.jobs.reconcile(ctx, cache, key).await,
            Loop::JobPod => self.loops.jobs.release(ctx, cache, key).await,
            Loop::CronJob => self.loops.cronjobs.reconcile(ctx, cache, key).await,
            Loop::Disruption => self.loops.disruption.reconcile(ctx, cache, key).await,
            Loop::ServiceAccounts => self.loops.accounts.reconcile(ctx, key).await,
            Loop::Quota => self.loops.quotas.reconcile(ctx, key).await,
        };
        let now = self.ctx.clock.now();
        match result {
            Ok(next) => {
                self.queue.succeeded(&work);
                if let Some(at) = next {
                    self.queue.push_at(work, at);
                }
            }
            Err(e) => {
                // A conflict means the cache was behind another writer: the retry sees its write.
                if e.reason != "Conflict" {
                    tracing::warn!(?work, "controller: {}", e.message);
                }
                self.queue.failed(work, now, BACKOFF);
            }
        }
    }

    /// Reconciles every key due now, catching up with the store before each, until nothing is
    /// due; returns how many keys were reconciled. Tests drive the loops with it (and a
    /// [`super::clock::ManualClock`]).
    pub async fn settle(&mut self) -> Result<usize, StoreError> {
        let mut done = 0;
        loop {
            self.refresh().await?;
            let Some(work) = self.queue.pop(self.ctx.clock.now()) else { return Ok(done) };
            self.reconcile(work).await;
            done += 1;
            if done >= SETTLE_LIMIT {
                return Err(StoreError::Backend(
                    format!("the loops did not settle after {done} reconciles").into(),
                ));
            }
        }
    }

    /// Runs the loops until the store shuts down.
    pub async fn run(mut self) -> Result<(), StoreError> {
        loop {
            self.refresh().await?;
            let now = self.ctx.clock.now();
            if let Some(work) = self.queue.pop(now) {
                self.reconcile(work).await;
                continue;
            }
            let wait = self.queue.next_due().map_or(Duration::from_secs(3600), |at| clock::until(now, at));
            tokio::select! {
                event = self.watch.next() => match event {
                    Some(Ok(event)) => self.on_event(&event),
                    Some(Err(StoreError::Compacted { .. })) => self.relist()?,
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The garbage collector's and the namespace loop's look at one stored object.
async fn examine<S: Store + Clone>(ctx: &Ctx<S>, graph: &gc::Graph, key: &str) -> Result<(), ApiError> {
    let server = &*ctx.server;
    let Some(current) = server.store.get(key) else { return Ok(()) };
    let object = crate::api::decode_object(&current)?;
    gc::examine(server, graph, key, &object).await?;
    namespace::examine(server, key, &object).await
}
