//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes' strategic
//! merge patch for built-in types (lists of known fields merge by their key, `$patch` directives).

use serde_json::{Map, Value};

use super::status::ApiError;

/// The patch flavours, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list field in built-in types (`patchMergeKey` in the Kubernetes API).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            "name"
        }
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

/// Port lists merge by `containerPort` (containers) or `port` (Services).
fn port_key(items: &[Value]) -> &'static str {
    if items.iter().any(|i| i.get("containerPort").is_some()) { "containerPort" } else { "port" }
}

/// The key the elements of list field `field` (holding `items`) merge by, if it is keyed.
pub fn list_key(field: &str, items: &[Value]) -> Option<&'static str> {
    if field == "ports" { Some(port_key(items)) } else { merge_key(field) }
}

/// Strategic merge: like [`merge`], but lists of known fields merge element-wise by their key,
/// and `{"$patch": "delete"}` elements remove the element with that key. Directive keys the
/// server does not need (`$setElementOrder/…`, `$retainKeys`) are dropped.
pub fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        if let Some(o) = replacement.as_object_mut() {
            o.remove("$patch");
        }
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let key = list_key(k, items);
                match (key, t.get_mut(k)) {
                    (Some(key), Some(Value::Array(existing))) => merge_list(existing, items, key),
                    _ => {
                        let cleaned: Vec<Value> =
                            items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
                        t.insert(k.clone(), Value::Array(cleaned));
                    }
                }
            }
            _ => strategic(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, patch: &[Value], key: &str) {
    for item in patch {
        let Some(id) = item.get(key).cloned() else {
            existing.push(item.clone());
            continue;
        };
        let position = existing.iter().position(|e| e.get(key) == Some(&id));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = position {
                existing.remove(i);
            }
            continue;
        }
        match position {
            Some(i) => strategic(&mut existing[i], item),
            None => existing.push(item.clone()),
        }
    }
}

/// RFC 6901 pointer tokens.
fn tokens(pointer: &str) -> Result<Vec<String>, ApiError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {pointer:?}")))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, ApiError> {
    let mut at = doc;
    for t in path {
        at = match at {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::invalid(
                "patch",
                "",
                vec![(format!("/{}", path.join("/")), "path does not exist".into())],
            )
        })?;
    }
    Ok(at)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    let toks = tokens(path)?;
    let Some((last, head)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, head)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().map_err(|_| ApiError::bad_request(format!("bad index in {path}")))?
            };
            if i > a.len() {
                return Err(ApiError::bad_request(format!("index out of range in {path}")));
            }
            a.insert(i, value);
        }
        _ => return Err(ApiError::bad_request(format!("cannot add at {path}"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let toks = tokens(path)?;
    let (last, head) =
        toks.split_last().ok_or_else(|| ApiError::bad_request("cannot remove the whole document"))?;
    let missing = || ApiError::invalid("patch", "", vec![(path.to_owned(), "path does not exist".into())]);
    match parent(doc, head)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < a.len()).ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902, all or nothing (the caller works on a copy).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops =
        ops.as_array().ok_or_else(|| ApiError::bad_request("a JSON patch is an array of operations"))?;
    for op in ops {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request(format!("JSON patch operation without {name}")))
        };
        let path = field("path")?;
        match field("op")? {
            "add" => add(doc, path, op.get("value").cloned().unwrap_or(Value::Null))?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, op.get("value").cloned().unwrap_or(Value::Null))?;
            }
            "move" => {
                let v = remove(doc, field("from")?)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let from = field("from")?;
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| ApiError::bad_request(format!("copy from missing {from}")))?;
                add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != op.get("value") {
                    return Err(ApiError::invalid(
                        "patch",
                        "",
                        vec![(path.to_owned(), "test failed".into())],
                    ));
                }
            }
            other => return Err(ApiError::bad_request(format!("unknown JSON patch operation {other:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_deletes_by_directive() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "s:1"}
        ]}});
        strategic(
            &mut pod,
            &json!({
                "$setElementOrder/containers": [{"name": "app"}],
                "spec": {"containers": [
                    {"name": "app", "image": "a:2", "ports": [{"containerPort": 443}]},
                    {"name": "side", "$patch": "delete"}
                ]}
            }),
        );
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "app", "image": "a:2", "ports": [{"containerPort": 80}, {"containerPort": 443}]}
            ]}})
        );
    }

    #[test]
    fn json_patch_rfc6902() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "replace", "path": "/list/0", "value": 9},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "test", "path": "/list/1", "value": 2}
            ]),
        )
        .expect("patch");
        assert_eq!(doc, json!({"metadata": {"labels": {"b/c": "2"}}, "list": [9, 2, 3]}));
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
