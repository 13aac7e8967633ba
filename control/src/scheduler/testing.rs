//! Test helpers: real k8s-openapi objects built from short JSON.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use super::{node::NodeInfo, pod::Wanted};

/// Merges `patch` into `base`: objects key by key, anything else replaced.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// A Pod from a whole JSON object.
pub(crate) fn pod_from(value: Value) -> Pod {
    serde_json::from_value(value).expect("a valid Pod")
}

/// Pod `default/<name>` (uid `uid-<name>`) with the given spec.
pub(crate) fn pod(name: &str, spec: Value) -> Pod {
    pod_from(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": spec,
    }))
}

/// A container requesting `cpu` and `memory`.
pub(crate) fn container(cpu: &str, memory: &str) -> Value {
    json!({"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": memory}}})
}

/// Node `name` with 4 cpu, 8Gi, 100Gi ephemeral storage and 110 pods allocatable, and `patch`
/// merged over that.
pub(crate) fn node_from(name: &str, patch: Value) -> Node {
    let mut value = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi", "pods": "110"}},
    });
    merge(&mut value, patch);
    serde_json::from_value(value).expect("a valid Node")
}

/// A plain node as [`node_from`] makes it.
pub(crate) fn node(name: &str) -> Node {
    node_from(name, json!({}))
}

/// The scheduler's view of a node with no pods.
pub(crate) fn node_info(node: Node) -> NodeInfo {
    let name = node.metadata.name.clone().expect("named node");
    let mut info = NodeInfo::new(&name);
    info.set_node(node.into());
    info
}

/// What scheduling reads from `pod`.
pub(crate) fn wanted(pod: &Pod) -> Wanted<'_> {
    Wanted::new(pod, pod.spec.as_ref().expect("pod spec"))
}
