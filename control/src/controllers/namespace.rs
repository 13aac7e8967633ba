//! Namespace lifecycle: a namespace being deleted (phase Terminating, `kubernetes` in
//! `spec.finalizers`) has everything in it deleted; once it is empty the finalizer goes, and with
//! it the namespace. Creating objects in it meanwhile is refused by the API server.

use serde_json::{Value, json};

use crate::{
    api::{ApiError, ApiServer, deletion::Options, registry},
    store::Store,
};

/// The `spec.finalizers` entry this controller owns.
const FINALIZER: &str = "kubernetes";

pub(super) async fn examine<S: Store + Clone>(
    server: &ApiServer<S>,
    key: &str,
    object: &Value,
) -> Result<(), ApiError> {
    let Some((r, None, name)) = registry::by_key(key) else { return Ok(()) };
    let held = object
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|v| v == FINALIZER));
    if r.kind != "Namespace" || object.pointer("/metadata/deletionTimestamp").is_none() || !held {
        return Ok(());
    }
    let mut remaining = 0;
    for resource in registry::RESOURCES.iter().filter(|r| r.namespaced) {
        let (objects, _) = server.store.list(&resource.namespace_prefix(name));
        for o in objects {
            remaining += 1;
            match server.delete_key(&o.key, &Options::default()).await {
                Err(e) if e.code != 404 => return Err(e),
                _ => {}
            }
        }
    }
    // Deletions still running (pod grace periods, finalizers) queue the namespace again as
    // each object goes.
    let empty = remaining == 0
        || registry::RESOURCES
            .iter()
            .filter(|r| r.namespaced)
            .all(|r| server.store.list(&r.namespace_prefix(name)).0.is_empty());
    if empty {
        server
            .edit_metadata(key, |o| {
                let before = o["spec"]["finalizers"].as_array().map_or(0, Vec::len);
                let kept: Vec<Value> = o["spec"]["finalizers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect();
                let changed = kept.len() != before;
                o["spec"]["finalizers"] = json!(kept);
                changed
            })
            .await?;
    }
    Ok(())
}
