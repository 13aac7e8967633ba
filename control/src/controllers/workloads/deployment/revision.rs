//! Revisions and the annotations a Deployment keeps on its ReplicaSets.
//!
//! kubectl works client-side from these: `rollout history` lists ReplicaSets by their revision
//! annotation and shows their change-cause, `rollout undo` copies the template of the ReplicaSet
//! with the wanted revision back into the Deployment. The controller then finds that ReplicaSet
//! as the new one and gives it the next revision, remembering the old number in
//! `revision-history`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{
    super::{
        DEPRECATED_ROLLBACK_TO_ANNOTATION, DESIRED_REPLICAS_ANNOTATION, LAST_APPLIED_ANNOTATION,
        MAX_REPLICAS_ANNOTATION, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION,
    },
    Settings, controller_ref,
};

/// Upstream's cap on the length of the `revision-history` annotation.
const REVISION_HISTORY_MAX_CHARS: usize = 2000;

/// Deployment annotations that describe the Deployment or are the controller's own bookkeeping;
/// every other one (notably `kubernetes.io/change-cause`) is copied to the new ReplicaSet.
const NOT_COPIED: [&str; 6] = [
    LAST_APPLIED_ANNOTATION,
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    DEPRECATED_ROLLBACK_TO_ANNOTATION,
];

/// The revision annotation of `rs`: `Some(0)` when missing, `None` when not a number.
pub(super) fn revision(rs: &ReplicaSet) -> Option<i64> {
    match rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION_ANNOTATION)) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// The highest revision among `rss`, skipping unparseable ones.
pub(super) fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter().filter_map(revision).max().unwrap_or(0).max(0)
}

/// Brings the annotations of the Deployment's new ReplicaSet up to date: copies the
/// Deployment's annotations, raises its revision to `new_revision` if lower (a rollback, which
/// also records the old number in `revision-history`), and, for one about to be created
/// (`!exists`), sets the desired/max replicas annotations. Returns whether anything changed.
pub(super) fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    settings: &Settings,
) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&k.as_str()) && annotations.get(k) != Some(v) {
            annotations.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    let old = annotations.get(REVISION_ANNOTATION).cloned();
    let old_number = match old.as_deref() {
        None => Some(0),
        Some(v) => v.parse::<i64>().ok(),
    };
    // A revision that is not a number is left alone, as upstream does.
    if old_number.is_some_and(|n| n < new_revision) {
        annotations.insert(REVISION_ANNOTATION.to_owned(), new_revision.to_string());
        changed = true;
        // It had a revision already: a rollback made it current again.
        if let Some(old) = old {
            record_old_revision(annotations, &old);
        }
    }
    if !exists {
        changed |= set_replicas_annotations(rs, settings);
    }
    changed
}

/// Appends `old` to the `revision-history` list, dropping the oldest entries to stay within
/// [`REVISION_HISTORY_MAX_CHARS`].
fn record_old_revision(annotations: &mut BTreeMap<String, String>, old: &str) {
    let mut history: Vec<String> = match annotations.get(REVISION_HISTORY_ANNOTATION) {
        Some(h) if !h.is_empty() => h.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    history.push(old.to_owned());
    while history.len() > 1 && history.join(",").len() > REVISION_HISTORY_MAX_CHARS {
        history.remove(0);
    }
    annotations.insert(REVISION_HISTORY_ANNOTATION.to_owned(), history.join(","));
}

/// Records the Deployment's current `replicas` and `replicas + maxSurge` on `rs`; returns
/// whether either changed.
pub(super) fn set_replicas_annotations(rs: &mut ReplicaSet, settings: &Settings) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let desired = settings.replicas.to_string();
    let max = settings.replicas.saturating_add(settings.max_surge).to_string();
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS_ANNOTATION, desired), (MAX_REPLICAS_ANNOTATION, max)] {
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_owned(), value);
            changed = true;
        }
    }
    changed
}

/// The new ReplicaSet for `d`'s template, named `<deployment>-<hash>`, before annotations and
/// replicas are set: the template, its labels and the selector all gain
/// `pod-template-hash: <hash>`, so it selects only its own pods, and it is controlled by `d`.
pub(super) fn new_replica_set(d: &Deployment, hash: &str, settings: &Settings) -> ReplicaSet {
    let spec = d.spec.clone();
    let mut template = spec.template;
    let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    template_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let mut selector = spec.selector;
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default())),
            namespace: d.metadata.namespace.clone(),
            labels: template_meta.labels.clone(),
            owner_references: Some(vec![controller_ref(d)]),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: Some(settings.min_ready_seconds),
            selector,
            template: Some(template),
        },
        status: None,
    }
}
