//! Object bookkeeping the server owns: identity and metadata on create, what survives an update,
//! name validation, and ClusterIP allocation.

use std::{collections::HashSet, net::Ipv4Addr};

use serde_json::{Value, json};

use super::{registry::Resource, status::ApiError};

/// DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', starting and ending alphanumeric,
/// at most 253 characters.
pub fn valid_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(ok_char)
        && edge(name.chars().next())
        && edge(name.chars().last())
}

pub(super) fn now() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default()
}

pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Checks a body against its resource and path, and gives it the identity a new object gets.
/// Returns the object's name.
pub fn prepare_create(
    resource: &Resource,
    namespace: Option<&str>,
    body: &mut Value,
) -> Result<String, ApiError> {
    check_kind(resource, body)?;
    let meta = body.get_mut("metadata").and_then(Value::as_object_mut).ok_or_else(|| {
        ApiError::invalid(resource.kind, "", vec![("metadata".into(), "Required value".into())])
    })?;
    if let Some(ns) = namespace {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if given != ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})"
                )));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let name =
        match (meta.get("name").and_then(Value::as_str), meta.get("generateName").and_then(Value::as_str)) {
            (Some(n), _) if !n.is_empty() => n.to_owned(),
            (_, Some(prefix)) => format!("{prefix}{}", random_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    resource.kind,
                    "",
                    vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
                ));
            }
        };
    if resource.group == "rbac.authorization.k8s.io" {
        // RBAC names are path segments (`system:node-proxier`), as Kubernetes validates them.
        if name == "." || name == ".." || name.contains(['/', '%']) {
            return Err(ApiError::invalid(
                resource.kind,
                &name,
                vec![(
                    "metadata.name".into(),
                    format!("Invalid value: \"{name}\": may not be '.', '..' or contain '/' or '%'"),
                )],
            ));
        }
    } else if !valid_name(&name) {
        return Err(ApiError::invalid(
            resource.kind,
            &name,
            vec![(
                "metadata.name".into(),
                format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            )],
        ));
    }
    meta.insert("name".into(), json!(name));
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    if body.get("spec").is_some() {
        body["metadata"]["generation"] = json!(1);
    }
    Ok(name)
}

/// Fills in or checks `kind` and `apiVersion`.
pub fn check_kind(resource: &Resource, body: &mut Value) -> Result<(), ApiError> {
    let api_version = resource.api_version();
    let obj = body.as_object_mut().ok_or_else(|| ApiError::bad_request("the body is not a JSON object"))?;
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != resource.kind => {
            return Err(ApiError::bad_request(format!(
                "the body's kind {k} does not match the resource {} ({})",
                resource.plural, resource.kind
            )));
        }
        _ => {
            obj.insert("kind".into(), json!(resource.kind));
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the body's apiVersion {v} does not match {api_version}"
            )));
        }
        _ => {
            obj.insert("apiVersion".into(), json!(api_version));
        }
    }
    Ok(())
}

/// Carries over what an update may not change (identity, creation time), keeps status or spec
/// depending on whether this is the status subresource, and bumps `generation` when the spec changed.
pub fn merge_update(
    resource: &Resource,
    old: &Value,
    new: &mut Value,
    status_only: bool,
) -> Result<(), ApiError> {
    check_kind(resource, new)?;
    if status_only {
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        return Ok(());
    }
    for field in
        ["uid", "creationTimestamp", "namespace", "name", "deletionTimestamp", "deletionGracePeriodSeconds"]
    {
        if let Some(v) = old.pointer(&format!("/metadata/{field}")) {
            if let Some(given) = new.pointer(&format!("/metadata/{field}")).filter(|g| *g != v)
                && (field == "name" || field == "namespace")
            {
                return Err(ApiError::bad_request(format!(
                    "metadata.{field} {given} does not match the object being updated"
                )));
            }
            new["metadata"][field] = v.clone();
        }
    }
    if resource.subresources.contains(&"status") {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
    if new.get("spec") != old.get("spec") {
        new["metadata"]["generation"] = json!(generation + 1);
    } else if generation > 0 {
        new["metadata"]["generation"] = json!(generation);
    }
    Ok(())
}

/// How the request wants unknown fields treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn from_param(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// Decodes the object as its type (a malformed one is a 400) and applies `fieldValidation` to
/// fields the type does not have; returns the warnings to send back.
pub fn check_object(
    resource: &Resource,
    object: &Value,
    validation: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let known = (resource.check)(object)
        .map_err(|e| ApiError::bad_request(format!("decoding {}: {e}", resource.kind)))?;
    let unknown = super::registry::unknown_fields(object, &known);
    match (validation, unknown.is_empty()) {
        (_, true) | (FieldValidation::Ignore, _) => Ok(Vec::new()),
        (FieldValidation::Strict, false) => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect::<Vec<_>>().join(", ")
        ))),
        (FieldValidation::Warn, false) => {
            Ok(unknown.into_iter().map(|f| format!("unknown field \"{f}\"")).collect())
        }
    }
}

/// Picks a ClusterIP for a new Service (unless it asks for none, or for a free one of its own).
pub fn allocate_cluster_ip(
    body: &mut Value,
    cidr: (Ipv4Addr, u8),
    used: &HashSet<Ipv4Addr>,
) -> Result<(), ApiError> {
    let name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
    let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        return Ok(());
    }
    let (base, bits) = cidr;
    let size = 1u32 << (32 - bits);
    let base = u32::from(base);
    let requested =
        spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let ip = match requested.as_deref() {
        Some("None") => {
            spec.insert("clusterIPs".into(), json!(["None"]));
            return Ok(());
        }
        Some(text) => {
            let ip: Ipv4Addr = text.parse().map_err(|_| {
                ApiError::invalid(
                    "Service",
                    &name,
                    vec![(
                        "spec.clusterIP".into(),
                        format!("Invalid value: \"{text}\": must be a valid IP address"),
                    )],
                )
            })?;
            if !(base..base + size).contains(&u32::from(ip)) {
                return Err(ApiError::invalid(
                    "Service",
                    &name,
                    vec![(
                        "spec.clusterIP".into(),
                        format!("Invalid value: \"{text}\": not in the service CIDR"),
                    )],
                ));
            }
            if used.contains(&ip) {
                return Err(ApiError::invalid(
                    "Service",
                    &name,
                    vec![(
                        "spec.clusterIP".into(),
                        format!("Invalid value: \"{text}\": provided IP is already allocated"),
                    )],
                ));
            }
            ip
        }
        None => (base + 1..base + size - 1)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| ApiError::internal("the service CIDR is exhausted"))?,
    };
    spec.insert("clusterIP".into(), json!(ip.to_string()));
    spec.insert("clusterIPs".into(), json!([ip.to_string()]));
    Ok(())
}

/// An update that leaves out the ClusterIP(s) or a port's node port keeps the allocated ones, as
/// the API server does; changing them is refused by admission (immutable) or re-checked.
pub fn carry_allocations(old: &Value, new: &mut Value) {
    for field in ["clusterIP", "clusterIPs"] {
        let missing = new.pointer(&format!("/spec/{field}")).is_none_or(|v| v.is_null() || v == "");
        if missing && let Some(v) = old.pointer(&format!("/spec/{field}")) {
            new["spec"][field] = v.clone();
        }
    }
    if new.pointer("/spec/healthCheckNodePort").is_none()
        && let Some(v) = old.pointer("/spec/healthCheckNodePort")
    {
        new["spec"]["healthCheckNodePort"] = v.clone();
    }
    let old_ports = old.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            if p.get("nodePort").is_some() {
                continue;
            }
            let same = |o: &&Value| {
                o.get("port") == p.get("port")
                    && o.get("protocol").or(Some(&json!("TCP"))) == p.get("protocol").or(Some(&json!("TCP")))
            };
            if let Some(n) = old_ports.iter().find(same).and_then(|o| o.get("nodePort")) {
                p["nodePort"] = n.clone();
            }
        }
    }
}

/// The default `--service-node-port-range`.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Gives every port of a NodePort or LoadBalancer Service a node port (checking requested ones
/// against the range and against `used`), and takes them away from other types; a LoadBalancer
/// Service with `externalTrafficPolicy: Local` also gets its `healthCheckNodePort` from the same
/// range (kept, or checked, when given), which other Services lose.
pub fn allocate_node_ports(body: &mut Value, used: &HashSet<u16>) -> Result<(), ApiError> {
    let name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_owned();
    let kind = body.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_owned();
    let wants = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
    let wants_health = kind == "LoadBalancer"
        && body.pointer("/spec/externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
    let mut taken = used.clone();
    let mut causes = Vec::new();
    match (wants_health, body.pointer("/spec/healthCheckNodePort").and_then(Value::as_u64)) {
        (false, _) => {
            if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("healthCheckNodePort");
            }
        }
        (true, Some(n)) => {
            let n = u16::try_from(n).unwrap_or(0);
            if !NODE_PORTS.contains(&n) || taken.contains(&n) {
                causes.push((
                    "spec.healthCheckNodePort".to_owned(),
                    format!(
                        "Invalid value: {n}: not a free port of {}-{}",
                        NODE_PORTS.start(),
                        NODE_PORTS.end()
                    ),
                ));
            }
            taken.insert(n);
        }
        (true, None) => {}
    }
    let Some(ports) = body.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else { return Ok(()) };
    for (i, p) in ports.iter_mut().enumerate() {
        let Some(port) = p.as_object_mut() else { continue };
        if !wants {
            port.remove("nodePort");
            continue;
        }
        match port.get("nodePort").and_then(Value::as_u64) {
            Some(n) => {
                let n = u16::try_from(n).unwrap_or(0);
                if !NODE_PORTS.contains(&n) {
                    causes.push((format!("spec.ports[{i}].nodePort"), format!("Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}", NODE_PORTS.start(), NODE_PORTS.end())));
                } else if taken.contains(&n) {
                    causes.push((
                        format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {n}: provided port is already allocated"),
                    ));
                } else {
                    taken.insert(n);
                }
            }
            None => match NODE_PORTS.clone().find(|n| !taken.contains(n)) {
                Some(n) => {
                    port.insert("nodePort".into(), json!(n));
                    taken.insert(n);
                }
                None => return Err(ApiError::internal("the node port range is exhausted")),
            },
        }
    }
    if wants_health && body.pointer("/spec/healthCheckNodePort").is_none() {
        let n = NODE_PORTS
            .clone()
            .find(|n| !taken.contains(n))
            .ok_or_else(|| ApiError::internal("the node port range is exhausted"))?;
        body["spec"]["healthCheckNodePort"] = json!(n);
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid("Service", &name, causes)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ports_are_allocated_checked_and_dropped() {
        let mut svc = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": 30005}]}});
        allocate_node_ports(&mut svc, &HashSet::from([30000])).expect("allocate");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30001);
        let mut clash = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30000}]}});
        assert_eq!(
            allocate_node_ports(&mut clash, &HashSet::from([30000])).expect_err("taken").code.as_u16(),
            422
        );
        let mut out_of_range = json!({"metadata": {"name": "c"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert!(allocate_node_ports(&mut out_of_range, &HashSet::new()).is_err());
        let mut cluster_ip = json!({"metadata": {"name": "d"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30009}]}});
        allocate_node_ports(&mut cluster_ip, &HashSet::new()).expect("ok");
        assert!(cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        // eTP Local on a LoadBalancer: a health check node port too, clear of the others.
        let mut lb = json!({"metadata": {"name": "e"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}});
        allocate_node_ports(&mut lb, &HashSet::from([30000])).expect("allocate");
        assert_eq!(
            (lb["spec"]["ports"][0]["nodePort"].as_u64(), lb["spec"]["healthCheckNodePort"].as_u64()),
            (Some(30001), Some(30002))
        );
        let mut cluster_policy = json!({"metadata": {"name": "f"}, "spec": {"type": "LoadBalancer", "healthCheckNodePort": 30100, "ports": [{"port": 80}]}});
        allocate_node_ports(&mut cluster_policy, &HashSet::new()).expect("allocate");
        assert!(cluster_policy["spec"].get("healthCheckNodePort").is_none());
    }

    #[test]
    fn dns1123_names() {
        for ok in ["a", "web-1", "a.b", "x9"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(254)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn cluster_ips_are_allocated_free_and_conflicts_refused() {
        let cidr = (Ipv4Addr::new(10, 96, 0, 0), 24);
        let mut svc = json!({"metadata": {"name": "a"}, "spec": {}});
        allocate_cluster_ip(&mut svc, cidr, &HashSet::from([Ipv4Addr::new(10, 96, 0, 1)])).expect("allocate");
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.2");
        let mut taken = json!({"metadata": {"name": "b"}, "spec": {"clusterIP": "10.96.0.1"}});
        let err = allocate_cluster_ip(&mut taken, cidr, &HashSet::from([Ipv4Addr::new(10, 96, 0, 1)]))
            .expect_err("conflict");
        assert_eq!(err.code.as_u16(), 422);
        let mut headless = json!({"metadata": {"name": "c"}, "spec": {"clusterIP": "None"}});
        allocate_cluster_ip(&mut headless, cidr, &HashSet::new()).expect("headless");
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }
}
