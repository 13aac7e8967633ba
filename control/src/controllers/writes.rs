//! Typed writes for the loops: cached k8s-openapi objects in, the API server's internal write
//! paths (see `api/internal.rs`) out.

use futures::future::join_all;
use k8s_openapi::{
    Metadata, Resource,
    api::core::v1::{ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use serde::Serialize;
use serde_json::Value;

use super::{Ctx, events};
use crate::{
    api::{ApiError, deletion::Options, registry},
    store::{Object, Store},
};

pub fn to_json<T: Serialize>(object: &T) -> Result<Value, ApiError> {
    serde_json::to_value(object).map_err(|e| ApiError::internal(e.to_string()))
}

/// Creates `object` as `manager`.
pub async fn create<S: Store + Clone, T: Serialize>(
    ctx: &Ctx<S>,
    object: &T,
    manager: &str,
) -> Result<Object, ApiError> {
    ctx.server.create_as(to_json(object)?, manager).await
}

/// Replaces `object` (its `status` only, with `status`) if it is unchanged since it was read.
pub async fn replace<S: Store + Clone, T: Serialize>(
    ctx: &Ctx<S>,
    object: &T,
    status: bool,
    manager: &str,
) -> Result<Object, ApiError> {
    ctx.server.replace_as(to_json(object)?, status, manager).await
}

/// Deletes the `T` named by `meta` as a DELETE with `options` would; gone already is fine.
pub async fn delete<S: Store + Clone, T: Resource>(
    ctx: &Ctx<S>,
    meta: &ObjectMeta,
    options: &Options,
) -> Result<(), ApiError> {
    let r = registry::by_kind(T::API_VERSION, T::KIND)
        .ok_or_else(|| ApiError::internal(format!("{} is not served", T::KIND)))?;
    let key = r.key(meta.namespace.as_deref(), meta.name.as_deref().unwrap_or_default());
    match ctx.server.delete_key(&key, options).await {
        Err(e) if e.code != 404 => Err(e),
        _ => Ok(()),
    }
}

/// Makes `reference` the controller of `object` (adoption), unless it changed meanwhile.
pub async fn adopt<S, T>(
    ctx: &Ctx<S>,
    object: &T,
    reference: OwnerReference,
    manager: &str,
) -> Result<(), ApiError>
where
    S: Store + Clone,
    T: Serialize + Clone + Metadata<Ty = ObjectMeta>,
{
    let mut updated = object.clone();
    updated.metadata_mut().owner_references.get_or_insert_with(Vec::new).push(reference);
    replace(ctx, &updated, false, manager).await.map(drop)
}

/// Drops the owner reference to `owner` from `object` (release), unless it changed meanwhile —
/// or `owner` is no longer there to release it: see [`still_claiming`].
pub async fn release<S, T, O>(ctx: &Ctx<S>, object: &T, owner: &O, manager: &str) -> Result<(), ApiError>
where
    S: Store + Clone,
    T: Serialize + Clone + Metadata<Ty = ObjectMeta>,
    O: Resource + Metadata<Ty = ObjectMeta>,
{
    if !still_claiming(ctx, owner)? {
        return Ok(());
    }
    let owner_uid = owner.metadata().uid.as_deref().unwrap_or_default();
    let mut updated = object.clone();
    let meta = updated.metadata_mut();
    if let Some(refs) = meta.owner_references.as_mut() {
        refs.retain(|r| r.uid != owner_uid);
        if refs.is_empty() {
            meta.owner_references = None;
        }
    }
    replace(ctx, &updated, false, manager).await.map(drop)
}

/// Whether the controller `owner` (as cached) is still stored, as itself (same uid) and not being
/// deleted: read from the store, which the cache may lag behind. A controller deleted while its
/// loop reconciled from the older cache must not release what it owned: upstream releases nothing
/// for a controller being deleted, and a dependent released after its owner is gone has no owner
/// left for the garbage collector to notice, so a Background delete would leak it.
pub fn still_claiming<S, O>(ctx: &Ctx<S>, owner: &O) -> Result<bool, ApiError>
where
    S: Store + Clone,
    O: Resource + Metadata<Ty = ObjectMeta>,
{
    let r = registry::by_kind(O::API_VERSION, O::KIND)
        .ok_or_else(|| ApiError::internal(format!("{} is not served", O::KIND)))?;
    let meta = owner.metadata();
    let key = r.key(meta.namespace.as_deref(), meta.name.as_deref().unwrap_or_default());
    let Some(stored) = ctx.server.store.get(&key) else { return Ok(false) };
    let stored = crate::api::decode_object(&stored)?;
    Ok(meta.uid.is_some()
        && stored.pointer("/metadata/uid").and_then(Value::as_str) == meta.uid.as_deref()
        && stored.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null))
}

/// Creates `pods` for the controller `owner` in slow-start batches of 1, 2, 4, …, stopping at the
/// first failure (so a broken template costs one request, as upstream's controllers do), with a
/// `SuccessfulCreate` or `FailedCreate` event on the owner for each.
pub async fn create_pods<S: Store + Clone>(
    ctx: &Ctx<S>,
    owner: &ObjectReference,
    pods: &[Pod],
    manager: &str,
) -> Result<(), ApiError> {
    let (mut left, mut batch) = (pods, 1usize);
    while !left.is_empty() {
        let (now, later) = left.split_at(batch.min(left.len()));
        let created = join_all(now.iter().map(|p| create(ctx, p, manager))).await;
        for result in created {
            match result {
                Ok(stored) => {
                    let name = stored.key.rsplit('/').next().unwrap_or_default();
                    let message = format!("Created pod: {name}");
                    events::record(ctx, owner, events::NORMAL, "SuccessfulCreate", &message, manager).await;
                }
                Err(e) => {
                    let message = format!("Error creating: {}", e.message);
                    events::record(ctx, owner, events::WARNING, "FailedCreate", &message, manager).await;
                    return Err(e);
                }
            }
        }
        left = later;
        batch = batch.saturating_mul(2);
    }
    Ok(())
}
