//! The `scale` subresource (autoscaling/v1 Scale) of workloads with replicas.

use serde_json::{Value, json};

use super::{selector::format_labels, status::ApiError};

/// The Scale view of a workload.
pub fn view(object: &Value) -> Value {
    let meta = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            // `matchLabels` as a label-selector string.
            "selector": format_labels(object.pointer("/spec/selector/matchLabels")),
        },
    })
}

/// The workload with the replicas a Scale asks for.
pub fn apply(object: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas =
        scale.pointer("/spec/replicas").and_then(Value::as_i64).filter(|r| *r >= 0).ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                "",
                vec![("spec.replicas".into(), "Invalid value: must be a non-negative integer".into())],
            )
        })?;
    let mut out = object.clone();
    out["spec"]["replicas"] = json!(replicas);
    Ok(out)
}
