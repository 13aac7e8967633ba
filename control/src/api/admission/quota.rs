//! ResourceQuota: what objects use of the resources a quota limits (object counts, pods' cpu and
//! memory requests and limits, Service node ports and load balancers), the admission check on
//! creates, and the recount the quota controller writes to `status.used`.
//!
//! Race-free charging: an admitted create first adds its usage to each quota's `status.used` by
//! compare-and-swap (a racing create re-reads and re-checks), and only then is the object
//! written; so however many creates race, at most the limit get in. A write that fails after
//! its charge gives it back ([`settle`]); whatever that misses, the quota controller's recount
//! (on changes, and periodically) corrects. Within this API server, the
//! recount and charge-then-write hold one lock, so a recount never misses a charged object that
//! is still being written. (Across API servers a recount may still run in that window, as it may
//! upstream; it only lasts until the next recount.)

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::amounts::{self, Amounts, ONE};
use crate::{
    api::{
        ApiServer,
        handlers::decode,
        registry::{self, RESOURCES, Resource},
        status::ApiError,
    },
    store::{Store, StoreError},
};

/// The pod resources whose quotas demand that every container states them (upstream's
/// backward-compatibility rule).
const COMPUTE: [&str; 6] =
    ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

/// The object-count resource name of `r` (`count/pods`, `count/deployments.apps`).
pub fn count_name(r: &Resource) -> String {
    if r.group.is_empty() { format!("count/{}", r.plural) } else { format!("count/{}.{}", r.plural, r.group) }
}

/// Whether a quota's resource `name` is about objects of `r`.
pub fn covers(r: &Resource, name: &str) -> bool {
    let legacy = match r.kind {
        "Pod" => name == "pods" || COMPUTE.contains(&name),
        "Service" => matches!(name, "services" | "services.nodeports" | "services.loadbalancers"),
        "ConfigMap" => name == "configmaps",
        "Secret" => name == "secrets",
        "ResourceQuota" => name == "resourcequotas",
        _ => false,
    };
    legacy || name == count_name(r)
}

/// The resources whose objects a quota's resource `name` is about.
fn resources_for(name: &str) -> Vec<&'static Resource> {
    RESOURCES.iter().filter(|r| r.namespaced && covers(r, name)).collect()
}

/// Whether a pod still uses its quota: not finished, not on its way out.
fn pod_counts(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.pointer("/metadata/deletionTimestamp").is_none()
}

/// What `object` (of `r`) uses of every resource quotas track, in milli-units.
pub fn usage_of(r: &Resource, object: &Value) -> Amounts {
    let mut usage = Amounts::new();
    if r.kind == "Pod" && !pod_counts(object) {
        return usage;
    }
    usage.insert(count_name(r), ONE);
    let mut set = |name: &str, amount: i128| {
        usage.insert(name.to_owned(), amount);
    };
    match r.kind {
        "Pod" => {
            set("pods", ONE);
            for (field, resource, both) in [
                ("requests", "cpu", true),
                ("requests", "memory", true),
                ("limits", "cpu", false),
                ("limits", "memory", false),
            ] {
                if let Some(amount) = amounts::pod_total(object, field).get(resource) {
                    set(&format!("{field}.{resource}"), *amount);
                    // `cpu` and `memory` are the older names of the requests.
                    if both {
                        set(resource, *amount);
                    }
                }
            }
        }
        "Service" => {
            set("services", ONE);
            let kind = object.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            if matches!(kind, "NodePort" | "LoadBalancer") {
                let ports = object.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
                set("services.nodeports", ONE * i128::try_from(ports).unwrap_or(0));
            }
            if kind == "LoadBalancer" {
                set("services.loadbalancers", ONE);
            }
        }
        "ConfigMap" => set("configmaps", ONE),
        "Secret" => set("secrets", ONE),
        "ResourceQuota" => set("resourcequotas", ONE),
        _ => {}
    }
    usage
}

/// One term of a quota's scope: a `spec.scopeSelector` match expression, or a `spec.scopes`
/// entry (an `Exists` term, as upstream reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    name: String,
    operator: String,
    values: Vec<String>,
}

/// The scopes this server evaluates (upstream's but CrossNamespacePodAffinity).
const SCOPES: [&str; 5] = ["BestEffort", "NotBestEffort", "NotTerminating", "PriorityClass", "Terminating"];

/// The terms a quota is limited to: `spec.scopes` and `spec.scopeSelector.matchExpressions`.
fn scopes(quota: &Value) -> Vec<Scope> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let listed = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| Scope { name: text(s), operator: "Exists".to_owned(), values: Vec::new() });
    let selected = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Scope {
            name: text(&e["scopeName"]),
            operator: text(&e["operator"]),
            values: e["values"].as_array().into_iter().flatten().map(text).collect(),
        });
    listed.chain(selected).collect()
}

/// Whether `object` (of `r`) is in every one of `scopes`. Scopes are about pods: a scoped quota
/// leaves other kinds alone. (Validation refuses terms this server does not evaluate; any that
/// got stored anyway match nothing.)
fn in_scopes(scopes: &[Scope], r: &Resource, object: &Value) -> bool {
    if scopes.is_empty() {
        return true;
    }
    if r.kind != "Pod" {
        return false;
    }
    let terminating = object.pointer("/spec/activeDeadlineSeconds").is_some_and(|d| !d.is_null());
    let best_effort = amounts::containers(object, "containers")
        .chain(amounts::containers(object, "initContainers"))
        .all(|c| {
            ["requests", "limits"]
                .iter()
                .all(|f| amounts::list(c.pointer(&format!("/resources/{f}"))).is_empty())
        });
    // Priority admission has set the default class's name on pods that named none.
    let class = object.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or_default();
    scopes.iter().all(|scope| match (scope.name.as_str(), scope.operator.as_str()) {
        ("Terminating", "Exists") => terminating,
        ("NotTerminating", "Exists") => !terminating,
        ("BestEffort", "Exists") => best_effort,
        ("NotBestEffort", "Exists") => !best_effort,
        ("PriorityClass", "In") => scope.values.iter().any(|v| v == class),
        ("PriorityClass", "NotIn") => !scope.values.iter().any(|v| v == class),
        ("PriorityClass", "Exists") => !class.is_empty(),
        ("PriorityClass", "DoesNotExist") => class.is_empty(),
        _ => false,
    })
}

/// The 422 causes of a quota's scopes: each a scope this server evaluates, with an operator it
/// supports for that scope (upstream's rules and wording).
fn invalid_scopes(quota: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let supported = SCOPES.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    let unsupported = |field: String, name: &str| {
        (field, format!("Unsupported value: \"{name}\": supported values: {supported}"))
    };
    for (i, s) in quota.pointer("/spec/scopes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = s.as_str().unwrap_or_default();
        if !SCOPES.contains(&name) {
            causes.push(unsupported(format!("spec.scopes[{i}]"), name));
        }
    }
    let field = "spec.scopeSelector.matchExpressions";
    for e in
        quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).into_iter().flatten()
    {
        let name = e["scopeName"].as_str().unwrap_or_default();
        let operator = e["operator"].as_str().unwrap_or_default();
        let values = e["values"].as_array().map_or(0, Vec::len);
        if !SCOPES.contains(&name) {
            causes.push(unsupported(format!("{field}.scopeName"), name));
        } else if name != "PriorityClass" && operator != "Exists" {
            causes.push((
                format!("{field}.operator"),
                format!(
                    "Invalid value: \"{operator}\": must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"
                ),
            ));
        }
        match operator {
            "In" | "NotIn" if values == 0 => causes.push((
                format!("{field}.values"),
                "Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector"
                    .to_owned(),
            )),
            "Exists" | "DoesNotExist" if values != 0 => causes.push((
                format!("{field}.values"),
                format!(
                    "Invalid value: {}: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
                    e["values"]
                ),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push((
                format!("{field}.operator"),
                format!("Invalid value: \"{other}\": not a valid selector operator"),
            )),
        }
    }
    causes
}

/// The compute resources of `required` some container of `pod` does not state, as upstream's
/// "must specify" list: `limits.cpu for: a,b; requests.memory for: a`.
fn missing_compute(pod: &Value, required: &BTreeSet<String>) -> Option<String> {
    let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in amounts::containers(pod, "containers").chain(amounts::containers(pod, "initContainers")) {
        let mut stated = BTreeSet::new();
        for field in ["requests", "limits"] {
            for resource in amounts::list(c.pointer(&format!("/resources/{field}"))).keys() {
                stated.insert(format!("{field}.{resource}"));
                if field == "requests" {
                    stated.insert(resource.clone());
                }
            }
        }
        for name in required.iter().filter(|n| !stated.contains(*n)) {
            let container = c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            missing.entry(name.clone()).or_default().insert(container);
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(name, containers)| {
            format!("{name} for: {}", containers.iter().cloned().collect::<Vec<_>>().join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// `name=amount` pairs, sorted, comma-separated (upstream's `prettyPrint`).
fn pretty(amounts: &Amounts, names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n}={}", amounts::display(n, amounts.get(n).copied().unwrap_or(0))))
        .collect::<Vec<_>>()
        .join(",")
}

/// One quota's decision on a create of `object` (of `r`) that uses `delta`: the quota's new
/// `status.used` when the create fits (`None` when the quota is not about this object), else
/// the refusal as upstream words it (without the `… is forbidden: ` prefix).
pub fn check(
    quota: &Value,
    r: &Resource,
    object: &Value,
    delta: &Amounts,
) -> Result<Option<Amounts>, String> {
    let name = quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let hard = amounts::list(quota.pointer("/status/hard"));
    let spec_hard = amounts::list(quota.pointer("/spec/hard"));
    // The resources of this quota the object is about (what the controller has not seen yet
    // counts too: it cannot be checked, so it is refused below).
    let interesting: BTreeSet<String> =
        hard.keys().chain(spec_hard.keys()).filter(|n| covers(r, n)).cloned().collect();
    if interesting.is_empty() || !in_scopes(&scopes(quota), r, object) {
        return Ok(None);
    }
    if r.kind == "Pod" {
        let required: BTreeSet<String> =
            interesting.iter().filter(|n| COMPUTE.contains(&n.as_str())).cloned().collect();
        if let Some(missing) = missing_compute(object, &required) {
            return Err(format!("failed quota: {name}: {missing}"));
        }
    }
    let used = amounts::list(quota.pointer("/status/used"));
    let unknown: Vec<String> =
        interesting.iter().filter(|n| !hard.contains_key(*n) || !used.contains_key(*n)).cloned().collect();
    if !unknown.is_empty() {
        return Err(format!("status unknown for quota: {name}, resources: {}", unknown.join(",")));
    }
    let mut new_used = used.clone();
    for n in &interesting {
        *new_used.entry(n.clone()).or_default() += delta.get(n).copied().unwrap_or(0);
    }
    let exceeded: Vec<String> = interesting
        .iter()
        .filter(|n| delta.get(*n).copied().unwrap_or(0) > 0 && new_used[*n] > hard[*n])
        .cloned()
        .collect();
    if !exceeded.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(delta, &exceeded),
            pretty(&used, &exceeded),
            pretty(&hard, &exceeded)
        ));
    }
    Ok(Some(amounts::clamp(new_used)))
}

fn quotas_resource() -> Result<&'static Resource, ApiError> {
    registry::builtin("resourcequotas", "")
}

impl<S: Store> ApiServer<S> {
    /// Held while quota usage is charged and the charged object written, and while the quota
    /// controller recounts (see the module comment).
    pub fn quota_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.quota_lock
    }
}

/// A charge made: the quota lock, held until the charged object is written, and what each quota
/// was charged, given back if that write fails.
#[derive(Debug)]
pub struct Charge<'a> {
    _lock: tokio::sync::MutexGuard<'a, ()>,
    charged: Vec<(String, Amounts)>,
}

/// The charge of an admitted write, if some quota was charged.
pub type Charged<'a> = Option<Charge<'a>>;

/// Ends a charge with the `result` of the write it was for: a failed write (a name taken, an
/// address held, a lost race) gives the charge back, so the quota does not stay high until a
/// recount. (A write that failed only in appearance is counted again by the recount its event
/// queues.)
pub async fn settle<S: Store, T>(
    server: &ApiServer<S>,
    charged: Charged<'_>,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    if result.is_err()
        && let Some(charge) = charged
    {
        for (key, delta) in &charge.charged {
            refund(server, key, delta).await;
        }
    }
    result
}

/// ResourceQuota admission of a create of `object` (of `r`, named `name`) in `namespace`: each
/// quota about it is checked and charged by compare-and-swap. On success, the returned guard
/// (when some quota was charged) must be held until the object is written.
pub async fn charge<'a, S: Store>(
    server: &'a ApiServer<S>,
    r: &Resource,
    namespace: &str,
    name: &str,
    object: &Value,
) -> Result<Charged<'a>, ApiError> {
    charge_delta(server, r, namespace, name, object, usage_at_create(r, object)).await
}

/// What a new object uses: a new Pod counts as active whatever `status` its creator sent (an
/// agent runs it all the same; a later recount reads the status its agent reports).
fn usage_at_create(r: &Resource, object: &Value) -> Amounts {
    if r.kind != "Pod" {
        return usage_of(r, object);
    }
    let mut fresh = object.clone();
    if let Some(o) = fresh.as_object_mut() {
        o.remove("status");
    }
    usage_of(r, &fresh)
}

/// ResourceQuota admission of an update from `old` to `new`: what the update adds (a Service
/// turned NodePort or LoadBalancer) is charged as a create's usage is; only Services are
/// evaluated on update, as upstream (a pod's resources do not change).
pub async fn charge_update<'a, S: Store>(
    server: &'a ApiServer<S>,
    r: &Resource,
    namespace: &str,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<Charged<'a>, ApiError> {
    if r.kind != "Service" {
        return Ok(None);
    }
    let before = usage_of(r, old);
    let mut added = usage_of(r, new);
    for (n, v) in &mut added {
        *v = (*v - before.get(n).copied().unwrap_or(0)).max(0);
    }
    added.retain(|_, v| *v > 0);
    if added.is_empty() {
        return Ok(None);
    }
    charge_delta(server, r, namespace, name, new, added).await
}

async fn charge_delta<'a, S: Store>(
    server: &'a ApiServer<S>,
    r: &Resource,
    namespace: &str,
    name: &str,
    object: &Value,
    delta: Amounts,
) -> Result<Charged<'a>, ApiError> {
    let quotas = quotas_resource()?;
    let prefix = quotas.namespace_prefix(namespace);
    let about = |stored: &[crate::store::Object]| {
        stored.iter().any(|o| {
            decode(o).is_ok_and(|q| {
                ["/spec/hard", "/status/hard"].iter().any(|p| {
                    q.pointer(p).and_then(Value::as_object).is_some_and(|h| h.keys().any(|k| covers(r, k)))
                })
            })
        })
    };
    // Most creates meet no quota about them: no lock, no writes.
    if !about(&server.store.list(&prefix).0) {
        return Ok(None);
    }
    let guard = server.quota_lock().lock().await;
    let forbidden = |why: String| ApiError::forbidden(format!("{} \"{name}\" is forbidden: {why}", r.plural));
    let (stored, _) = server.store.list(&prefix);
    let mut charged: Vec<(String, Amounts)> = Vec::new();
    let mut refusal = None;
    'quotas: for o in &stored {
        for _ in 0..16 {
            let Some(current) = server.store.get(&o.key) else { continue 'quotas };
            let mut quota = decode(&current)?;
            match check(&quota, r, object, &delta) {
                Ok(None) => continue 'quotas,
                // Nothing this quota counts changes (a ClusterIP Service under a load-balancer
                // quota): no write.
                Ok(Some(new_used)) if new_used == amounts::list(quota.pointer("/status/used")) => {
                    continue 'quotas;
                }
                Ok(Some(new_used)) => {
                    quota["status"]["used"] = amounts::to_list(&new_used);
                    let bytes = serde_json::to_vec(&quota).map_err(|e| ApiError::internal(e.to_string()))?;
                    match server.store.update(&o.key, bytes, Some(current.mod_revision)).await {
                        Ok(_) => {
                            charged.push((o.key.clone(), delta.clone()));
                            continue 'quotas;
                        }
                        // Another create (or the controller) wrote it first: check again.
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(StoreError::NotFound { .. }) => continue 'quotas,
                        Err(e) => return Err(ApiError::internal(e.to_string())),
                    }
                }
                Err(why) => {
                    refusal = Some(forbidden(why));
                    break 'quotas;
                }
            }
        }
        refusal = Some(ApiError::conflict_message(format!(
            "Operation cannot be fulfilled on resourcequotas: too many concurrent updates to quota in {namespace}"
        )));
        break;
    }
    if let Some(refusal) = refusal {
        // Give back what earlier quotas were charged for this create.
        for (key, delta) in &charged {
            refund(server, key, delta).await;
        }
        return Err(refusal);
    }
    Ok((!charged.is_empty()).then_some(Charge { _lock: guard, charged }))
}

/// Takes `delta` back off the quota at `key` (a create refused by a later quota, or whose write
/// failed); best effort, the controller's recount corrects whatever this misses.
async fn refund<S: Store>(server: &ApiServer<S>, key: &str, delta: &Amounts) {
    for _ in 0..16 {
        let Some(current) = server.store.get(key) else { return };
        let Ok(mut quota) = decode(&current) else { return };
        let mut used = amounts::list(quota.pointer("/status/used"));
        for (n, v) in delta {
            if let Some(u) = used.get_mut(n) {
                *u = (*u - v).max(0);
            }
        }
        quota["status"]["used"] = amounts::to_list(&used);
        let Ok(bytes) = serde_json::to_vec(&quota) else { return };
        match server.store.update(key, bytes, Some(current.mod_revision)).await {
            Err(StoreError::Conflict { .. }) => continue,
            _ => return,
        }
    }
}

/// What the objects in `namespace` within `scopes` use of each resource in `names` (missing
/// ones are zero).
pub fn namespace_usage<S: Store>(
    server: &ApiServer<S>,
    namespace: &str,
    names: &[String],
    scopes: &[Scope],
) -> Amounts {
    let mut total: Amounts = names.iter().map(|n| (n.clone(), 0)).collect();
    let mut listed: BTreeSet<&str> = BTreeSet::new();
    for r in names.iter().flat_map(|n| resources_for(n)) {
        if !listed.insert(r.plural) {
            continue;
        }
        let (objects, _) = server.store.list(&r.namespace_prefix(namespace));
        for o in objects {
            let Ok(value) = decode(&o) else { continue };
            if !in_scopes(scopes, r, &value) {
                continue;
            }
            for (n, v) in usage_of(r, &value) {
                if let Some(t) = total.get_mut(&n) {
                    *t += v;
                }
            }
        }
    }
    total
}

/// The status the quota controller writes for `quota`, or `None` when it has it already:
/// `hard` as the spec says, `used` recounted.
pub fn recounted_status<S: Store>(server: &ApiServer<S>, quota: &Value) -> Option<Value> {
    let namespace = quota.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let spec_hard = quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
    let names: Vec<String> = spec_hard.as_object().map(|h| h.keys().cloned().collect()).unwrap_or_default();
    // Capped as written: a sum past what a Quantity holds would never read back equal.
    let used = amounts::clamp(namespace_usage(server, namespace, &names, &scopes(quota)));
    let same_hard = quota.pointer("/status/hard") == Some(&spec_hard);
    let same_used = quota.pointer("/status/used").is_some_and(|u| amounts::list(Some(u)) == used)
        && quota.pointer("/status/used").and_then(Value::as_object).map(|u| u.len()) == Some(used.len());
    if same_hard && same_used {
        return None;
    }
    Some(json!({"hard": spec_hard, "used": amounts::to_list(&used)}))
}

/// The 422 causes of a ResourceQuota: every `spec.hard` amount a valid, non-negative quantity,
/// and only scopes this server evaluates.
pub fn invalid_quota(quota: &Value) -> Vec<(String, String)> {
    let mut causes = amounts::invalid_entries("spec.hard", quota.pointer("/spec/hard"));
    causes.extend(invalid_scopes(quota));
    causes
}

/// `kubectl get quota`'s REQUEST and LIMIT cells: `name: used/hard` of the status, the
/// `limits.*` resources in the second.
pub fn table_usage(quota: &Value) -> (String, String) {
    let (hard, used) = (quota.pointer("/status/hard"), quota.pointer("/status/used"));
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for (name, h) in hard.and_then(Value::as_object).into_iter().flatten() {
        let u = used.and_then(|u| u.get(name)).and_then(Value::as_str).unwrap_or("0");
        let cell = format!("{name}: {u}/{}", h.as_str().unwrap_or_default());
        if name.starts_with("limits.") { limit.push(cell) } else { request.push(cell) }
    }
    (request.join(", "), limit.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Resource {
        registry::builtin("pods", "").expect("test value")
    }

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})
    }

    fn pod(requests: Value) -> Value {
        json!({"spec": {"containers": [{"name": "c", "resources": {"requests": requests}}]}})
    }

    #[test]
    fn pod_usage_counts_requests_and_stops_when_the_pod_finishes() {
        let mut p = pod(json!({"cpu": "250m", "memory": "1Gi"}));
        let u = usage_of(pods(), &p);
        assert_eq!(u["pods"], ONE);
        assert_eq!(u["count/pods"], ONE);
        assert_eq!(u["requests.cpu"], 250);
        assert_eq!(u["cpu"], 250);
        assert!(!u.contains_key("limits.cpu"));
        p["status"]["phase"] = json!("Succeeded");
        assert!(usage_of(pods(), &p).is_empty());
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        let u = usage_of(registry::builtin("services", "").expect("test value"), &svc);
        assert_eq!(u["services.nodeports"], 2 * ONE);
        assert!(!u.contains_key("services.loadbalancers"));
        let deploy = registry::builtin("deployments", "apps").expect("test value");
        assert_eq!(usage_of(deploy, &json!({}))["count/deployments.apps"], ONE);
    }

    #[test]
    fn the_last_unit_fits_and_the_next_is_refused_with_upstreams_message() {
        let p = pod(json!({"cpu": "1"}));
        let delta = usage_of(pods(), &p);
        let q = quota(json!({"pods": "2"}), json!({"pods": "1"}));
        let used = check(&q, pods(), &p, &delta).expect("fits").expect("about pods");
        assert_eq!(used["pods"], 2 * ONE);
        let full = quota(json!({"pods": "2"}), json!({"pods": "2"}));
        assert_eq!(
            check(&full, pods(), &p, &delta).expect_err("over"),
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
        let cpu =
            quota(json!({"requests.cpu": "1500m", "pods": "10"}), json!({"requests.cpu": "1", "pods": "1"}));
        assert_eq!(
            check(&cpu, pods(), &p, &delta).expect_err("over cpu"),
            "exceeded quota: q, requested: requests.cpu=1, used: requests.cpu=1, limited: requests.cpu=1500m"
        );
        let cm = registry::builtin("configmaps", "").expect("test value");
        assert_eq!(check(&full, cm, &json!({}), &usage_of(cm, &json!({}))), Ok(None), "not about configmaps");
    }

    #[test]
    fn scoped_quotas_see_only_their_pods() {
        let mut q = quota(json!({"pods": "1"}), json!({"pods": "1"}));
        q["spec"]["scopes"] = json!(["BestEffort"]);
        let plain = json!({"spec": {"containers": [{"name": "c"}]}});
        assert!(check(&q, pods(), &plain, &usage_of(pods(), &plain)).is_err(), "best effort: counted");
        let sized = pod(json!({"cpu": "1"}));
        assert_eq!(check(&q, pods(), &sized, &usage_of(pods(), &sized)), Ok(None), "not best effort");
        q["spec"]["scopes"] = json!(["Terminating"]);
        assert_eq!(check(&q, pods(), &plain, &usage_of(pods(), &plain)), Ok(None));
        let mut deadline = plain.clone();
        deadline["spec"]["activeDeadlineSeconds"] = json!(60);
        assert!(check(&q, pods(), &deadline, &usage_of(pods(), &deadline)).is_err());
        let cm = registry::builtin("configmaps", "").expect("configmaps");
        let counted = quota(json!({"count/configmaps": "0"}), json!({"count/configmaps": "0"}));
        let mut scoped = counted.clone();
        scoped["spec"]["scopes"] = json!(["NotTerminating"]);
        assert!(check(&counted, cm, &json!({}), &usage_of(cm, &json!({}))).is_err());
        assert_eq!(
            check(&scoped, cm, &json!({}), &usage_of(cm, &json!({}))),
            Ok(None),
            "scopes are about pods"
        );
    }

    #[test]
    fn priority_class_scopes_select_pods_by_class_and_unsupported_scopes_are_invalid() {
        let mut q = quota(json!({"pods": "1"}), json!({"pods": "1"}));
        let p = |class: Option<&str>| {
            let mut p = pod(json!({"cpu": "1"}));
            if let Some(c) = class {
                p["spec"]["priorityClassName"] = json!(c);
            }
            p
        };
        let counted = |q: &Value, pod: &Value| check(q, pods(), pod, &usage_of(pods(), pod)) != Ok(None);
        let select = |operator: &str, values: Value| json!({"matchExpressions": [{"scopeName": "PriorityClass", "operator": operator, "values": values}]});
        q["spec"]["scopeSelector"] = select("In", json!(["high"]));
        assert!(counted(&q, &p(Some("high"))));
        assert!(!counted(&q, &p(Some("low"))), "In [high] leaves other classes alone");
        assert!(!counted(&q, &p(None)));
        q["spec"]["scopeSelector"] = select("NotIn", json!(["high"]));
        assert!(!counted(&q, &p(Some("high"))));
        assert!(counted(&q, &p(Some("low"))));
        assert!(counted(&q, &p(None)));
        q["spec"]["scopeSelector"] = select("Exists", json!([]));
        assert!(counted(&q, &p(Some("low"))));
        assert!(!counted(&q, &p(None)));
        q["spec"]["scopeSelector"] = select("DoesNotExist", json!([]));
        assert!(!counted(&q, &p(Some("low"))));
        assert!(counted(&q, &p(None)));
        assert!(invalid_quota(&q).is_empty(), "{:?}", invalid_quota(&q));

        q["spec"]["scopeSelector"] = select("In", json!([]));
        assert_eq!(invalid_quota(&q)[0].0, "spec.scopeSelector.matchExpressions.values");
        q["spec"]["scopeSelector"] = select("Gt", json!(["1"]));
        assert_eq!(
            invalid_quota(&q),
            vec![(
                "spec.scopeSelector.matchExpressions.operator".to_owned(),
                "Invalid value: \"Gt\": not a valid selector operator".to_owned()
            )]
        );
        q["spec"]["scopeSelector"] =
            json!({"matchExpressions": [{"scopeName": "BestEffort", "operator": "DoesNotExist"}]});
        assert_eq!(invalid_quota(&q)[0].0, "spec.scopeSelector.matchExpressions.operator");
        q["spec"]["scopeSelector"] =
            json!({"matchExpressions": [{"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"}]});
        assert_eq!(invalid_quota(&q)[0].0, "spec.scopeSelector.matchExpressions.scopeName");
        q["spec"].as_object_mut().expect("spec").remove("scopeSelector");
        q["spec"]["scopes"] = json!(["Terminating", "Sometimes"]);
        assert_eq!(
            invalid_quota(&q),
            vec![(
                "spec.scopes[1]".to_owned(),
                "Unsupported value: \"Sometimes\": supported values: \"BestEffort\", \"NotBestEffort\", \"NotTerminating\", \"PriorityClass\", \"Terminating\"".to_owned()
            )]
        );
    }

    #[test]
    fn compute_quotas_need_every_container_to_say_and_a_fresh_quota_is_unknown() {
        let p = pod(json!({"cpu": "1"}));
        let q = quota(
            json!({"limits.cpu": "4", "requests.memory": "1Gi"}),
            json!({"limits.cpu": "0", "requests.memory": "0"}),
        );
        assert_eq!(
            check(&q, pods(), &p, &usage_of(pods(), &p)).expect_err("unstated"),
            "failed quota: q: must specify limits.cpu for: c; requests.memory for: c"
        );
        let fresh = json!({"metadata": {"name": "new"}, "spec": {"hard": {"pods": "1"}}});
        assert_eq!(
            check(&fresh, pods(), &p, &usage_of(pods(), &p)).expect_err("unknown"),
            "status unknown for quota: new, resources: pods"
        );
    }
}
