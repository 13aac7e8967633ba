//! Events (core/v1) about the objects the loops act on, as `kubectl describe` and `kubectl get
//! events` show them. Repeats of one event (same object, reason and message) bump its `count`
//! and `lastTimestamp` instead of piling up. Best effort: a failure to record is logged, never
//! fails the loop.

use k8s_openapi::{
    Metadata, Resource, api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde_json::{Value, json};

use super::{Ctx, clock};
use crate::{api::registry, store::Store};

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// A reference to `object` for an event's `involvedObject`.
pub fn reference<T: Resource + Metadata<Ty = ObjectMeta>>(object: &T) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(T::API_VERSION.to_owned()),
        kind: Some(T::KIND.to_owned()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Records that `component` saw `reason` happen to `involved`.
pub async fn record<S: Store + Clone>(
    ctx: &Ctx<S>,
    involved: &ObjectReference,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    if let Err(e) = try_record(ctx, involved, kind, reason, message, component).await {
        tracing::debug!(reason, "event not recorded: {}", e.message);
    }
}

async fn try_record<S: Store + Clone>(
    ctx: &Ctx<S>,
    involved: &ObjectReference,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) -> Result<(), crate::api::ApiError> {
    let namespace = involved.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let object = involved.name.clone().unwrap_or_default();
    let uid = involved.uid.as_deref().unwrap_or_default();
    let name = format!("{object}.{:016x}", fnv(&[uid, reason, message]));
    let now = clock::format(ctx.clock.now());
    let key = registry::builtin("events", "")?.key(Some(&namespace), &name);
    if let Some(existing) = ctx.server.store.get(&key) {
        let mut event: Value = crate::api::decode_object(&existing)?;
        let count = event["count"].as_i64().unwrap_or(1) + 1;
        event["count"] = json!(count);
        event["lastTimestamp"] = json!(now);
        event["metadata"]["resourceVersion"] = json!(existing.mod_revision.to_string());
        ctx.server.replace_as(event, false, component).await?;
        return Ok(());
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    ctx.server.create_as(event, component).await.map(drop)
}
