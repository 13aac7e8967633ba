//! OpenAPI v3, as much as clients use: the index of group versions, and per group version the
//! operations of every resource tagged with its group/version/kind. PATCH operations declare the
//! `fieldValidation` parameter, which is how kubectl learns that this server validates fields
//! itself (and then sends `fieldValidation=Strict` instead of validating client-side).

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

fn operation(r: &Resource, action: &str, extra: &[Value]) -> Value {
    let mut parameters = vec![json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}})];
    parameters.extend_from_slice(extra);
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", schema_name(r))}}}}},
    })
}

fn schema_name(r: &Resource) -> String {
    let group = if r.group.is_empty() { "core".to_owned() } else { r.group.replace(".k8s.io", "") };
    format!("io.k8s.api.{group}.{}.{}", r.version, r.kind)
}

/// `/openapi/v3/<api/v1 | apis/group/version>`, or `None` if not served.
pub fn group_version(path: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in RESOURCES.iter().filter(|r| gv_path(r.group, r.version) == path) {
        let base = format!("/{}", gv_path(r.group, r.version));
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let field_params = [
            json!({"name": "fieldManager", "in": "query", "schema": {"type": "string"}}),
            json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}),
        ];
        let mut patch_params = field_params.to_vec();
        patch_params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean"}}));
        paths.insert(
            collection.clone(),
            json!({"get": operation(r, "list", &[]), "post": operation(r, "post", &field_params), "delete": operation(r, "deletecollection", &[])}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(r, "get", &[]),
                "put": operation(r, "put", &field_params),
                "patch": operation(r, "patch", &patch_params),
                "delete": operation(r, "delete", &[]),
            }),
        );
        schemas.insert(
            schema_name(r),
            json!({"type": "object", "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.kind}]}),
        );
    }
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
