//! Resource amounts as admission works with them: quantities as exact milli-units (so cpu's
//! `500m` and memory's `128Mi` add up without rounding), per-container and per-pod sums, and a
//! Quantity printed back the way Kubernetes prints one in its messages.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::scheduler::Quantity;

/// Amounts by resource name (`cpu`, `memory`, `pods`, `requests.cpu`, …), in milli-units.
pub type Amounts = BTreeMap<String, i128>;

/// One unit (an object of a counted kind) in milli-units.
pub const ONE: i128 = 1000;

/// The largest amount a Quantity holds in milli-units (`MilliValue()` saturates there).
pub const MAX: i128 = i64::MAX as i128;

/// `amounts` with each amount capped at [`MAX`]: a sum of huge quantities is written as the
/// largest one a Quantity holds, so it reads back equal to what was written.
pub fn clamp(mut amounts: Amounts) -> Amounts {
    for v in amounts.values_mut() {
        *v = (*v).min(MAX);
    }
    amounts
}

/// A Quantity (string, or a bare JSON number) in milli-units; `None` when malformed.
pub fn parse(value: &Value) -> Option<i128> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Quantity::parse(text.trim()).ok().map(|q| i128::from(q.milli_value()))
}

/// The 422 causes for the ResourceList at `field` (`spec.hard`): every amount a valid,
/// non-negative quantity, with the API server's wording.
pub fn invalid_entries(field: &str, value: Option<&Value>) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    for (k, v) in value.and_then(Value::as_object).into_iter().flatten() {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        let problem = match Quantity::parse(text.trim()) {
            Ok(_) => continue,
            Err(crate::scheduler::QuantityError::Negative) => "must be greater than or equal to 0",
            Err(_) => {
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            }
        };
        causes.push((format!("{field}[{k}]"), format!("Invalid value: \"{text}\": {problem}")));
    }
    causes
}

/// A ResourceList (`{"cpu": "1", "memory": "1Gi"}`); malformed entries are left out (the typed
/// check refused such objects before admission sees them).
pub fn list(value: Option<&Value>) -> Amounts {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), parse(v)?)))
        .collect()
}

/// `amounts` as a ResourceList, each amount printed for its resource (capped at [`MAX`]).
pub fn to_list(amounts: &Amounts) -> Value {
    let map: Map<String, Value> =
        amounts.iter().map(|(k, v)| (k.clone(), Value::String(display(k, (*v).min(MAX))))).collect();
    Value::Object(map)
}

/// Memory and storage amounts print with binary suffixes (`1Gi`) when they are whole multiples.
fn binary_resource(name: &str) -> bool {
    name.ends_with("memory") || name.ends_with("storage")
}

/// `milli` printed as Kubernetes prints a Quantity of resource `name` (canonical form).
pub fn display(name: &str, milli: i128) -> String {
    format(milli, binary_resource(name))
}

/// `milli` printed in the format `original` was written in (binary suffix or not), canonically:
/// as `Quantity.String()` prints a parsed quantity (`2000m` → `2`, `1024Mi` → `1Gi`).
pub fn display_like(original: &Value, milli: i128) -> String {
    let binary = original.as_str().is_some_and(|s| s.trim_end().ends_with('i'));
    format(milli, binary)
}

fn format(milli: i128, binary: bool) -> String {
    if milli == 0 {
        return "0".to_owned();
    }
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let whole = milli / 1000;
    if binary {
        for (suffix, power) in [("Ei", 6), ("Pi", 5), ("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)] {
            let unit = 1024i128.pow(power);
            if whole % unit == 0 {
                return format!("{}{suffix}", whole / unit);
            }
        }
        return whole.to_string();
    }
    for (suffix, power) in [("E", 6), ("P", 5), ("T", 4), ("G", 3), ("M", 2), ("k", 1)] {
        let unit = 1000i128.pow(power);
        if whole % unit == 0 {
            return format!("{}{suffix}", whole / unit);
        }
    }
    whole.to_string()
}

/// Adds `more` into `into`.
pub fn add(into: &mut Amounts, more: &Amounts) {
    for (k, v) in more {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Raises each amount of `into` to at least `other`'s.
fn max_into(into: &mut Amounts, other: &Amounts) {
    for (k, v) in other {
        let at = into.entry(k.clone()).or_default();
        *at = (*at).max(*v);
    }
}

/// The containers of a pod spec of `list` (`containers` or `initContainers`).
pub fn containers<'a>(pod: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten()
}

/// A pod's effective requests (`field` "requests") or limits ("limits"): the sum over its
/// containers, raised to any single init container's (init containers run one at a time).
pub fn pod_total(pod: &Value, field: &str) -> Amounts {
    let mut total = Amounts::new();
    for c in containers(pod, "containers") {
        add(&mut total, &list(c.pointer(&format!("/resources/{field}"))));
    }
    for c in containers(pod, "initContainers") {
        max_into(&mut total, &list(c.pointer(&format!("/resources/{field}"))));
    }
    total
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn amounts_print_canonically() {
        assert_eq!(display("cpu", parse(&json!("2000m")).expect("test value")), "2");
        assert_eq!(display("cpu", parse(&json!("1500m")).expect("test value")), "1500m");
        assert_eq!(display("limits.memory", parse(&json!("1024Mi")).expect("test value")), "1Gi");
        assert_eq!(display("memory", parse(&json!("1000")).expect("test value")), "1000");
        assert_eq!(display("pods", 2 * ONE), "2");
        assert_eq!(display("cpu", parse(&json!(3)).expect("test value")), "3");
        assert_eq!(display_like(&json!("1G"), parse(&json!("1G")).expect("test value")), "1G");
        assert_eq!(display("cpu", 0), "0");
    }

    #[test]
    fn huge_sums_are_capped_so_they_read_back_as_written() {
        let huge = parse(&json!("1E")).expect("test value");
        assert_eq!(huge, MAX, "a Quantity saturates");
        let mut sum = Amounts::new();
        add(&mut sum, &Amounts::from([("requests.cpu".to_owned(), huge)]));
        add(&mut sum, &Amounts::from([("requests.cpu".to_owned(), huge)]));
        let sum = clamp(sum);
        assert_eq!(list(Some(&to_list(&sum))), sum, "written and read back alike");
        let unclamped = Amounts::from([("cpu".to_owned(), 2 * MAX)]);
        assert_eq!(list(Some(&to_list(&unclamped))), clamp(unclamped));
    }

    #[test]
    fn pod_totals_sum_containers_and_take_the_largest_init_container() {
        let pod = json!({"spec": {
            "containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                           {"resources": {"requests": {"cpu": "250m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "1Mi"}}}]}});
        let total = pod_total(&pod, "requests");
        assert_eq!(total["cpu"], 2000);
        assert_eq!(total["memory"], 64 * 1024 * 1024 * 1000);
    }
}
