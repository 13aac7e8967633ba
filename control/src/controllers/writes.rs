//! Typed writes for the loops: cached k8s-openapi objects in, the API server's internal write
//! paths (see `api/internal.rs`) out.

use k8s_openapi::{
    Metadata, Resource,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use serde::Serialize;
use serde_json::Value;

use super::Ctx;
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

/// Drops the owner reference to `owner_uid` from `object` (release), unless it changed meanwhile.
pub async fn release<S, T>(ctx: &Ctx<S>, object: &T, owner_uid: &str, manager: &str) -> Result<(), ApiError>
where
    S: Store + Clone,
    T: Serialize + Clone + Metadata<Ty = ObjectMeta>,
{
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
