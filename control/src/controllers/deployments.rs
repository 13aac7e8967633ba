//! The Deployment loop: each Deployment rolls its pods from ReplicaSet to ReplicaSet as
//! [`super::workloads::deployment::plan`] decides (RollingUpdate or Recreate, revision history,
//! progress deadline); this loop claims the ReplicaSets, carries out the plan's writes in order,
//! records the revision annotation and the status, and looks again when the plan says or when
//! the Deployment, one of its ReplicaSets or one of their pods changes.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
};

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change, key, key_of},
    events,
    queue::Queue,
    workloads::{
        REVISION_ANNOTATION,
        deployment::{self, Action},
        owner, selector,
    },
    writes,
};
use crate::{
    api::{ApiError, deletion::Options},
    store::Store,
};

const COMPONENT: &str = "deployment-controller";

#[derive(Debug, Default)]
pub struct Deployments;

/// The Deployments that may care about `rs`: its controller, or (an orphan) those selecting it.
fn interested(rs: &ReplicaSet, cache: &Cache) -> Vec<String> {
    let ns = rs.metadata.namespace.as_deref();
    match owner::controller_of(&rs.metadata) {
        Some(r) if r.kind == "Deployment" => vec![key(ns, &r.name)],
        Some(_) => Vec::new(),
        None => cache
            .deployments
            .in_namespace(ns.unwrap_or_default())
            .filter(|d| selector::matches(&d.spec.selector, rs.metadata.labels.as_ref()))
            .map(|d| key_of(&d.metadata))
            .collect(),
    }
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

impl Deployments {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        let mut push = |k: String| queue.push((Loop::Deployment, k));
        match change {
            Change::Deployment(delta) => {
                if let Some(d) = delta.latest() {
                    push(key_of(&d.metadata));
                }
            }
            Change::ReplicaSet(delta) => {
                for rs in [&delta.old, &delta.new].into_iter().flatten() {
                    interested(rs, cache).into_iter().for_each(&mut push);
                }
            }
            // A pod's readiness moves its Deployment's status (through the pod's ReplicaSet).
            Change::Pod(delta) => {
                let Some(pod) = delta.latest() else { return };
                let ns = pod.metadata.namespace.as_deref();
                if let Some(r) = owner::controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")
                    && let Some(rs) = cache.replicasets.get(&key(ns, &r.name))
                    && let Some(d) = owner::controller_of(&rs.metadata).filter(|d| d.kind == "Deployment")
                {
                    push(key(ns, &d.name));
                }
            }
            _ => {}
        }
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        d_key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let Some(d) = cache.deployments.get(d_key) else { return Ok(None) };
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let candidates: Vec<&ReplicaSet> = cache.replicasets.claimable(ns, uid).map(|rs| &**rs).collect();
        let claimed = deployment::claim_replica_sets(d, &candidates);
        let rs_named = |name: &str| cache.replicasets.get(&key(Some(ns), name));
        for rs in claimed.adopt.iter().filter_map(|n| rs_named(n)) {
            writes::adopt(ctx, &**rs, deployment::controller_ref(d), COMPONENT).await?;
        }
        for rs in claimed.release.iter().filter_map(|n| rs_named(n)) {
            writes::release(ctx, &**rs, &**d, COMPONENT).await?;
        }
        if !claimed.adopt.is_empty() || !claimed.release.is_empty() {
            // Plan on the cache as it is after the ownership writes.
            return Ok(Some(ctx.clock.now()));
        }
        let owned: Vec<&Arc<ReplicaSet>> = claimed.owned.iter().filter_map(|n| rs_named(n)).collect();
        let pods: Vec<&Pod> = owned
            .iter()
            .flat_map(|rs| cache.pods.controlled_by(rs.metadata.uid.as_deref().unwrap_or_default()))
            .map(|p| &**p)
            .collect();
        let rss: Vec<&ReplicaSet> = owned.iter().map(|rs| &***rs).collect();
        let plan = deployment::plan(d, &rss, &pods, ctx.clock.now());
        for action in &plan.actions {
            if let Some(retry) = act(ctx, d, action, &rss).await? {
                return Ok(Some(retry));
            }
        }
        let mut current: Deployment = (**d).clone();
        if let Some(revision) = &plan.revision {
            current
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(REVISION_ANNOTATION.into(), revision.clone());
            let stored = writes::replace(ctx, &current, false, COMPONENT).await?;
            current.metadata.resource_version = Some(stored.mod_revision.to_string());
        }
        if plan.status_changed(d) {
            current.status = Some(plan.status);
            writes::replace(ctx, &current, true, COMPONENT).await?;
        }
        Ok(plan.next_check)
    }
}

/// Carries out one ReplicaSet write; `Some(at)`: stop and plan again at `at`.
async fn act<S: Store + Clone>(
    ctx: &Ctx<S>,
    d: &Deployment,
    action: &Action,
    rss: &[&ReplicaSet],
) -> Result<Option<Timestamp>, ApiError> {
    let record = |reason: &'static str, message: String| async move {
        events::record(ctx, &events::reference(d), events::NORMAL, reason, &message, COMPONENT).await;
    };
    match action {
        Action::CreateReplicaSet(rs) => match writes::create(ctx, &**rs, COMPONENT).await {
            Ok(_) => {
                record(
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {} to {}", action.name(), replicas(rs)),
                )
                .await
            }
            Err(e) if e.reason == "AlreadyExists" => {
                let Some(existing) = ctx.server.store.get(
                    &crate::api::registry::builtin("replicasets", "apps")?
                        .key(rs.metadata.namespace.as_deref(), action.name()),
                ) else {
                    return Err(e);
                };
                let existing: ReplicaSet =
                    serde_json::from_slice(&existing.value).map_err(|e| ApiError::internal(e.to_string()))?;
                if let Some(count) = deployment::collision_count_after_conflict(d, &existing) {
                    let mut updated = d.clone();
                    updated.status.get_or_insert_with(Default::default).collision_count = Some(count);
                    writes::replace(ctx, &updated, true, COMPONENT).await?;
                }
                return Ok(Some(ctx.clock.now()));
            }
            Err(e) => return Err(e),
        },
        Action::UpdateReplicaSet(rs) => {
            writes::replace(ctx, &**rs, false, COMPONENT).await?;
            let before = rss.iter().find(|r| r.metadata.name == rs.metadata.name).map_or(0, |r| replicas(r));
            let after = replicas(rs);
            if before != after {
                let way = if after > before { "up" } else { "down" };
                record(
                    "ScalingReplicaSet",
                    format!("Scaled {way} replica set {} from {before} to {after}", action.name()),
                )
                .await;
            }
        }
        Action::DeleteReplicaSet { name, uid } => {
            let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: d.metadata.namespace.clone(),
                ..Default::default()
            };
            let options = Options { precondition_uid: uid.clone(), ..Options::default() };
            writes::delete::<S, ReplicaSet>(ctx, &meta, &options).await?;
        }
    }
    Ok(None)
}
