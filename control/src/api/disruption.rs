//! PodDisruptionBudgets at eviction (`pods/<name>/eviction`, what `kubectl drain` asks): an
//! eviction that would leave fewer healthy pods than the budget demands is refused with 429, and
//! an admitted one is recorded in the budget's `status.disruptedPods` with a compare-and-swap, so
//! two evictions racing for the last allowed disruption cannot both win — the eviction API's
//! own rules. Between evictions the disruption loop (`controllers/disruption.rs`) keeps the
//! budgets' status current with the same counting.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{core::v1::Pod, policy::v1::PodDisruptionBudget},
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde_json::json;

use super::{ApiServer, handlers, objects::FieldValidation, path::Target, registry, status::ApiError};
use crate::{controllers::workloads::selector, store::Store};

/// How long an admitted eviction keeps its pod out of the healthy count (Kubernetes' 2 minutes):
/// long enough for the pod to be gone.
pub(crate) const DISRUPTED_FOR_S: i64 = 120;

pub(crate) fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub(crate) fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Not finished: running, starting, or on its way out.
pub(crate) fn unfinished(pod: &Pod) -> bool {
    !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The number of healthy pods `budget` demands of `expected`.
pub(crate) fn desired_healthy(budget: &PodDisruptionBudget, expected: i32) -> i32 {
    let spec = budget.spec.clone().unwrap_or_default();
    let scaled = |v: &IntOrString, round_up: bool| match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: f64 = s.trim_end_matches('%').parse().unwrap_or(100.0);
            let exact = f64::from(expected) * percent / 100.0;
            (if round_up { exact.ceil() } else { exact.floor() }) as i32
        }
    };
    match (&spec.min_available, &spec.max_unavailable) {
        (Some(min), _) => scaled(min, true),
        (None, Some(max)) => (expected - scaled(max, true)).max(0),
        (None, None) => expected,
    }
}

fn too_many_requests(budget: &str, desired: i32, healthy: i32) -> ApiError {
    let mut error =
        ApiError::too_many_requests("Cannot evict pod as it would violate the pod's disruption budget.");
    error.details = Some(json!({"causes": [{"reason": "DisruptionBudget",
        "message": format!("The disruption budget {budget} needs {desired} healthy pods and has {healthy} currently")}]}));
    error
}

/// Whether `budget` covers `pod`: policy/v1's selector semantics, where an empty selector is
/// every pod of the namespace and a missing one none.
pub(crate) fn covers(budget: &PodDisruptionBudget, pod: &Pod) -> bool {
    match budget.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        None => false,
        Some(sel) => selector::is_empty(sel) || selector::matches(sel, pod.metadata.labels.as_ref()),
    }
}

/// What preemption weighs of `budget` (the scheduler has no disruption controller to read
/// `status.disruptionsAllowed` from): how many more of its pods may be disrupted now — healthy
/// minus desired, negative when already short — and the unfinished pods among `pods` (its
/// namespace's) it covers.
pub(crate) fn allowance<'a>(
    budget: &PodDisruptionBudget,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> (i32, Vec<&'a Pod>) {
    let covered: Vec<&Pod> = pods.into_iter().filter(|p| covers(budget, p) && unfinished(p)).collect();
    let expected = i32::try_from(covered.len()).unwrap_or(i32::MAX);
    let healthy = covered.iter().filter(|p| ready(p) && !terminating(p)).count();
    let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    (healthy - desired_healthy(budget, expected), covered)
}

/// Admits the eviction of `pod` in `namespace` against the budgets covering it (recording it in
/// the budget), or refuses it. A pod not yet running or already finished is never held back.
pub async fn admit<S: Store + Clone>(
    server: &ApiServer<S>,
    namespace: &str,
    pod: &Pod,
) -> Result<(), ApiError> {
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending" | "Succeeded" | "Failed")
    ) {
        return Ok(());
    }
    let budgets_resource = registry::builtin("poddisruptionbudgets", "policy")?;
    let pods_resource = registry::builtin("pods", "")?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    for _ in 0..5 {
        let (stored, _) = server.store.list(&format!("{}{namespace}/", budgets_resource.prefix()));
        let covering: Vec<(PodDisruptionBudget, u64)> = stored
            .iter()
            .filter_map(|o| {
                Some((serde_json::from_slice::<PodDisruptionBudget>(&o.value).ok()?, o.mod_revision))
            })
            .filter(|(b, _)| covers(b, pod))
            .collect();
        let (budget, revision) = match covering.as_slice() {
            [] => return Ok(()),
            [one] => one.clone(),
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        };
        let budget_name = budget.metadata.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let mut disrupted: BTreeMap<String, String> = budget
            .status
            .as_ref()
            .and_then(|s| s.disrupted_pods.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, at)| now.as_second() - at.0.as_second() < DISRUPTED_FOR_S)
            .map(|(pod, at)| (pod, at.0.to_string()))
            .collect();
        let (pods, _) = server.store.list(&format!("{}{namespace}/", pods_resource.prefix()));
        let matching: Vec<Pod> = pods
            .iter()
            .filter_map(|o| serde_json::from_slice::<Pod>(&o.value).ok())
            .filter(|p| covers(&budget, p))
            .filter(unfinished)
            .collect();
        // Terminating pods still count as expected (their replacements may not exist yet): an
        // eviction must not shrink the total that maxUnavailable and percentages apply to.
        let expected = i32::try_from(matching.len()).unwrap_or(i32::MAX);
        let healthy_pods = |p: &&Pod| {
            ready(p) && !terminating(p) && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or(""))
        };
        let healthy = i32::try_from(matching.iter().filter(healthy_pods).count()).unwrap_or(0);
        let desired = desired_healthy(&budget, expected);
        let counts = ready(pod) && !disrupted.contains_key(&name);
        let after = if counts { healthy - 1 } else { healthy };
        if after < desired {
            return Err(too_many_requests(&budget_name, desired, healthy));
        }
        if counts {
            disrupted.insert(name.clone(), now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        let status = json!({
            "disruptedPods": disrupted,
            "disruptionsAllowed": (after - desired).max(0),
            "currentHealthy": after,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "observedGeneration": budget.metadata.generation.unwrap_or(0),
        });
        let target = Target {
            resource: budgets_resource,
            namespace: Some(namespace.to_owned()),
            name: Some(budget_name.clone()),
            subresource: Some("status".into()),
        };
        let written = handlers::write_existing(
            server,
            &target,
            &budget_name,
            Some(revision),
            FieldValidation::Ignore,
            None,
            |old| {
                let mut new = old.clone();
                new["status"] = status.clone();
                Ok(new)
            },
        )
        .await;
        match written {
            Ok(_) => return Ok(()),
            // Another eviction (or edit) got there first: decide again on what it wrote.
            Err(e) if e.code == axum::http::StatusCode::CONFLICT => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::too_many_requests("too many concurrent evictions for this disruption budget; try again"))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn budget(min: Option<Value>, max: Option<Value>) -> PodDisruptionBudget {
        serde_json::from_value(
            json!({"metadata": {"name": "b"}, "spec": {"minAvailable": min, "maxUnavailable": max}}),
        )
        .expect("budget")
    }

    #[test]
    fn budgets_count_as_kubernetes_does() {
        assert_eq!(desired_healthy(&budget(Some(json!(2)), None), 3), 2);
        assert_eq!(desired_healthy(&budget(Some(json!("50%")), None), 3), 2, "rounded up");
        assert_eq!(desired_healthy(&budget(None, Some(json!(1))), 3), 2);
        assert_eq!(desired_healthy(&budget(None, Some(json!("34%"))), 3), 1, "unavailable rounded up");
        assert_eq!(desired_healthy(&budget(None, Some(json!(5))), 3), 0);
    }
}
