//! The resources this API server serves: names, scope, kinds, and how their objects are checked.

use serde_json::Value;

use super::status::ApiError;

/// One resource type (e.g. `pods` in core/v1).
#[derive(Debug)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served (`status`, `scale`, …).
    pub subresources: &'static [&'static str],
    /// Deserializes into the k8s-openapi type (malformed objects fail here) and serialises it
    /// back: fields the type does not know are missing from the result.
    pub check: fn(&Value) -> Result<Value, String>,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage prefix of all objects of this resource (cluster-wide).
    pub fn prefix(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The storage key of one object (namespace ignored for cluster-scoped resources).
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.prefix()),
            _ => format!("{}{name}", self.prefix()),
        }
    }

    /// The prefix of one namespace's objects.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("{}{namespace}/", self.prefix())
    }
}

fn check<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Result<Value, String> {
    let typed = T::deserialize(value).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Fields of `original` the typed round trip dropped: fields the resource does not have.
pub fn unknown_fields(original: &Value, known: &Value) -> Vec<String> {
    fn walk(path: &str, original: &Value, known: &Value, out: &mut Vec<String>) {
        match (original, known) {
            (Value::Object(o), Value::Object(k)) => {
                for (key, value) in o {
                    let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    match k.get(key) {
                        Some(kv) => walk(&here, value, kv, out),
                        None if !value.is_null() => out.push(here),
                        None => {}
                    }
                }
            }
            (Value::Array(o), Value::Array(k)) if o.len() == k.len() => {
                for (i, (ov, kv)) in o.iter().zip(k).enumerate() {
                    walk(&format!("{path}[{i}]"), ov, kv, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", original, known, &mut out);
    out
}

macro_rules! resource {
    ($group:expr, $version:expr, $kind:ident, $ty:ty, $plural:expr, $singular:expr, $namespaced:expr, $short:expr, $cat:expr, $sub:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: stringify!($kind),
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            check: check::<$ty>,
        }
    };
}

use k8s_openapi::api::{
    apps::v1 as apps, authorization::v1 as authorization, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
};

/// Every served resource.
pub static RESOURCES: &[Resource] = &[
    resource!(
        "",
        "v1",
        Namespace,
        core::Namespace,
        "namespaces",
        "namespace",
        false,
        &["ns"],
        &[],
        &["status"]
    ),
    resource!("", "v1", Node, core::Node, "nodes", "node", false, &["no"], &[], &["status"]),
    resource!(
        "",
        "v1",
        Pod,
        core::Pod,
        "pods",
        "pod",
        true,
        &["po"],
        &["all"],
        &["status", "binding", "eviction", "log"]
    ),
    resource!("", "v1", Service, core::Service, "services", "service", true, &["svc"], &["all"], &["status"]),
    resource!("", "v1", ConfigMap, core::ConfigMap, "configmaps", "configmap", true, &["cm"], &[], &[]),
    resource!("", "v1", Secret, core::Secret, "secrets", "secret", true, &[], &[], &[]),
    resource!("", "v1", Event, core::Event, "events", "event", true, &["ev"], &[], &[]),
    resource!(
        "",
        "v1",
        ServiceAccount,
        core::ServiceAccount,
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        &[],
        &["token"]
    ),
    resource!("", "v1", Endpoints, core::Endpoints, "endpoints", "endpoints", true, &["ep"], &[], &[]),
    resource!(
        "",
        "v1",
        LimitRange,
        core::LimitRange,
        "limitranges",
        "limitrange",
        true,
        &["limits"],
        &[],
        &[]
    ),
    resource!(
        "",
        "v1",
        ResourceQuota,
        core::ResourceQuota,
        "resourcequotas",
        "resourcequota",
        true,
        &["quota"],
        &[],
        &["status"]
    ),
    resource!(
        "apps",
        "v1",
        Deployment,
        apps::Deployment,
        "deployments",
        "deployment",
        true,
        &["deploy"],
        &["all"],
        &["status", "scale"]
    ),
    resource!(
        "apps",
        "v1",
        ReplicaSet,
        apps::ReplicaSet,
        "replicasets",
        "replicaset",
        true,
        &["rs"],
        &["all"],
        &["status", "scale"]
    ),
    resource!(
        "apps",
        "v1",
        DaemonSet,
        apps::DaemonSet,
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
        &["all"],
        &["status"]
    ),
    resource!("batch", "v1", Job, batch::Job, "jobs", "job", true, &[], &["all"], &["status"]),
    resource!(
        "batch",
        "v1",
        CronJob,
        batch::CronJob,
        "cronjobs",
        "cronjob",
        true,
        &["cj"],
        &["all"],
        &["status"]
    ),
    resource!(
        "discovery.k8s.io",
        "v1",
        EndpointSlice,
        discovery::EndpointSlice,
        "endpointslices",
        "endpointslice",
        true,
        &[],
        &[],
        &[]
    ),
    resource!(
        "coordination.k8s.io",
        "v1",
        Lease,
        coordination::Lease,
        "leases",
        "lease",
        true,
        &[],
        &[],
        &[]
    ),
    // Stored and served so manifests carrying their RBAC apply; this server does not enforce
    // them yet (issue 12).
    resource!(
        "certificates.k8s.io",
        "v1",
        CertificateSigningRequest,
        certificates::CertificateSigningRequest,
        "certificatesigningrequests",
        "certificatesigningrequest",
        false,
        &["csr"],
        &[],
        &["status", "approval"]
    ),
    resource!(
        "policy",
        "v1",
        PodDisruptionBudget,
        policy::PodDisruptionBudget,
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        &["pdb"],
        &[],
        &["status"]
    ),
    resource!(
        "scheduling.k8s.io",
        "v1",
        PriorityClass,
        scheduling::PriorityClass,
        "priorityclasses",
        "priorityclass",
        false,
        &["pc"],
        &[],
        &[]
    ),
    // Reviews are answered, never stored (api/access_review.rs).
    resource!(
        "authorization.k8s.io",
        "v1",
        SubjectAccessReview,
        authorization::SubjectAccessReview,
        "subjectaccessreviews",
        "subjectaccessreview",
        false,
        &[],
        &[],
        &[]
    ),
    resource!(
        "authorization.k8s.io",
        "v1",
        SelfSubjectAccessReview,
        authorization::SelfSubjectAccessReview,
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false,
        &[],
        &[],
        &[]
    ),
    resource!("rbac.authorization.k8s.io", "v1", Role, rbac::Role, "roles", "role", true, &[], &[], &[]),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        RoleBinding,
        rbac::RoleBinding,
        "rolebindings",
        "rolebinding",
        true,
        &[],
        &[],
        &[]
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        ClusterRole,
        rbac::ClusterRole,
        "clusterroles",
        "clusterrole",
        false,
        &[],
        &[],
        &[]
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        ClusterRoleBinding,
        rbac::ClusterRoleBinding,
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        &[],
        &[],
        &[]
    ),
];

/// The resource `plural` in `group`/`version`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// A resource every cluster serves (`plural` in `group`/v1); its absence is a server bug.
pub fn builtin(plural: &str, group: &str) -> Result<&'static Resource, ApiError> {
    find(group, "v1", plural).ok_or_else(|| ApiError::internal(format!("{plural} not registered")))
}

/// The API groups (other than core) with their versions, in a stable order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The resource of `kind` in `api_version` ("v1", "apps/v1", …).
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The resource, namespace and name a storage key stands for.
pub fn by_key(key: &str) -> Option<(&'static Resource, Option<&str>, &str)> {
    let r = RESOURCES.iter().find(|r| key.starts_with(&r.prefix()))?;
    let rest = &key[r.prefix().len()..];
    match (r.namespaced, rest.split_once('/')) {
        (true, Some((ns, name))) => Some((r, Some(ns), name)),
        (false, None) => Some((r, None, rest)),
        _ => None,
    }
}
