//! Writes by the control loops inside this process: the same defaults, validation, admission,
//! allocation and field ownership as a client's request gets, without going through HTTP.

use serde_json::Value;

use super::{
    ApiError, ApiServer, handlers,
    managed::Writer,
    objects::FieldValidation,
    path::Target,
    pods,
    registry::{self, Resource},
};
use crate::store::{Object, Store};

/// How often a create with `generateName` retries after drawing a name that is taken.
const NAME_DRAWS: usize = 8;

fn target(r: &'static Resource, namespace: Option<&str>, subresource: Option<&str>) -> Target {
    Target {
        resource: r,
        namespace: namespace.map(str::to_owned),
        name: None,
        subresource: subresource.map(str::to_owned),
    }
}

fn writer(r: &Resource, manager: &str, subresource: Option<&str>) -> Writer {
    Writer {
        manager: manager.to_owned(),
        api_version: r.api_version(),
        subresource: subresource.map(str::to_owned),
    }
}

/// The resource an object's `apiVersion` and `kind` name.
fn resource_of(object: &Value) -> Result<&'static Resource, ApiError> {
    let field = |f: &str| object.get(f).and_then(Value::as_str).unwrap_or_default();
    registry::by_kind(field("apiVersion"), field("kind")).ok_or_else(|| {
        ApiError::internal(format!("no resource for {} {}", field("apiVersion"), field("kind")))
    })
}

impl<S: Store + Clone> ApiServer<S> {
    /// Creates `object` (which names its `apiVersion`, `kind` and `metadata.namespace`) as the
    /// field manager `manager`. A name drawn for `generateName` that is taken is drawn again.
    pub async fn create_as(&self, object: Value, manager: &str) -> Result<Object, ApiError> {
        let r = resource_of(&object)?;
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
        let generated = object.pointer("/metadata/name").and_then(Value::as_str).is_none_or(str::is_empty);
        let (target, writer) = (target(r, namespace.as_deref(), None), writer(r, manager, None));
        let mut draws = 0;
        loop {
            let created = handlers::create_stored(
                self,
                &target,
                object.clone(),
                FieldValidation::Ignore,
                Some(&writer),
            )
            .await;
            match created {
                Err(e) if generated && e.reason == "AlreadyExists" && draws < NAME_DRAWS => draws += 1,
                other => return other.map(|(stored, _)| stored),
            }
        }
    }

    /// Replaces the object `object` names with it, only if its `metadata.resourceVersion` is still
    /// current (else a 409 Conflict); `status`: write the status subresource (only `status`
    /// changes) instead of the object (everything but `status`).
    pub async fn replace_as(&self, object: Value, status: bool, manager: &str) -> Result<Object, ApiError> {
        let r = resource_of(&object)?;
        let meta = |f: &str| object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str);
        let name = meta("name").ok_or_else(|| ApiError::internal("replace of an object without a name"))?;
        let expected = meta("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .ok_or_else(|| ApiError::internal(format!("replace of {name} without a resourceVersion")))?;
        let sub = status.then_some("status");
        let (target, writer) = (target(r, meta("namespace"), sub), writer(r, manager, sub));
        let name = name.to_owned();
        let (stored, _) = handlers::write_existing(
            self,
            &target,
            &name,
            Some(expected),
            FieldValidation::Ignore,
            Some(&writer),
            |_| Ok(object.clone()),
        )
        .await?;
        Ok(stored)
    }

    /// Binds the pod `namespace/name` to `node` (the `binding` subresource).
    pub async fn bind_pod(&self, namespace: &str, name: &str, node: &str) -> Result<Object, ApiError> {
        let key = registry::builtin("pods", "")?.key(Some(namespace), name);
        pods::bind_key(self, &key, name, node).await
    }
}
