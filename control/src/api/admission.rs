//! Admission: the defaults the API server fills in and the checks it makes before a write, for
//! the kinds whose defaults clients rely on (Pods, Services, Deployments); the admission plugins
//! that read the cluster or the requester live in the submodules.

pub mod amounts;
mod limits;
mod node_restriction;
pub mod quota;
pub mod requester;

use serde_json::{Value, json};

use super::{ApiServer, registry::Resource, status::ApiError};
use crate::store::Store;

/// The admission plugins that run on a create after defaulting and before validation:
/// NodeRestriction, then LimitRanger (Pods); a created ResourceQuota starts without status,
/// which only its controller writes. (ResourceQuota's charge comes last, right before the
/// write: [`quota::charge`].)
pub fn admit_create<S: Store>(
    server: &ApiServer<S>,
    r: &Resource,
    namespace: Option<&str>,
    name: &str,
    object: &mut Value,
) -> Result<(), ApiError> {
    let node_uid = |node: &str| {
        let nodes = super::registry::builtin("nodes", "").ok()?;
        let stored = super::handlers::decode(&server.store.get(&nodes.key(None, node))?).ok()?;
        stored.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_owned)
    };
    node_restriction::admit_create(r, name, object, node_uid)?;
    match (r.kind, namespace) {
        ("Pod", Some(ns)) => limits::admit(server, ns, name, object)?,
        ("ResourceQuota", _) => {
            if let Some(o) = object.as_object_mut() {
                o.remove("status");
            }
        }
        _ => {}
    }
    Ok(())
}

/// The admission plugins that run on an update (`old` stored, `new` to be written).
pub fn admit_update(r: &Resource, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    node_restriction::admit_update(r, name, old, new)
}

pub(super) fn set_default(object: &mut Value, pointer: &str, value: Value) {
    if object.pointer(pointer).is_none_or(Value::is_null) {
        let mut parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        let Some(last) = parts.pop() else { return };
        let mut at = &mut *object;
        for p in parts {
            if !at.get(p).is_some_and(Value::is_object) {
                at[p] = json!({});
            }
            at = &mut at[p];
        }
        at[last] = value;
    }
}

fn pull_policy(image: &str) -> &'static str {
    let tag = image.rsplit('/').next().and_then(|last| last.split_once(':')).map(|(_, t)| t);
    if image.contains('@') || tag.is_some_and(|t| t != "latest") { "IfNotPresent" } else { "Always" }
}

/// Pod spec defaults (also for Pod templates).
pub(super) fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "/restartPolicy", json!("Always"));
    set_default(spec, "/dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "/terminationGracePeriodSeconds", json!(30));
    set_default(spec, "/schedulerName", json!("default-scheduler"));
    set_default(spec, "/securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                let policy = pull_policy(c.get("image").and_then(Value::as_str).unwrap_or(""));
                set_default(c, "/imagePullPolicy", json!(policy));
                set_default(c, "/terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "/terminationMessagePolicy", json!("File"));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Fills in Kubernetes' defaults for `kind`.
pub fn default(kind: &str, object: &mut Value) {
    match kind {
        "Namespace" => {
            set_default(object, "/spec/finalizers", json!(["kubernetes"]));
            set_default(object, "/status/phase", json!("Active"));
        }
        "Pod" => {
            if let Some(spec) = object.get_mut("spec") {
                default_pod_spec(spec);
            }
            set_default(object, "/status/phase", json!("Pending"));
        }
        "Service" => {
            set_default(object, "/spec/type", json!("ClusterIP"));
            set_default(object, "/spec/sessionAffinity", json!("None"));
            set_default(object, "/spec/internalTrafficPolicy", json!("Cluster"));
            set_default(object, "/spec/ipFamilies", json!(["IPv4"]));
            set_default(object, "/spec/ipFamilyPolicy", json!("SingleStack"));
            if object.pointer("/spec/sessionAffinity") == Some(&json!("ClientIP")) {
                set_default(object, "/spec/sessionAffinityConfig/clientIP/timeoutSeconds", json!(10800));
            }
            if let Some(ports) = object.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "/protocol", json!("TCP"));
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    set_default(p, "/targetPort", port);
                }
            }
        }
        "Deployment" => {
            set_default(object, "/spec/replicas", json!(1));
            set_default(object, "/spec/revisionHistoryLimit", json!(10));
            set_default(object, "/spec/progressDeadlineSeconds", json!(600));
            set_default(object, "/spec/strategy/type", json!("RollingUpdate"));
            if object.pointer("/spec/strategy/type") == Some(&json!("RollingUpdate")) {
                set_default(object, "/spec/strategy/rollingUpdate/maxSurge", json!("25%"));
                set_default(object, "/spec/strategy/rollingUpdate/maxUnavailable", json!("25%"));
            }
            if let Some(spec) = object.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        "LimitRange" => limits::default_limit_range(object),
        "ReplicaSet" | "DaemonSet" => {
            if kind == "ReplicaSet" {
                set_default(object, "/spec/replicas", json!(1));
            } else {
                // `kubectl rollout status ds` refuses a DaemonSet whose strategy type is unset.
                set_default(object, "/spec/revisionHistoryLimit", json!(10));
                set_default(object, "/spec/updateStrategy/type", json!("RollingUpdate"));
                if object.pointer("/spec/updateStrategy/type") == Some(&json!("RollingUpdate")) {
                    set_default(object, "/spec/updateStrategy/rollingUpdate/maxUnavailable", json!(1));
                    set_default(object, "/spec/updateStrategy/rollingUpdate/maxSurge", json!(0));
                }
            }
            if let Some(spec) = object.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        "Job" | "CronJob" => super::batch::default(kind, object),
        _ => {}
    }
}

/// Checks the defaulted object; every problem becomes a field cause of one 422.
pub fn validate(kind: &str, name: &str, object: &Value) -> Result<(), ApiError> {
    let mut causes: Vec<(String, String)> = Vec::new();
    let port_in_range = |causes: &mut Vec<(String, String)>, field: String, v: Option<&Value>| {
        if let Some(p) = v.and_then(Value::as_i64)
            && !(1..=65535).contains(&p)
        {
            causes.push((field, format!("Invalid value: {p}: must be between 1 and 65535, inclusive")));
        }
    };
    match kind {
        "Service" => {
            for (i, p) in
                object.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().enumerate()
            {
                port_in_range(&mut causes, format!("spec.ports[{i}].port"), p.get("port"));
                if let Some(n) = p.get("nodePort").and_then(Value::as_i64)
                    && !(1..=65535).contains(&n)
                {
                    causes.push((format!("spec.ports[{i}].nodePort"), format!("Invalid value: {n}")));
                }
            }
            let (ip, ips) = (
                object.pointer("/spec/clusterIP"),
                object.pointer("/spec/clusterIPs").and_then(Value::as_array),
            );
            if let (Some(ip), Some(ips)) = (ip, ips)
                && ips.first() != Some(ip)
            {
                causes
                    .push(("spec.clusterIPs".into(), "Invalid value: must hold spec.clusterIP first".into()));
            }
            let ports = object.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
            let headless = object.pointer("/spec/clusterIP") == Some(&json!("None"));
            if ports == 0 && !headless && object.pointer("/spec/type") != Some(&json!("ExternalName")) {
                causes.push(("spec.ports".into(), "Required value".into()));
            }
        }
        "Pod" => {
            let containers = object.pointer("/spec/containers").and_then(Value::as_array);
            if containers.is_none_or(|c| c.is_empty()) {
                causes.push(("spec.containers".into(), "Required value".into()));
            }
            for (i, c) in containers.into_iter().flatten().enumerate() {
                if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push((format!("spec.containers[{i}].image"), "Required value".into()));
                }
                for (j, p) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    port_in_range(
                        &mut causes,
                        format!("spec.containers[{i}].ports[{j}].containerPort"),
                        p.get("containerPort"),
                    );
                }
            }
        }
        "LimitRange" => causes.extend(limits::invalid_range(object)),
        "ResourceQuota" => causes.extend(quota::invalid_quota(object)),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            let selector = object.pointer("/spec/selector/matchLabels").and_then(Value::as_object);
            let labels = object.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
            match selector {
                None => causes.push(("spec.selector".into(), "Required value".into())),
                Some(sel) => {
                    let matches = sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                    if !matches {
                        causes.push((
                            "spec.template.metadata.labels".into(),
                            "Invalid value: `selector` does not match template `labels`".into(),
                        ));
                    }
                }
            }
            if object.pointer("/spec/replicas").and_then(Value::as_i64).is_some_and(|r| r < 0) {
                causes.push((
                    "spec.replicas".into(),
                    "Invalid value: must be greater than or equal to 0".into(),
                ));
            }
        }
        "Job" | "CronJob" => causes.extend(super::batch::causes(kind, name, object)),
        _ => {}
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(kind, name, causes)) }
}

/// Fields that may not change once set.
pub fn immutable(kind: &str, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let fields: &[&str] = match kind {
        "Service" => &["/spec/clusterIP", "/spec/clusterIPs"],
        "Deployment" | "ReplicaSet" | "DaemonSet" => &["/spec/selector"],
        "Pod" => &["/spec/nodeName"],
        "Job" => &["/spec/selector", "/spec/template", "/spec/completions", "/spec/completionMode"],
        _ => &[],
    };
    let mut causes = if kind == "Pod" { pod_spec_update(old, new) } else { Vec::new() };
    for f in fields {
        let (before, after) = (old.pointer(f), new.pointer(f));
        // Setting a field that was unset is allowed (a Pod's binding sets nodeName).
        if before.is_some_and(|b| !b.is_null()) && before != after {
            causes.push((
                f.trim_start_matches('/').replace('/', "."),
                "Invalid value: field is immutable".to_owned(),
            ));
        }
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(kind, name, causes)) }
}

/// What a Pod update may change of the spec, as upstream's refusal lists it.
const POD_UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Sets `key` of `to` to what it is in `from` (absent when absent there).
fn copy_field(from: &Value, to: &mut Value, key: &str) {
    match (from.get(key), to.as_object_mut()) {
        (Some(v), Some(o)) => {
            o.insert(key.to_owned(), v.clone());
        }
        (None, Some(o)) => {
            o.remove(key);
        }
        _ => {}
    }
}

/// The 422 causes of a Pod update's spec changes (upstream's `ValidatePodUpdate`): a pod's spec
/// is fixed once created but for its images, a shorter `activeDeadlineSeconds`, added
/// tolerations, and `nodeName` once (its binding; a set one is checked with the immutable
/// fields). So a running pod's requests and limits, which quota charged and LimitRanger
/// checked at create, stay what they were.
fn pod_spec_update(old: &Value, new: &Value) -> Vec<(String, String)> {
    let none = Value::Null;
    let new_spec = new.get("spec").unwrap_or(&none);
    // Defaults are compared filled in on both sides: a pod stored before one existed may be
    // written back with it.
    let mut old_spec = old.get("spec").cloned().unwrap_or_else(|| json!({}));
    default_pod_spec(&mut old_spec);
    let mut causes = Vec::new();
    let deadline = |s: &Value| s.get("activeDeadlineSeconds").and_then(Value::as_i64);
    match (deadline(&old_spec), deadline(new_spec)) {
        (Some(before), Some(after)) if after > before => causes.push((
            "spec.activeDeadlineSeconds".to_owned(),
            format!("Invalid value: {after}: must be less than or equal to previous value"),
        )),
        (Some(_), None) => causes.push((
            "spec.activeDeadlineSeconds".to_owned(),
            "Invalid value: \"null\": must not update from a positive integer to nil value".to_owned(),
        )),
        _ => {}
    }
    let tolerations = |s: &Value| s.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let new_tolerations = tolerations(new_spec);
    let kept = tolerations(&old_spec).iter().all(|t| {
        new_tolerations.iter().any(|n| {
            let mut t = t.clone();
            copy_field(n, &mut t, "tolerationSeconds");
            &t == n
        })
    });
    if !kept {
        causes.push((
            "spec.tolerations".to_owned(),
            "Forbidden: existing toleration can not be modified except its tolerationSeconds".to_owned(),
        ));
    }
    // The new spec with what may change taken from the old: anything left different may not.
    let mut munged = new_spec.clone();
    for list in ["containers", "initContainers"] {
        let before = old_spec.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
        if let Some(after) = munged.get_mut(list).and_then(Value::as_array_mut)
            && after.len() == before.len()
        {
            for (a, b) in after.iter_mut().zip(&before) {
                copy_field(b, a, "image");
            }
        }
    }
    for field in ["activeDeadlineSeconds", "tolerations", "nodeName"] {
        copy_field(&old_spec, &mut munged, field);
    }
    let grace = |s: &Value| s.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
    if grace(&old_spec).is_some_and(|g| g < 0) && grace(&munged) == Some(1) {
        copy_field(&old_spec, &mut munged, "terminationGracePeriodSeconds");
    }
    if munged != old_spec {
        causes.push((
            "spec".to_owned(),
            format!("Forbidden: pod updates may not change fields other than {POD_UPDATABLE}"),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_and_service_defaults() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "reg/app:1.2", "ports": [{"containerPort": 80}]}]}});
        default("Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["spec"]["containers"][1]["ports"][0]["protocol"], "TCP");
        let mut svc = json!({"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}});
        default("Service", &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);
    }

    #[test]
    fn a_pod_update_may_change_only_images_deadline_tolerations_and_an_unset_node() {
        let mut old = json!({"spec": {"containers": [{"name": "c", "image": "a:1",
            "resources": {"requests": {"cpu": "100m"}}}], "tolerations": [{"key": "k", "operator": "Exists"}]}});
        default("Pod", &mut old);
        let allowed = |edit: &dyn Fn(&mut Value)| {
            let mut new = old.clone();
            edit(&mut new);
            immutable("Pod", "p", &old, &new)
        };
        assert!(allowed(&|p| p["spec"]["containers"][0]["image"] = json!("a:2")).is_ok());
        assert!(allowed(&|p| p["spec"]["nodeName"] = json!("n1")).is_ok(), "binding");
        assert!(allowed(&|p| p["spec"]["activeDeadlineSeconds"] = json!(60)).is_ok());
        assert!(
            allowed(&|p| p["spec"]["tolerations"]
                .as_array_mut()
                .expect("tolerations")
                .push(json!({"key": "x", "operator": "Exists"})))
            .is_ok()
        );
        assert!(allowed(&|p| p["metadata"]["labels"] = json!({"a": "b"})).is_ok());
        let refused = allowed(&|p| p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("64"))
            .expect_err("cpu raised");
        assert_eq!(refused.code.as_u16(), 422);
        assert_eq!(
            refused.message,
            format!(
                "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than {POD_UPDATABLE}"
            )
        );
        assert!(allowed(&|p| p["spec"]["tolerations"] = json!([])).is_err(), "a toleration dropped");
        let mut deadline = old.clone();
        deadline["spec"]["activeDeadlineSeconds"] = json!(60);
        let mut longer = deadline.clone();
        longer["spec"]["activeDeadlineSeconds"] = json!(120);
        assert!(immutable("Pod", "p", &deadline, &longer).is_err());
        let mut bound = old.clone();
        bound["spec"]["nodeName"] = json!("n1");
        let mut moved = bound.clone();
        moved["spec"]["nodeName"] = json!("n2");
        assert!(immutable("Pod", "p", &bound, &moved).is_err());
        // Defaults missing from what was stored do not count as a change.
        let bare = json!({"spec": {"containers": [{"name": "c", "image": "a:1"}]}});
        let mut defaulted = bare.clone();
        default("Pod", &mut defaulted);
        assert!(immutable("Pod", "p", &bare, &defaulted).is_ok());
    }

    #[test]
    fn validation_collects_every_cause() {
        let svc = json!({"spec": {"ports": [{"port": 0}, {"port": 70000}]}});
        let err = validate("Service", "s", &svc).expect_err("invalid");
        assert_eq!(err.code.as_u16(), 422);
        assert_eq!(err.details.as_ref().and_then(|d| d["causes"].as_array()).map(Vec::len), Some(2));
        let deploy = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}}}});
        assert!(validate("Deployment", "d", &deploy).is_err());
        let old = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}}});
        let new = json!({"spec": {"selector": {"matchLabels": {"app": "b"}}}});
        assert!(immutable("Deployment", "d", &old, &new).is_err());
    }
}
