//! Node lifecycle (kube-controller-manager's node lifecycle controller and taint-based eviction,
//! plus pod GC's orphan rule):
//! - a node whose agent has not renewed its Lease (nor posted status) for the grace period gets
//!   every condition set to Unknown ("Kubelet stopped posting node status."), the
//!   `node.kubernetes.io/unreachable` NoSchedule and NoExecute taints, and its pods marked not
//!   Ready (so Services stop sending them traffic);
//! - a node whose agent reports Ready=False gets the `not-ready` taints instead; a node that is
//!   Ready again loses both;
//! - pods on a node with a NoExecute taint they do not tolerate are deleted: at once for a
//!   foreign taint, after their `tolerationSeconds` if they tolerate it for a while, and after
//!   [`Config::default_toleration`](super::Config) for the unreachable/not-ready taints when they
//!   carry no toleration of their own; their owners replace them elsewhere;
//! - pods bound to a node that does not exist are deleted (without grace: no agent will finish
//!   it) once the node has been missing for the grace period (pod GC's quarantine: a node
//!   object may be on its way).

use std::{collections::HashMap, sync::Arc};

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Node, NodeCondition, Pod, Taint},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change},
    clock, events,
    queue::Queue,
    writes,
};
use crate::{
    api::{ApiError, deletion::Options},
    store::Store,
};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const COMPONENT: &str = "node-controller";
const NODE_LEASES: &str = "kube-node-lease";

#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Nodes pods are bound to that do not exist, since when this loop has known it.
    missing_since: HashMap<String, Timestamp>,
}

fn ready_status(node: &Node) -> Option<&str> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.as_str())
}

/// When the node's agent was last heard of: its Lease's renewal, its Ready heartbeat, or else
/// the node's creation.
fn last_heard(node: &Node, cache: &Cache) -> Option<Timestamp> {
    let name = node.metadata.name.as_deref()?;
    let lease = cache
        .leases
        .get(&super::cache::key(Some(NODE_LEASES), name))
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let heartbeat = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    lease.into_iter().chain(heartbeat).max().or(created)
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

/// `taints` with `key`'s NoSchedule and NoExecute taints present (added at `now`) or absent.
fn set_taints(taints: &mut Vec<Taint>, key: &str, present: bool, now: Timestamp) {
    let had = taints.iter().any(|t| t.key == key);
    if present && !had {
        for effect in ["NoSchedule", "NoExecute"] {
            taints.push(Taint {
                key: key.to_owned(),
                effect: effect.to_owned(),
                time_added: (effect == "NoExecute").then_some(Time(now)),
                value: None,
            });
        }
    } else if !present {
        taints.retain(|t| t.key != key);
    }
}

/// When a pod on a node with `taint` must go: `None` if it tolerates it for good.
fn eviction_time(pod: &Pod, taint: &Taint, default_toleration: std::time::Duration) -> Option<Timestamp> {
    let added = taint.time_added.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let matching = tolerations.iter().filter(|t| {
        let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key);
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        };
        key_ok && effect_ok && value_ok
    });
    let mut found = false;
    let mut shortest: Option<i64> = None;
    for t in matching {
        found = true;
        match t.toleration_seconds {
            None => return None,
            Some(s) => shortest = Some(shortest.map_or(s, |m| m.min(s))),
        }
    }
    let ours = taint.key == UNREACHABLE || taint.key == NOT_READY;
    let wait = match shortest {
        Some(s) => std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0)),
        None if !found && ours => default_toleration,
        None => std::time::Duration::ZERO,
    };
    Some(clock::after(added, wait))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl Lifecycle {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        let node = match change {
            Change::Node(d) => d.latest().and_then(|n| n.metadata.name.clone()),
            Change::Lease(d) => d
                .latest()
                .filter(|l| l.metadata.namespace.as_deref() == Some(NODE_LEASES))
                .and_then(|l| l.metadata.name.clone()),
            // A pod newly bound to a tainted or missing node.
            Change::Pod(d) => {
                let node_of =
                    |p: &Option<Arc<Pod>>| p.as_ref().and_then(|p| p.spec.as_ref()?.node_name.clone());
                let node = node_of(&d.new).filter(|n| Some(n) != node_of(&d.old).as_ref());
                node.filter(|n| {
                    cache
                        .nodes
                        .get(n)
                        .is_none_or(|node| has_taint(node, UNREACHABLE) || has_taint(node, NOT_READY))
                })
            }
            _ => None,
        };
        if let Some(node) = node {
            queue.push((Loop::Nodes, node));
        }
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        name: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let now = ctx.clock.now();
        let Some(node) = cache.nodes.get(name) else {
            if cache.pods_on(name).next().is_none() {
                self.missing_since.remove(name);
                return Ok(None);
            }
            let since = *self.missing_since.entry(name.to_owned()).or_insert(now);
            let due = clock::after(since, ctx.config.node_monitor_grace);
            if now < due {
                return Ok(Some(due));
            }
            for pod in cache.pods_on(name) {
                delete_pod(ctx, pod, Some(0)).await?;
            }
            self.missing_since.remove(name);
            return Ok(None);
        };
        self.missing_since.remove(name);
        let heard = last_heard(node, cache).unwrap_or(now);
        let stale_at = clock::after(heard, ctx.config.node_monitor_grace);
        let stale = now >= stale_at;
        if stale && ready_status(node) != Some("Unknown") {
            mark_unknown(ctx, node, now).await?;
            return Ok(Some(now));
        }
        let ready = ready_status(node);
        let (unreachable, not_ready) = (stale || ready == Some("Unknown"), ready == Some("False"));
        if unreachable != has_taint(node, UNREACHABLE) || not_ready != has_taint(node, NOT_READY) {
            let mut updated = (**node).clone();
            let spec = updated.spec.get_or_insert_with(Default::default);
            let mut taints = spec.taints.take().unwrap_or_default();
            set_taints(&mut taints, UNREACHABLE, unreachable, now);
            set_taints(&mut taints, NOT_READY, not_ready, now);
            spec.taints = (!taints.is_empty()).then_some(taints);
            writes::replace(ctx, &updated, false, COMPONENT).await?;
            if unreachable {
                let message = format!("Node {name} status is now: NodeNotReady");
                events::record(
                    ctx,
                    &events::reference(&**node),
                    events::NORMAL,
                    "NodeNotReady",
                    &message,
                    COMPONENT,
                )
                .await;
            }
            // The taints' times come back with the write; evictions are timed from them.
            return Ok(Some(now));
        }
        if unreachable {
            for pod in cache.pods_on(name).filter(|p| pod_ready(p)) {
                mark_pod_not_ready(ctx, pod, now).await?;
            }
        }
        let mut next = (!stale).then_some(stale_at);
        let no_execute: Vec<&Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        for pod in cache.pods_on(name).filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let due =
                no_execute.iter().filter_map(|t| eviction_time(pod, t, ctx.config.default_toleration)).min();
            match due {
                Some(at) if at <= now => {
                    let who = super::cache::key_of(&pod.metadata);
                    events::record(
                        ctx,
                        &events::reference(&**pod),
                        events::NORMAL,
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {who}"),
                        COMPONENT,
                    )
                    .await;
                    delete_pod(ctx, pod, None).await?;
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        Ok(next)
    }
}

/// Sets every condition of `node` to Unknown: its agent stopped reporting.
async fn mark_unknown<S: Store + Clone>(ctx: &Ctx<S>, node: &Node, now: Timestamp) -> Result<(), ApiError> {
    let mut updated = node.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        conditions.push(NodeCondition { type_: "Ready".into(), ..NodeCondition::default() });
    }
    for c in conditions.iter_mut() {
        if c.status != "Unknown" {
            c.last_transition_time = Some(Time(now));
        }
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.message = Some("Kubelet stopped posting node status.".into());
    }
    tracing::info!(node = ?node.metadata.name, "node stopped reporting; marking it Unknown");
    writes::replace(ctx, &updated, true, COMPONENT).await.map(drop)
}

async fn mark_pod_not_ready<S: Store + Clone>(
    ctx: &Ctx<S>,
    pod: &Pod,
    now: Timestamp,
) -> Result<(), ApiError> {
    let mut updated = pod.clone();
    for c in updated.status.iter_mut().flat_map(|s| s.conditions.iter_mut().flatten()) {
        if c.type_ == "Ready" && c.status != "False" {
            c.status = "False".into();
            c.reason = Some("NodeNotReady".into());
            c.last_transition_time = Some(Time(now));
        }
    }
    match writes::replace(ctx, &updated, true, COMPONENT).await {
        Err(e) if e.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

async fn delete_pod<S: Store + Clone>(ctx: &Ctx<S>, pod: &Pod, grace: Option<i64>) -> Result<(), ApiError> {
    let options = Options { grace_period_seconds: grace, ..Options::default() };
    writes::delete::<S, Pod>(ctx, &pod.metadata, &options).await
}
