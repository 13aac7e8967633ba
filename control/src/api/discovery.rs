//! Discovery documents: /version, /api, /apis, and each group version's resource list; and the
//! aggregated form (apidiscovery.k8s.io/v2) of /api and /apis that lists every resource in one
//! answer, which kubectl and kube-rs ask for first.

use serde_json::{Value, json};

use super::registry::{self, RESOURCES, Resource};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-skiff+", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

pub fn api_groups() -> Value {
    let groups: Vec<Value> = registry::groups()
        .into_iter()
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The kind and verbs of a subresource of `r`.
fn subresource(r: &Resource, sub: &str) -> (&'static str, &'static [&'static str]) {
    match sub {
        "binding" => ("Binding", &["create"]),
        "eviction" => ("Eviction", &["create"]),
        "token" => ("TokenRequest", &["create"]),
        "scale" => ("Scale", &["get", "patch", "update"]),
        "log" => (r.kind, &["get"]),
        _ => (r.kind, &["get", "patch", "update"]),
    }
}

fn entry(r: &Resource) -> Value {
    let verbs = VERBS;
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

/// The APIResourceList of one group version, or `None` if it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        resources.push(entry(r));
        for sub in r.subresources {
            let (kind, verbs) = subresource(r, sub);
            let mut entry = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            // A subresource of another group's kind names it (kubectl drain looks for
            // pods/eviction in policy/v1 here before it evicts rather than deletes).
            let (group, version) = kind_group_version(r, kind);
            if group != r.group {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            resources.push(entry);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// Which aggregated discovery version an `Accept` header asks for (`v2` preferred), if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    let asks = |v: &str| {
        accept.split(',').any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"g=apidiscovery.k8s.io")
                && params.contains(&"as=APIGroupDiscoveryList")
                && params.contains(&format!("v={v}").as_str())
        })
    };
    ["v2", "v2beta1"].into_iter().find(|v| asks(v))
}

/// The Content-Type of an aggregated discovery answer of `version`.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// The group and version of a subresource's `kind` (Scale, Eviction and TokenRequest live in
/// groups of their own).
fn kind_group_version<'a>(r: &'a Resource, kind: &str) -> (&'a str, &'a str) {
    match kind {
        "Scale" => ("autoscaling", "v1"),
        "Eviction" => ("policy", "v1"),
        "TokenRequest" => ("authentication.k8s.io", "v1"),
        _ => (r.group, r.version),
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn aggregated_entry(r: &Resource) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let (kind, verbs) = subresource(r, sub);
            let (group, version) = kind_group_version(r, kind);
            json!({"subresource": sub, "responseKind": gvk(group, version, kind), "verbs": verbs})
        })
        .collect();
    json!({
        "resource": r.plural,
        "responseKind": gvk(r.group, r.version, r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": VERBS,
        "shortNames": r.short_names,
        "categories": r.categories,
        "subresources": subresources,
    })
}

/// The aggregated discovery list (`APIGroupDiscoveryList` of apidiscovery.k8s.io/`version`): the
/// core group for `/api` (`core`), every named group for `/apis`.
pub fn aggregated(core: bool, version: &str) -> Value {
    let groups: Vec<(&str, &str)> = if core { vec![("", "v1")] } else { registry::groups() };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(group, gv)| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == gv)
                .map(aggregated_entry)
                .collect();
            json!({
                "metadata": {"name": group, "creationTimestamp": null},
                "versions": [{"version": gv, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}
