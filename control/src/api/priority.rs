//! Pod priority at admission: PriorityClasses (scheduling.k8s.io/v1) and kube-apiserver's
//! `Priority` admission plugin.
//!
//! - A PriorityClass gets `preemptionPolicy: PreemptLowerPriority` by default; its `value` may
//!   exceed 1,000,000,000 only when its name starts with `system-` (422 otherwise); at most one
//!   class is `globalDefault` (a second is 403, worded as upstream); `value` and
//!   `preemptionPolicy` never change.
//! - A new Pod gets `spec.priority` and `spec.preemptionPolicy` from its `priorityClassName`,
//!   or from the global default class (whose name it then carries), or 0 and
//!   `PreemptLowerPriority`. An unknown class, or a client-set priority or policy that differs
//!   from the computed one, is a 403 with upstream's message. A Pod's priority fields never
//!   change afterwards (an update leaving them out keeps them).
//!
//! Bootstrap creates the built-in classes `system-cluster-critical` and `system-node-critical`;
//! deleting them is refused (403).

use serde_json::{Value, json};

use super::{ApiError, ApiServer, registry};
use crate::store::Store;

/// Names of classes allowed above [`HIGHEST_USER_DEFINABLE_PRIORITY`] start with this.
pub const SYSTEM_PREFIX: &str = "system-";
/// The highest value a class not named `system-…` may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
/// The preemption policy of classes and pods that set none.
pub const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";
/// The policy of pods that wait rather than preempt.
pub const NEVER: &str = "Never";

/// The classes every cluster has, as upstream's API server creates them.
pub fn system_classes() -> Vec<Value> {
    let class = |name: &str, value: i64, description: &str| {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "globalDefault": false,
            "description": description, "preemptionPolicy": PREEMPT_LOWER_PRIORITY})
    };
    vec![
        class(
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        class(
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ]
}

/// The Priority plugin on a write of `kind`: `old` is the stored object for an update, `None`
/// for a create. Defaults and checks `object` in place. Other kinds pass untouched.
pub async fn admit<S: Store>(
    server: &ApiServer<S>,
    kind: &str,
    name: &str,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    match (kind, old) {
        ("PriorityClass", old) => {
            if object.get("preemptionPolicy").is_none_or(Value::is_null) {
                object["preemptionPolicy"] = json!(PREEMPT_LOWER_PRIORITY);
            }
            validate_class(name, object, old)?;
            if object.get("globalDefault").and_then(Value::as_bool) == Some(true) {
                only_one_default(server, name, old.is_none())?;
            }
            Ok(())
        }
        ("Pod", None) => admit_pod(server, name, object),
        ("Pod", Some(old)) => {
            carry_pod_priority(old, object);
            pod_unchanged(name, old, object)
        }
        _ => Ok(()),
    }
}

/// Refuses deleting a built-in class, as upstream's PriorityClass storage does.
pub fn check_delete(kind: &str, name: &str) -> Result<(), ApiError> {
    let builtin = system_classes().iter().any(|c| class_name(c) == name);
    if kind == "PriorityClass" && builtin {
        return Err(forbidden(
            "priorityclasses",
            "scheduling.k8s.io",
            name,
            "this is a system priority class and cannot be deleted",
        ));
    }
    Ok(())
}

/// The 422 checks of a class (upstream's `ValidatePriorityClass` and `…Update`).
fn validate_class(name: &str, class: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes: Vec<(String, String)> = Vec::new();
    // Upstream's `value` is a plain int32: absent reads as 0 (protobuf bodies leave a 0 out).
    let value = class.get("value").and_then(Value::as_i64).unwrap_or(0);
    if value > HIGHEST_USER_DEFINABLE_PRIORITY && !name.starts_with(SYSTEM_PREFIX) {
        causes.push((
            "value".into(),
            format!(
                "Forbidden: maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
            ),
        ));
    }
    let policy = class.get("preemptionPolicy").and_then(Value::as_str).unwrap_or_default();
    if policy != PREEMPT_LOWER_PRIORITY && policy != NEVER {
        causes.push((
            "preemptionPolicy".into(),
            format!(
                "Unsupported value: \"{policy}\": supported values: \"{NEVER}\", \"{PREEMPT_LOWER_PRIORITY}\""
            ),
        ));
    }
    if let Some(old) = old {
        let value_of = |c: &Value| c.get("value").and_then(Value::as_i64).unwrap_or(0);
        if value_of(old) != value {
            causes.push(("value".into(), "Forbidden: may not be changed in an update.".into()));
        }
        if old.get("preemptionPolicy") != class.get("preemptionPolicy") {
            causes.push((
                "preemptionPolicy".into(),
                format!("Invalid value: \"{policy}\": field is immutable"),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("PriorityClass.scheduling.k8s.io", name, causes))
    }
}

/// Every stored PriorityClass.
fn classes<S: Store>(server: &ApiServer<S>) -> Result<Vec<Value>, ApiError> {
    let r = registry::builtin("priorityclasses", "scheduling.k8s.io")?;
    let (stored, _) = server.store.list(&r.prefix());
    stored.iter().map(super::decode_object).collect()
}

fn class_name(class: &Value) -> &str {
    class.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// The global default class; with several (two API servers racing), the lowest value wins, as
/// upstream resolves it.
fn global_default(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
}

/// A 403 about the object `plural`/`name`, as `admission.NewForbidden` words it.
fn forbidden(plural: &str, group: &str, name: &str, why: &str) -> ApiError {
    let qualified = if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") };
    let mut error = ApiError::forbidden(format!("{qualified} \"{name}\" is forbidden: {why}"));
    error.details = Some(json!({"name": name, "group": group, "kind": plural}));
    error
}

/// A class becoming the global default while another one is: refused.
fn only_one_default<S: Store>(server: &ApiServer<S>, name: &str, creating: bool) -> Result<(), ApiError> {
    let classes = classes(server)?;
    match global_default(&classes).map(class_name) {
        Some(current) if creating || current != name => Err(forbidden(
            "priorityclasses",
            "scheduling.k8s.io",
            name,
            &format!("PriorityClass {current} is already marked as default. Only one default can exist"),
        )),
        _ => Ok(()),
    }
}

/// Resolves a new pod's priority and preemption policy.
fn admit_pod<S: Store>(server: &ApiServer<S>, name: &str, pod: &mut Value) -> Result<(), ApiError> {
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else { return Ok(()) };
    let requested = spec.get("priorityClassName").and_then(Value::as_str).unwrap_or_default().to_owned();
    let classes = classes(server)?;
    let chosen = if requested.is_empty() {
        global_default(&classes)
    } else {
        let found = classes.iter().find(|c| class_name(c) == requested);
        Some(found.ok_or_else(|| {
            forbidden("pods", "", name, &format!("no PriorityClass with name {requested} was found"))
        })?)
    };
    let (class, priority, policy) = match chosen {
        Some(c) => (
            class_name(c).to_owned(),
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy").and_then(Value::as_str).unwrap_or(PREEMPT_LOWER_PRIORITY).to_owned(),
        ),
        None => (String::new(), 0, PREEMPT_LOWER_PRIORITY.to_owned()),
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64)
        && given != priority
    {
        return Err(forbidden(
            "pods",
            "",
            name,
            &format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            ),
        ));
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str)
        && given != policy
    {
        return Err(forbidden(
            "pods",
            "",
            name,
            &format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            ),
        ));
    }
    if !class.is_empty() {
        spec["priorityClassName"] = json!(class);
    }
    spec["priority"] = json!(priority);
    spec["preemptionPolicy"] = json!(policy);
    Ok(())
}

/// An update that leaves a pod's priority fields out keeps them (upstream's plugin does the same
/// for `priority` and `preemptionPolicy`; the class name is kept too, as admission wrote it).
fn carry_pod_priority(old: &Value, new: &mut Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    for field in ["priority", "priorityClassName", "preemptionPolicy"] {
        let before = old.pointer(&format!("/spec/{field}")).filter(|v| !v.is_null());
        if let Some(before) = before
            && spec.get(field).is_none_or(Value::is_null)
        {
            spec.insert(field.to_owned(), before.clone());
        }
    }
}

/// A pod's priority fields are fixed at creation (its spec is immutable upstream).
fn pod_unchanged(name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let causes: Vec<(String, String)> = ["priority", "priorityClassName", "preemptionPolicy"]
        .iter()
        .filter(|f| {
            let before = old.pointer(&format!("/spec/{f}")).filter(|v| !v.is_null());
            before.is_some() && before != new.pointer(&format!("/spec/{f}"))
        })
        .map(|f| (format!("spec.{f}"), "Invalid value: field is immutable".to_owned()))
        .collect();
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid("Pod", name, causes)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64) -> Value {
        json!({"metadata": {"name": name}, "value": value, "preemptionPolicy": PREEMPT_LOWER_PRIORITY})
    }

    #[test]
    fn user_classes_stay_at_or_below_a_billion() {
        assert!(validate_class("high", &class("high", 1_000_000_000), None).is_ok());
        let err = validate_class("huge", &class("huge", 1_000_000_001), None).expect_err("too high");
        assert_eq!(err.code.as_u16(), 422);
        assert_eq!(
            err.message,
            "PriorityClass.scheduling.k8s.io \"huge\" is invalid: value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        );
        assert!(validate_class("system-x", &class("system-x", 2_000_000_000), None).is_ok());
        let no_value = json!({"metadata": {"name": "n"}, "preemptionPolicy": NEVER});
        assert!(validate_class("n", &no_value, None).is_ok(), "an absent value is 0");
    }

    #[test]
    fn value_and_policy_are_immutable() {
        let old = class("c", 10);
        assert!(validate_class("c", &class("c", 10), Some(&old)).is_ok());
        let err = validate_class("c", &class("c", 11), Some(&old)).expect_err("value changed");
        assert!(
            err.message.contains("value: Forbidden: may not be changed in an update."),
            "{}",
            err.message
        );
        let mut never = class("c", 10);
        never["preemptionPolicy"] = json!(NEVER);
        let err = validate_class("c", &never, Some(&old)).expect_err("policy changed");
        assert!(err.message.contains("preemptionPolicy: Invalid value: \"Never\": field is immutable"));
        never["preemptionPolicy"] = json!("Sometimes");
        assert!(validate_class("c", &never, None).expect_err("unsupported").message.contains("Unsupported"));
    }

    #[test]
    fn the_lowest_of_several_defaults_wins() {
        let mut a = class("a", 5);
        let mut b = class("b", 3);
        a["globalDefault"] = json!(true);
        b["globalDefault"] = json!(true);
        let classes = [a, class("c", 1), b];
        assert_eq!(global_default(&classes).map(class_name), Some("b"));
        assert_eq!(global_default(&classes[1..2]).map(class_name), None);
    }

    #[test]
    fn pod_priority_fields_do_not_change() {
        let old = json!({"spec": {"priority": 5, "priorityClassName": "x"}});
        assert!(pod_unchanged("p", &old, &old).is_ok());
        let new = json!({"spec": {"priority": 6, "priorityClassName": "x"}});
        assert_eq!(pod_unchanged("p", &old, &new).expect_err("changed").code.as_u16(), 422);
        let mut left_out = json!({"spec": {"containers": []}});
        carry_pod_priority(&old, &mut left_out);
        assert_eq!(left_out["spec"]["priority"], 5);
        assert_eq!(left_out["spec"]["priorityClassName"], "x");
        assert!(pod_unchanged("p", &old, &left_out).is_ok());
    }

    #[test]
    fn built_in_classes_stay() {
        let err = check_delete("PriorityClass", "system-node-critical").expect_err("built-in");
        assert_eq!(err.code.as_u16(), 403);
        assert_eq!(
            err.message,
            "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted"
        );
        assert!(check_delete("PriorityClass", "high").is_ok());
        assert!(check_delete("Pod", "system-node-critical").is_ok());
    }
}
