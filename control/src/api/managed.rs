//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write records who set what. An ordinary write (create, update, patch) by manager M takes
//! the fields it changed away from everybody else and gives them to M. An apply by manager A
//! declares the complete set of fields A wants to own: a field another manager owns with a
//! different value is a conflict (409 naming each field) unless the apply forces it; fields A
//! owned before and no longer applies are removed from the object unless someone else owns them.

use serde_json::{Value, json};

use super::{
    fields::{self, FieldSet, Path},
    objects::now,
    patch::strategic,
    status::ApiError,
};

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Value,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    fn new(manager: &str, operation: &str, api_version: &str, subresource: Option<&str>) -> Self {
        Entry {
            manager: manager.to_owned(),
            operation: operation.to_owned(),
            api_version: api_version.to_owned(),
            time: Value::Null,
            subresource: subresource.map(str::to_owned),
            set: FieldSet::default(),
        }
    }

    fn same_writer(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_json(),
        });
        if let Some(sub) = &self.subresource {
            v["subresource"] = json!(sub);
        }
        v
    }
}

fn entries(object: &Value) -> Vec<Entry> {
    let list = object.pointer("/metadata/managedFields").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|e| {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            Entry {
                manager: text("manager"),
                operation: text("operation"),
                api_version: text("apiVersion"),
                time: e.get("time").cloned().unwrap_or(Value::Null),
                subresource: e.get("subresource").and_then(Value::as_str).map(str::to_owned),
                set: FieldSet::from_json(e.get("fieldsV1").unwrap_or(&Value::Null)),
            }
        })
        .collect()
}

/// Writes `entries` (those still owning something) into the object.
fn store(object: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries.iter().filter(|e| !e.set.is_empty()).map(Entry::to_json).collect();
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    if list.is_empty() {
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
    } else {
        object["metadata"]["managedFields"] = Value::Array(list);
    }
}

/// Who wrote, as recorded in `managedFields`.
#[derive(Debug, Clone)]
pub struct Writer {
    pub manager: String,
    pub api_version: String,
    /// `scale`, `status`, or `None` for the object itself.
    pub subresource: Option<String>,
}

/// Records an ordinary write: `old` (none for a create) became `new`; the fields that changed
/// are the writer's now. Ownership is carried over from `old`.
pub fn record_update(old: Option<&Value>, new: &mut Value, writer: &Writer) {
    let new_set = FieldSet::of(new);
    let Some(old) = old else {
        // A create: the writer set every field.
        let mut mine =
            Entry::new(&writer.manager, "Update", &writer.api_version, writer.subresource.as_deref());
        mine.set = new_set;
        mine.time = json!(now());
        store(new, vec![mine]);
        return;
    };
    let mut list = entries(old);
    let old_set = FieldSet::of(old);
    let changed: Vec<Path> = new_set
        .leaves()
        .into_iter()
        .filter(|p| fields::value_at(old, p) != fields::value_at(new, p))
        .collect();
    let removed: Vec<Path> = old_set.leaves().into_iter().filter(|p| !new_set.contains(p)).collect();
    if changed.is_empty() && removed.is_empty() {
        store(new, list);
        return;
    }
    let me = Entry::new(&writer.manager, "Update", &writer.api_version, writer.subresource.as_deref());
    let mut mine = match list.iter().position(|e| e.same_writer(&me)) {
        Some(i) => list.remove(i),
        None => me,
    };
    for entry in list.iter_mut().chain(std::iter::once(&mut mine)) {
        for p in changed.iter().chain(&removed) {
            entry.set.remove(p);
        }
    }
    for p in &changed {
        mine.set.insert(p);
    }
    mine.time = json!(now());
    mine.api_version = writer.api_version.clone();
    list.push(mine);
    store(new, list);
}

/// Server-side apply of `config` by `writer` onto `live` (none: the object does not exist yet).
/// Returns the object to store (before defaulting and validation).
pub fn apply(live: Option<&Value>, config: &Value, writer: &Writer, force: bool) -> Result<Value, ApiError> {
    let applied = FieldSet::of(config);
    let me = Entry::new(&writer.manager, "Apply", &writer.api_version, writer.subresource.as_deref());
    let Some(live) = live else {
        let mut object = config.clone();
        let mut mine = me;
        mine.set = applied;
        mine.time = json!(now());
        store(&mut object, vec![mine]);
        return Ok(object);
    };
    let mut list = entries(live);
    let mut mine = match list.iter().position(|e| e.same_writer(&me)) {
        Some(i) => list.remove(i),
        None => me,
    };
    // Conflicts: fields the config sets to something other than what another manager set.
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for leaf in applied.leaves().into_iter().filter(|p| p.last().is_some_and(|l| l != ".")) {
        if fields::value_at(live, &leaf) == fields::value_at(config, &leaf) {
            continue;
        }
        for other in list.iter_mut().filter(|e| e.set.contains(&leaf)) {
            if force {
                other.set.remove(&leaf);
            } else {
                conflicts.push((other.manager.clone(), fields::display(&leaf)));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(ApiError::apply_conflicts(&conflicts));
    }
    // Fields this manager stopped applying go, unless another manager still owns them.
    let mut object = live.clone();
    for leaf in mine.set.leaves().into_iter().filter(|p| !applied.contains(p)) {
        let owned_elsewhere = |p: &[String]| list.iter().any(|e| e.set.contains(p));
        // A list element stays while anybody owns anything in it.
        let target = if leaf.last().is_some_and(|l| l == ".") { &leaf[..leaf.len() - 1] } else { &leaf[..] };
        if !owned_elsewhere(target) {
            fields::remove_at(&mut object, &leaf);
        }
    }
    let mut patch = config.clone();
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    strategic(&mut object, &patch);
    mine.set = applied;
    mine.time = json!(now());
    mine.api_version = writer.api_version.clone();
    list.push(mine);
    store(&mut object, list);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "apps/v1";

    fn writer(manager: &str) -> Writer {
        Writer { manager: manager.into(), api_version: V.into(), subresource: None }
    }

    fn owners(object: &Value) -> Vec<(String, String, Vec<String>)> {
        entries(object)
            .into_iter()
            .map(|e| (e.manager, e.operation, e.set.leaves().iter().map(|p| fields::display(p)).collect()))
            .collect()
    }

    #[test]
    fn apply_owns_conflicts_forces_and_prunes() {
        let config = json!({"apiVersion": V, "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"replicas": 2, "paused": false}});
        let created = apply(None, &config, &writer("alice"), false).expect("create");
        assert_eq!(
            owners(&created),
            [(
                "alice".into(),
                "Apply".into(),
                vec![".metadata.labels.app".into(), ".spec.paused".into(), ".spec.replicas".into()]
            )]
        );

        // An ordinary write (kubectl scale) takes spec.replicas.
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&created), &mut scaled, &writer("kubectl-scale"));
        assert_eq!(
            owners(&scaled)[1],
            ("kubectl-scale".into(), "Update".into(), vec![".spec.replicas".into()])
        );

        // Re-applying replicas: 2 now conflicts with the scaler's 5.
        let err = apply(Some(&scaled), &config, &writer("alice"), false).expect_err("conflict");
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"kubectl-scale\"") && err.message.contains(".spec.replicas"),
            "{}",
            err.message
        );
        // Agreeing with the scaler's value is no conflict: both own it.
        let mut agree = config.clone();
        agree["spec"]["replicas"] = json!(5);
        let shared = apply(Some(&scaled), &agree, &writer("alice"), false).expect("shared");
        assert_eq!(shared["spec"]["replicas"], 5);
        // Forcing takes the field over.
        let forced = apply(Some(&scaled), &config, &writer("alice"), true).expect("forced");
        assert_eq!(forced["spec"]["replicas"], 2);
        assert!(owners(&forced).iter().all(|(m, _, _)| m != "kubectl-scale"), "{:?}", owners(&forced));

        // Dropping a field from the config removes it; a field someone else owns stays.
        let mut labelled = forced.clone();
        labelled["metadata"]["labels"]["team"] = json!("a");
        record_update(Some(&forced), &mut labelled, &writer("kubectl-label"));
        let smaller = json!({"apiVersion": V, "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let pruned = apply(Some(&labelled), &smaller, &writer("alice"), false).expect("apply");
        assert!(pruned["spec"].get("paused").is_none(), "{pruned}");
        assert!(pruned["metadata"]["labels"].get("app").is_none(), "{pruned}");
        assert_eq!(pruned["metadata"]["labels"]["team"], "a");
    }
}
