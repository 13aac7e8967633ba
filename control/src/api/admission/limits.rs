//! LimitRanger: a namespace's LimitRanges fill in containers' missing requests and limits
//! (`defaultRequest`, `default`) and refuse pods outside their bounds (`min`, `max`,
//! `maxLimitRequestRatio`, per Container and over the Pod's sum), worded as kube-apiserver's
//! LimitRanger words it. Also the LimitRange object's own defaults, which those rely on.

use serde_json::{Value, json};

use super::amounts::{self, Amounts};
use crate::{
    api::{ApiServer, registry, status::ApiError},
    store::Store,
};

/// A LimitRange's defaults, as the API server stores them: per Container item, `default` falls
/// back to `max`, and `defaultRequest` to `default`, then to `min`.
pub fn default_limit_range(range: &mut Value) {
    let Some(items) = range.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else { return };
    for item in items.iter_mut().filter(|i| i["type"] == "Container") {
        for (from, to) in [("max", "default"), ("default", "defaultRequest"), ("min", "defaultRequest")] {
            let source = item.get(from).and_then(Value::as_object).cloned().unwrap_or_default();
            if !item.get(to).is_some_and(Value::is_object) {
                item[to] = json!({});
            }
            for (k, v) in source {
                if item[to].get(&k).is_none() {
                    item[to][&k] = v;
                }
            }
        }
    }
}

/// The 422 causes of a (defaulted) LimitRange, as the API server's validation words them: valid
/// quantities, `min ≤ defaultRequest ≤ default ≤ max` per resource, ratios of at least 1, and no
/// defaults for a Pod item.
pub fn invalid_range(range: &Value) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    for (i, item) in items(range).enumerate() {
        let at = format!("spec.limits[{i}]");
        let fields = ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"];
        let mut bad = 0;
        for f in fields {
            let found = amounts::invalid_entries(&format!("{at}.{f}"), item.get(f));
            bad += found.len();
            causes.extend(found);
        }
        if bad > 0 {
            continue;
        }
        if item["type"] == "Pod" {
            for f in ["default", "defaultRequest"] {
                if item.get(f).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
                    causes.push((
                        format!("{at}.{f}"),
                        "Invalid value: may not be specified when `type` is 'Pod'".into(),
                    ));
                }
            }
        }
        let get = |f: &str, k: &str| {
            item.get(f).and_then(|m| m.get(k)).map(|v| (v, amounts::parse(v).unwrap_or(0)))
        };
        let shown = |(v, milli): (&Value, i128)| amounts::display_like(v, milli);
        let mut names: Vec<&String> = fields
            .iter()
            .filter_map(|f| item.get(*f).and_then(Value::as_object))
            .flat_map(|m| m.keys())
            .collect();
        names.sort();
        names.dedup();
        for k in names {
            let (min, max, default, request, ratio) = (
                get("min", k),
                get("max", k),
                get("default", k),
                get("defaultRequest", k),
                get("maxLimitRequestRatio", k),
            );
            // (lower, upper, the field the cause is about, whether that field is the lower one,
            // the wording): each must be at most the other.
            let pairs = [
                (min, max, "min", true, "min value {a} is greater than max value {b}"),
                (
                    min,
                    request,
                    "defaultRequest",
                    false,
                    "min value {a} is greater than default request value {b}",
                ),
                (
                    request,
                    max,
                    "defaultRequest",
                    true,
                    "default request value {a} is greater than max value {b}",
                ),
                (
                    request,
                    default,
                    "defaultRequest",
                    true,
                    "default request value {a} is greater than default limit value {b}",
                ),
                (min, default, "default", false, "min value {a} is greater than default value {b}"),
                (default, max, "default", true, "default value {a} is greater than max value {b}"),
            ];
            for (lower, upper, field, field_is_lower, words) in pairs {
                let (Some(a), Some(b)) = (lower, upper) else { continue };
                if a.1 > b.1 {
                    let value = shown(if field_is_lower { a } else { b });
                    let message = words.replace("{a}", &shown(a)).replace("{b}", &shown(b));
                    causes.push((
                        format!("{at}.{field}[{k}]"),
                        format!("Invalid value: \"{value}\": {message}"),
                    ));
                }
            }
            if let Some(r) = ratio
                && r.1 < amounts::ONE
            {
                causes.push((
                    format!("{at}.maxLimitRequestRatio[{k}]"),
                    format!("Invalid value: \"{}\": ratio {} is less than 1", shown(r), shown(r)),
                ));
            }
        }
    }
    causes
}

/// A container's requests default to its limits when it gives limits only (the API server's
/// Pod defaulting, which runs before admission upstream).
pub fn default_requests_from_limits(pod: &mut Value) {
    for list in ["containers", "initContainers"] {
        for c in pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut).into_iter().flatten()
        {
            let Some(limits) = c.pointer("/resources/limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            if !c.pointer("/resources/requests").is_some_and(Value::is_object) {
                c["resources"]["requests"] = json!({});
            }
            for (k, v) in limits {
                if c["resources"]["requests"].get(&k).is_none() {
                    c["resources"]["requests"][&k] = v;
                }
            }
        }
    }
}

/// Fills in each container's missing requests and limits from the ranges' Container defaults,
/// noting what was set in the `kubernetes.io/limit-ranger` annotation, as upstream does.
fn apply_defaults(ranges: &[Value], pod: &mut Value) {
    let mut notes = Vec::new();
    for item in ranges.iter().flat_map(items).filter(|i| i["type"] == "Container") {
        for list in ["containers", "initContainers"] {
            let Some(containers) = pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut)
            else {
                continue;
            };
            for c in containers {
                let cname = c["name"].as_str().unwrap_or_default().to_owned();
                for (from, field) in [("defaultRequest", "requests"), ("default", "limits")] {
                    let mut set = Vec::new();
                    for (k, v) in item.get(from).and_then(Value::as_object).into_iter().flatten() {
                        if !c.pointer(&format!("/resources/{field}")).is_some_and(Value::is_object) {
                            c["resources"][field] = json!({});
                        }
                        if c["resources"][field].get(k).is_none() {
                            c["resources"][field][k] = v.clone();
                            set.push(k.clone());
                        }
                    }
                    if !set.is_empty() {
                        set.sort();
                        let what = if field == "requests" { "request" } else { "limit" };
                        let which = if list == "containers" { "container" } else { "init container" };
                        notes.push(format!("{} {what} for {which} {cname}", set.join(", ")));
                    }
                }
            }
        }
    }
    if !notes.is_empty() {
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

fn items(range: &Value) -> impl Iterator<Item = &Value> {
    range.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten()
}

/// Compares as upstream's `requestLimitEnforcedValues` does: cpu in millicores, everything else
/// in whole units (rounded up).
fn comparable(resource: &str, milli: i128) -> i128 {
    if resource == "cpu" { milli } else { (milli + 999).div_euclid(1000) }
}

/// One item's bounds checked against `requests`/`limits` (a container's, or a pod's sums);
/// `kind` is the item's type ("Container" or "Pod") as the messages name it.
fn check_bounds(item: &Value, kind: &str, requests: &Amounts, limits: &Amounts, errors: &mut Vec<String>) {
    let bounds = |field: &str| item.get(field).and_then(Value::as_object).cloned().unwrap_or_default();
    let shown = |original: &Value, milli: i128| amounts::display_like(original, milli);
    let observed = |resource: &str, set: &Amounts| set.get(resource).copied();
    for (resource, bound) in bounds("min") {
        let Some(min) = amounts::parse(&bound) else { continue };
        let enforced = shown(&bound, min);
        let (req, lim) = (observed(&resource, requests), observed(&resource, limits));
        match req {
            None => errors
                .push(format!("minimum {resource} usage per {kind} is {enforced}.  No request is specified")),
            Some(r) if comparable(&resource, r) < comparable(&resource, min) => errors.push(format!(
                "minimum {resource} usage per {kind} is {enforced}, but request is {}",
                amounts::display(&resource, r)
            )),
            Some(_) => {
                if let Some(l) = lim.filter(|l| comparable(&resource, *l) < comparable(&resource, min)) {
                    errors.push(format!(
                        "minimum {resource} usage per {kind} is {enforced}, but limit is {}",
                        amounts::display(&resource, l)
                    ));
                }
            }
        }
    }
    for (resource, bound) in bounds("max") {
        let Some(max) = amounts::parse(&bound) else { continue };
        let enforced = shown(&bound, max);
        let (req, lim) = (observed(&resource, requests), observed(&resource, limits));
        match lim {
            None => errors
                .push(format!("maximum {resource} usage per {kind} is {enforced}.  No limit is specified")),
            Some(l) if comparable(&resource, l) > comparable(&resource, max) => errors.push(format!(
                "maximum {resource} usage per {kind} is {enforced}, but limit is {}",
                amounts::display(&resource, l)
            )),
            Some(_) => {
                if let Some(r) = req.filter(|r| comparable(&resource, *r) > comparable(&resource, max)) {
                    errors.push(format!(
                        "maximum {resource} usage per {kind} is {enforced}, but request is {}",
                        amounts::display(&resource, r)
                    ));
                }
            }
        }
    }
    for (resource, bound) in bounds("maxLimitRequestRatio") {
        let Some(ratio) = amounts::parse(&bound) else { continue };
        let enforced = shown(&bound, ratio);
        let req = observed(&resource, requests).map(|r| comparable(&resource, r)).filter(|r| *r != 0);
        let lim = observed(&resource, limits).map(|l| comparable(&resource, l)).filter(|l| *l != 0);
        let Some(req) = req else {
            errors.push(format!(
                "{resource} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
            ));
            continue;
        };
        let Some(lim) = lim else {
            errors.push(format!(
                "{resource} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
            ));
            continue;
        };
        // limit / request > ratio, in exact integers: limit × 1000 > ratio(milli) × request.
        if lim * 1000 > ratio * req {
            #[allow(clippy::cast_precision_loss)] // shown to six places, as Go's %f does
            let observed = lim as f64 / req as f64;
            errors.push(format!(
                "{resource} max limit to request ratio per {kind} is {enforced}, but provided ratio is {observed:.6}"
            ));
        }
    }
}

/// Checks a (defaulted) pod against `ranges`; the refusals in upstream's order and words.
fn violations(ranges: &[Value], pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for item in ranges.iter().flat_map(items) {
        match item["type"].as_str() {
            Some("Container") => {
                for c in
                    amounts::containers(pod, "containers").chain(amounts::containers(pod, "initContainers"))
                {
                    let requests = amounts::list(c.pointer("/resources/requests"));
                    let limits = amounts::list(c.pointer("/resources/limits"));
                    check_bounds(item, "Container", &requests, &limits, &mut errors);
                }
            }
            Some("Pod") => {
                let (requests, limits) =
                    (amounts::pod_total(pod, "requests"), amounts::pod_total(pod, "limits"));
                check_bounds(item, "Pod", &requests, &limits, &mut errors);
            }
            _ => {}
        }
    }
    errors
}

/// LimitRanger on a Pod create: defaults from `ranges` (the namespace's LimitRanges), then the
/// bounds; a violation is a 403 naming the pod, several are listed as Go's aggregate error does.
pub fn admit_pod(ranges: &[Value], name: &str, pod: &mut Value) -> Result<(), ApiError> {
    apply_defaults(ranges, pod);
    let errors = violations(ranges, pod);
    match errors.len() {
        0 => Ok(()),
        1 => Err(ApiError::forbidden(format!("pods \"{name}\" is forbidden: {}", errors[0]))),
        _ => Err(ApiError::forbidden(format!("pods \"{name}\" is forbidden: [{}]", errors.join(", ")))),
    }
}

/// LimitRanger for a Pod created in `namespace`, against the LimitRanges stored there.
pub fn admit<S: Store>(
    server: &ApiServer<S>,
    namespace: &str,
    name: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    default_requests_from_limits(pod);
    let r = registry::builtin("limitranges", "")?;
    let (stored, _) = server.store.list(&r.namespace_prefix(namespace));
    let ranges: Vec<Value> = stored.iter().filter_map(|o| serde_json::from_slice(&o.value).ok()).collect();
    if ranges.is_empty() {
        return Ok(());
    }
    admit_pod(&ranges, name, pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(item: Value) -> Value {
        let mut r = json!({"spec": {"limits": [item]}});
        default_limit_range(&mut r);
        r
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]}})
    }

    #[test]
    fn limit_range_defaults_fall_back_to_max_and_min() {
        let r = range(json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}));
        let item = &r["spec"]["limits"][0];
        assert_eq!(item["default"]["cpu"], "2");
        assert_eq!(item["defaultRequest"]["cpu"], "2");
        assert_eq!(item["defaultRequest"]["memory"], "64Mi");
    }

    #[test]
    fn defaults_fill_only_what_the_container_leaves_out() {
        let r = range(
            json!({"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"}}),
        );
        let mut p = pod(json!({"limits": {"memory": "128Mi"}}));
        admit_pod(&[r], "p", &mut p).expect("admitted");
        let res = &p["spec"]["containers"][0]["resources"];
        assert_eq!(res["limits"]["cpu"], "500m");
        assert_eq!(res["limits"]["memory"], "128Mi", "the container's own limit stays");
        assert_eq!(res["requests"]["cpu"], "100m");
        assert_eq!(res["requests"]["memory"], "256Mi", "defaultRequest falls back to default");
        assert_eq!(
            p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
            "LimitRanger plugin set: cpu, memory request for container c; cpu limit for container c"
        );
    }

    #[test]
    fn bounds_refuse_with_upstreams_words() {
        let r = range(json!({"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"}}));
        let mut p = pod(json!({"limits": {"cpu": "2"}, "requests": {"cpu": "200m"}}));
        let err = admit_pod(std::slice::from_ref(&r), "x", &mut p).expect_err("over max");
        assert_eq!(err.code.as_u16(), 403);
        assert_eq!(
            err.message,
            "pods \"x\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        );
        let mut low = pod(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "50m"}}));
        let err = admit_pod(&[r], "y", &mut low).expect_err("under min");
        assert_eq!(
            err.message,
            "pods \"y\" is forbidden: minimum cpu usage per Container is 100m, but request is 50m"
        );
    }

    #[test]
    fn inconsistent_ranges_are_invalid() {
        let r = range(
            json!({"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}, "maxLimitRequestRatio": {"memory": "500m"}}),
        );
        let causes = invalid_range(&r);
        assert!(
            causes.contains(&(
                "spec.limits[0].min[cpu]".to_owned(),
                "Invalid value: \"2\": min value 2 is greater than max value 1".to_owned()
            )),
            "{causes:?}"
        );
        assert!(
            causes.iter().any(|(f, m)| f == "spec.limits[0].maxLimitRequestRatio[memory]"
                && m.ends_with("ratio 500m is less than 1")),
            "{causes:?}"
        );
        let malformed = json!({"spec": {"limits": [{"type": "Pod", "max": {"cpu": "lots"}}]}});
        assert_eq!(invalid_range(&malformed).len(), 1);
        let pod_defaults = json!({"spec": {"limits": [{"type": "Pod", "default": {"cpu": "1"}}]}});
        assert_eq!(invalid_range(&pod_defaults)[0].0, "spec.limits[0].default");
        assert!(
            invalid_range(&range(json!({"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"}})))
                .is_empty()
        );
    }

    #[test]
    fn ratio_and_pod_totals() {
        let ratio = range(json!({"type": "Container", "maxLimitRequestRatio": {"memory": "2"}}));
        let mut p = pod(json!({"limits": {"memory": "1Gi"}, "requests": {"memory": "256Mi"}}));
        let err = admit_pod(&[ratio], "r", &mut p).expect_err("ratio 4");
        assert!(
            err.message.ends_with(
                "memory max limit to request ratio per Container is 2, but provided ratio is 4.000000"
            ),
            "{}",
            err.message
        );
        let per_pod = json!({"spec": {"limits": [{"type": "Pod", "max": {"cpu": "1"}}]}});
        let mut two = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "600m"}}},
            {"name": "b", "resources": {"limits": {"cpu": "600m"}}}]}});
        let err = admit_pod(&[per_pod], "two", &mut two).expect_err("sum over max");
        assert!(
            err.message.ends_with("maximum cpu usage per Pod is 1, but limit is 1200m"),
            "{}",
            err.message
        );
        let mut none = pod(json!({}));
        let strict = range(json!({"type": "Container", "min": {"cpu": "1"}, "defaultRequest": {}}));
        // min fills defaultRequest, so a container without requests is admitted at the minimum.
        admit_pod(&[strict], "n", &mut none).expect("defaulted to min");
        assert_eq!(none["spec"]["containers"][0]["resources"]["requests"]["cpu"], "1");
    }
}
