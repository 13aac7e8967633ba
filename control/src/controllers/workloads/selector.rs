//! Label selectors as workload controllers read them.
//!
//! An empty selector (no `matchLabels`, no `matchExpressions`) matches *nothing* here. Upstream
//! turns `{}` into "everything", but apps/v1 validation rejects an empty selector on ReplicaSets
//! and Deployments, and a controller that adopted every pod in its namespace would be far worse
//! than one that does nothing. A requirement upstream would reject as invalid (unknown operator,
//! `In`/`NotIn` without values, values on `Exists`) also makes the selector match nothing, for the
//! same reason: failing closed never takes over pods it was not meant to.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Whether `selector` has no terms at all.
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && selector.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Whether an object with `labels` is selected (every term must hold).
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    if is_empty(selector) {
        return false;
    }
    let get = |key: &str| labels.and_then(|l| l.get(key));
    let labels_hold =
        selector.match_labels.iter().flatten().all(|(k, v)| get(k).is_some_and(|have| have == v));
    labels_hold && selector.match_expressions.iter().flatten().all(|r| requirement_holds(r, get(&r.key)))
}

/// One `matchExpressions` term against the value the object has for its key (if any).
fn requirement_holds(r: &LabelSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => !values.is_empty() && value.is_some_and(|v| values.contains(v)),
        // A missing label is "not in" any set, as upstream has it.
        "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.contains(v)),
        "Exists" => values.is_empty() && value.is_some(),
        "DoesNotExist" => values.is_empty() && value.is_none(),
        _ => false,
    }
}

/// Whether every label in `required` is present with the same value in `labels` (an empty
/// `required` holds for anything). Used for `fullyLabeledReplicas`.
pub fn has_all(
    required: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    required.into_iter().flatten().all(|(k, v)| labels.and_then(|l| l.get(k)).is_some_and(|have| have == v))
}
