//! OpenAPI v3 and v2, as much as clients use: per group version (v3) or in one document (v2), the
//! operations of every resource tagged with its group/version/kind. PATCH operations declare the
//! `fieldValidation` parameter, which is how kubectl learns that this server validates fields
//! itself (and then sends `fieldValidation=Strict` instead of validating client-side). Object
//! schemas are open (`type: object`): validation is the server's.

use serde_json::{Map, Value, json};

use super::registry::{self, RESOURCES, Resource};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// `/openapi/v3`
pub fn index() -> Value {
    let mut paths = Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(registry::groups());
    for (group, version) in gvs {
        let p = gv_path(group, version);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}")}));
    }
    json!({"paths": paths})
}

/// The two OpenAPI dialects differ in how parameters and responses name their schemas.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    V2,
    V3,
}

fn query_param(dialect: Dialect, name: &str, ty: &str) -> Value {
    match dialect {
        Dialect::V2 => json!({"name": name, "in": "query", "type": ty}),
        Dialect::V3 => json!({"name": name, "in": "query", "schema": {"type": ty}}),
    }
}

fn operation(dialect: Dialect, r: &Resource, action: &str, extra: &[Value]) -> Value {
    let mut parameters = vec![query_param(dialect, "dryRun", "string")];
    parameters.extend_from_slice(extra);
    let response = match dialect {
        Dialect::V2 => {
            json!({"description": "OK", "schema": {"$ref": format!("#/definitions/{}", schema_name(r))}})
        }
        Dialect::V3 => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(r))}}}})
        }
    };
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": parameters,
        "responses": {"200": response},
    })
}

fn schema_name(r: &Resource) -> String {
    // Upstream names a group's schemas by its first label: io.k8s.api.rbac.v1.Role for
    // rbac.authorization.k8s.io.
    let group = if r.group.is_empty() { "core" } else { r.group.split('.').next().unwrap_or(r.group) };
    format!("io.k8s.api.{group}.{}.{}", r.version, r.kind)
}

/// Adds the paths and the schema of every resource `r` passes to `paths` and `schemas`.
fn describe(
    dialect: Dialect,
    keep: impl Fn(&Resource) -> bool,
    paths: &mut Map<String, Value>,
    schemas: &mut Map<String, Value>,
) {
    for r in RESOURCES.iter().filter(|r| keep(r)) {
        let base = format!("/{}", gv_path(r.group, r.version));
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let field_params = [
            query_param(dialect, "fieldManager", "string"),
            query_param(dialect, "fieldValidation", "string"),
        ];
        let mut patch_params = field_params.to_vec();
        patch_params.push(query_param(dialect, "force", "boolean"));
        let op = |action: &str, extra: &[Value]| operation(dialect, r, action, extra);
        paths.insert(
            collection.clone(),
            json!({"get": op("list", &[]), "post": op("post", &field_params), "delete": op("deletecollection", &[])}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": op("get", &[]),
                "put": op("put", &field_params),
                "patch": op("patch", &patch_params),
                "delete": op("delete", &[]),
            }),
        );
        schemas.insert(
            schema_name(r),
            json!({"type": "object", "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.kind}]}),
        );
    }
}

/// `/openapi/v3/<api/v1 | apis/group/version>`, or `None` if not served.
pub fn group_version(path: &str) -> Option<Value> {
    let (mut paths, mut schemas) = (Map::new(), Map::new());
    describe(Dialect::V3, |r| gv_path(r.group, r.version) == path, &mut paths, &mut schemas);
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `/openapi/v2`: every group version in one Swagger 2.0 document.
pub fn v2() -> Value {
    let (mut paths, mut definitions) = (Map::new(), Map::new());
    describe(Dialect::V2, |_| true, &mut paths, &mut definitions);
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
    })
}
