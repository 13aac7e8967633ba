//! Daemon pods as upstream makes them: the template plus the tolerations every daemon pod
//! carries, the `controller-revision-hash` label, and a required node affinity naming its one
//! node (so the scheduler binds it there, and nowhere else); and how a pod's node is read back.

use std::cmp::Ordering;

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{
            Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
            Toleration,
        },
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::controller_ref;

/// Label naming the template a daemon pod was made from (apps/v1's
/// `DefaultDaemonSetUniqueLabelKey`): pods without the current value are old.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The only field a node selector's `matchFields` may name.
const NODE_NAME_FIELD: &str = "metadata.name";

/// `(key, effect)` of the tolerations (operator `Exists`, no time limit) every daemon pod gets:
/// a node's problems must not evict or keep out the pods that may be what fixes them (the
/// network plugin on a not-ready node), and cordoning must not stop node agents.
const DAEMON_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

/// Added for `hostNetwork` pods only: they do not need the pod network to be up.
const HOST_NETWORK_TOLERATION: (&str, &str) = ("node.kubernetes.io/network-unavailable", "NoSchedule");

/// Upstream's `Toleration.MatchToleration`: same key, operator, value and effect (the time
/// limit aside).
fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    let s = |v: &Option<String>| v.as_deref().unwrap_or_default().to_owned();
    s(&a.key) == s(&b.key)
        && s(&a.operator) == s(&b.operator)
        && s(&a.value) == s(&b.value)
        && s(&a.effect) == s(&b.effect)
}

/// Adds `toleration`, replacing a matching one (so a user's `not-ready` toleration with a time
/// limit becomes unlimited, as upstream's `AddOrUpdateTolerationInPodSpec` does).
fn add_or_update(spec: &mut PodSpec, toleration: Toleration) {
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    match list.iter_mut().find(|t| same_toleration(t, &toleration)) {
        Some(existing) => *existing = toleration,
        None => list.push(toleration),
    }
}

/// Gives `spec` the tolerations of every daemon pod (upstream's `AddOrUpdateDaemonPodTolerations`).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network.unwrap_or(false);
    let extra = host_network.then_some(HOST_NETWORK_TOLERATION);
    for (key, effect) in DAEMON_TOLERATIONS.iter().copied().chain(extra) {
        add_or_update(
            spec,
            Toleration {
                key: Some(key.to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some(effect.to_owned()),
                ..Toleration::default()
            },
        );
    }
}

/// Makes the required node affinity select exactly `node` by name, replacing any required
/// terms the template had (they were already checked against the node; preferred terms stay),
/// as upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`.
fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: NODE_NAME_FIELD.to_owned(),
            operator: "In".to_owned(),
            values: Some(vec![node.to_owned()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution =
        Some(NodeSelector { node_selector_terms: vec![term] });
}

/// The pod `ds` creates for `node`: the template's labels (plus
/// [`CONTROLLER_REVISION_HASH_LABEL`]` = hash`), annotations, finalizers and spec (plus the
/// daemon tolerations and the pin to `node`), `generateName` `<ds-name>-`, and the DaemonSet
/// as controller. `spec.nodeName` stays unset: the scheduler binds it.
pub fn pod_for_node(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds.spec.template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.to_owned(), hash.to_owned());
    let mut spec = template.spec.unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    pin_to_node(&mut spec, node);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or_default())),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The node a daemon pod is for: its `spec.nodeName`, or before it is bound the one name in its
/// required `matchFields: metadata.name In [...]` (upstream's `GetTargetNodeName`). `None` for a
/// pod that names no single node; the controller leaves such a pod alone.
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let affinity = spec.affinity.as_ref()?.node_affinity.as_ref()?;
    let terms = &affinity.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    let fields = terms.iter().flat_map(|t| t.match_fields.iter().flatten());
    let first = fields.into_iter().find(|r| r.key == NODE_NAME_FIELD && r.operator == "In")?;
    match first.values.as_deref() {
        Some([node]) => Some(node.as_str()),
        _ => None,
    }
}

/// Upstream's `podByCreationTimestampAndPhase`: bound pods first, then the oldest, then by name.
/// A pod without a creation time counts as oldest (Go's zero time).
pub fn oldest_first(a: &Pod, b: &Pod) -> Ordering {
    let bound = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    bound(b)
        .cmp(&bound(a))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}
