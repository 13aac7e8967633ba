//! Field sets in the shape of `managedFields[].fieldsV1`: a tree whose keys are path elements —
//! `f:<name>` (an object field), `k:<json>` (the element of a keyed list whose key fields have
//! those values), `v:<json>` (the element of a set list with that value) and `.` (the list element
//! itself). A node without children is a leaf: a field its owner set to a whole value.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::patch::list_key;

/// A set of field paths.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldSet(BTreeMap<String, FieldSet>);

/// One path, root to leaf.
pub type Path = Vec<String>;

/// Metadata the server owns; never part of anybody's field set.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// List fields whose elements are a set of scalars.
const SET_LISTS: &[&str] = &["finalizers"];

impl FieldSet {
    pub fn from_json(value: &Value) -> Self {
        let mut set = FieldSet::default();
        if let Value::Object(map) = value {
            for (k, v) in map {
                set.0.insert(k.clone(), FieldSet::from_json(v));
            }
        }
        set
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields an object sets (its content, without server-owned metadata and status).
    pub fn of(object: &Value) -> Self {
        let mut set = FieldSet::default();
        let Value::Object(map) = object else { return set };
        for (k, v) in map {
            let child = match k.as_str() {
                "apiVersion" | "kind" | "status" => continue,
                "metadata" => {
                    let Value::Object(meta) = v else { continue };
                    let kept: Map<String, Value> = meta
                        .iter()
                        .filter(|(k, _)| !SERVER_METADATA.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if kept.is_empty() {
                        continue;
                    }
                    object_fields(&kept)
                }
                _ => value_fields(k, v),
            };
            set.0.insert(format!("f:{k}"), child);
        }
        set
    }

    /// Every path from the root to a leaf.
    pub fn leaves(&self) -> Vec<Path> {
        fn walk(set: &FieldSet, prefix: &mut Path, out: &mut Vec<Path>) {
            for (k, child) in &set.0 {
                prefix.push(k.clone());
                if child.is_empty() {
                    out.push(prefix.clone());
                } else {
                    walk(child, prefix, out);
                }
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// Whether `path` is in the set (a leaf, or the prefix of some).
    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => true,
            Some((head, rest)) => self.0.get(head).is_some_and(|c| c.contains(rest)),
        }
    }

    pub fn insert(&mut self, path: &[String]) {
        if let Some((head, rest)) = path.split_first() {
            self.0.entry(head.clone()).or_default().insert(rest);
        }
    }

    /// Removes a leaf path (and parents left empty by it).
    pub fn remove(&mut self, path: &[String]) {
        let Some((head, rest)) = path.split_first() else { return };
        if rest.is_empty() {
            self.0.remove(head);
            return;
        }
        if let Some(child) = self.0.get_mut(head) {
            child.remove(rest);
            if child.is_empty() {
                self.0.remove(head);
            }
        }
    }
}

fn object_fields(map: &Map<String, Value>) -> FieldSet {
    let mut set = FieldSet::default();
    for (k, v) in map {
        set.0.insert(format!("f:{k}"), value_fields(k, v));
    }
    set
}

/// The fields under field `name` holding `value`.
fn value_fields(name: &str, value: &Value) -> FieldSet {
    match value {
        Value::Object(map) => object_fields(map),
        Value::Array(items) if SET_LISTS.contains(&name) => {
            let mut set = FieldSet::default();
            for item in items {
                set.0.insert(format!("v:{item}"), FieldSet::default());
            }
            set
        }
        Value::Array(items) => match list_key(name, items) {
            Some(key) => {
                let mut set = FieldSet::default();
                for item in items {
                    let Some(id) = item.get(key) else { continue };
                    let mut element = match item {
                        Value::Object(map) => object_fields(map),
                        _ => FieldSet::default(),
                    };
                    element.0.insert(".".into(), FieldSet::default());
                    set.0.insert(format!("k:{}", serde_json::json!({ key: id })), element);
                }
                set
            }
            // An atomic list: one value, owned whole.
            None => FieldSet::default(),
        },
        _ => FieldSet::default(),
    }
}

/// The element of `items` a `k:`/`v:` path element names.
fn find(items: &[Value], element: &str) -> Option<usize> {
    if let Some(key) = element.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        items.iter().position(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))
    } else {
        let value: Value = serde_json::from_str(element.strip_prefix("v:")?).ok()?;
        items.iter().position(|i| *i == value)
    }
}

/// The value at `path` in `object`, if it is there.
pub fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = object;
    for element in path {
        at = match (element.as_str(), at) {
            (".", _) => at,
            (e, Value::Object(map)) if e.starts_with("f:") => map.get(&e[2..])?,
            (e, Value::Array(items)) => &items[find(items, e)?],
            _ => return None,
        };
    }
    Some(at)
}

/// Removes what `path` names from `object` (a `.` leaf removes the whole list element).
pub fn remove_at(object: &mut Value, path: &[String]) {
    let path = if path.last().is_some_and(|l| l == ".") { &path[..path.len() - 1] } else { path };
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = object;
    for element in parents {
        at = match (element.as_str(), at) {
            (e, Value::Object(map)) if e.starts_with("f:") => match map.get_mut(&e[2..]) {
                Some(v) => v,
                None => return,
            },
            (e, Value::Array(items)) => match find(items, e) {
                Some(i) => &mut items[i],
                None => return,
            },
            _ => return,
        };
    }
    match at {
        Value::Object(map) if last.starts_with("f:") => {
            map.remove(&last[2..]);
        }
        Value::Array(items) => {
            if let Some(i) = find(items, last) {
                items.remove(i);
            }
        }
        _ => {}
    }
}

/// A path as Kubernetes prints it in conflicts: `.spec.containers[name="web"].image`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[{value}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(p: &[&str]) -> Path {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn sets_follow_keyed_lists_sets_and_atomic_values() {
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "uid": "u", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "args": ["-v"]}
            ]}}},
            "status": {"replicas": 2}
        });
        let set = FieldSet::of(&deploy);
        let mut leaves: Vec<String> = set.leaves().iter().map(|p| p.join("/")).collect();
        leaves.sort();
        assert_eq!(
            leaves,
            [
                "f:metadata/f:finalizers/v:\"a\"",
                "f:metadata/f:labels/f:app",
                "f:spec/f:replicas",
                "f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/.",
                "f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:args",
                "f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:image",
                "f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:name",
            ]
        );
        assert_eq!(FieldSet::from_json(&set.to_json()), set, "fieldsV1 round trip");
        let image =
            path(&["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:image"]);
        assert_eq!(value_at(&deploy, &image), Some(&json!("web:1")));
        assert_eq!(display(&image), ".spec.template.spec.containers[name=\"web\"].image");

        let mut trimmed = deploy.clone();
        remove_at(
            &mut trimmed,
            &path(&["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"web\"}", "."]),
        );
        assert_eq!(trimmed["spec"]["template"]["spec"]["containers"], json!([]));
        remove_at(&mut trimmed, &path(&["f:metadata", "f:finalizers", "v:\"a\""]));
        assert_eq!(trimmed["metadata"]["finalizers"], json!([]));

        let mut smaller = set.clone();
        smaller.remove(&path(&["f:spec", "f:replicas"]));
        assert!(!smaller.contains(&path(&["f:spec", "f:replicas"])) && smaller.contains(&path(&["f:spec"])));
    }
}
