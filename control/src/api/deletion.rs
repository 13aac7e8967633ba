//! Deletion semantics: DeleteOptions, preconditions, finalizers, graceful pod deletion, and the
//! propagation policy: `Orphan` and `Foreground` keep the object (with the `orphan` or
//! `foregroundDeletion` finalizer) until the garbage collector has released or deleted its
//! dependents; `Background` deletes it now and leaves the dependents to the collector.

use serde_json::{Value, json};

use super::{Params, objects::now, status::ApiError};

/// The finalizer an `Orphan` deletion waits on.
pub const ORPHAN: &str = "orphan";
/// The finalizer a `Foreground` deletion waits on.
pub const FOREGROUND: &str = "foregroundDeletion";

/// What happens to an object's dependents (objects naming it in `ownerReferences`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now; the garbage collector deletes the dependents afterwards.
    #[default]
    Background,
    /// Delete the dependents first, then the object.
    Foreground,
    /// Keep the dependents, without the reference to the object.
    Orphan,
}

impl Propagation {
    fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "Background" => Ok(Self::Background),
            "Foreground" => Ok(Self::Foreground),
            "Orphan" => Ok(Self::Orphan),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy {other:?} is not one of Background, Foreground, Orphan"
            ))),
        }
    }

    fn finalizer(self) -> Option<&'static str> {
        match self {
            Self::Background => None,
            Self::Foreground => Some(FOREGROUND),
            Self::Orphan => Some(ORPHAN),
        }
    }
}

/// What a DELETE asked for (query parameters, or a DeleteOptions body).
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<u64>,
    pub propagation: Propagation,
}

impl Options {
    /// From the query and a DeleteOptions body (`Null` if there is none).
    pub fn parse(params: &Params, body: &Value) -> Result<Self, ApiError> {
        let grace = match params.get("gracePeriodSeconds") {
            Some(g) => Some(
                g.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
            ),
            None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
        };
        if grace.is_some_and(|g| g < 0) {
            return Err(ApiError::bad_request("gracePeriodSeconds must not be negative"));
        }
        let rv = body.pointer("/preconditions/resourceVersion").and_then(Value::as_str);
        let orphan = match params.get("orphanDependents") {
            Some(o) => Some(params.flag("orphanDependents") || o.is_empty()),
            None => body.get("orphanDependents").and_then(Value::as_bool),
        };
        let policy = params.get("propagationPolicy").or_else(|| body.get("propagationPolicy")?.as_str());
        let propagation = match (policy, orphan) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("orphanDependents and propagationPolicy are exclusive"));
            }
            (Some(p), None) => Propagation::parse(p)?,
            (None, Some(true)) => Propagation::Orphan,
            (None, _) => Propagation::Background,
        };
        Ok(Self {
            propagation,
            grace_period_seconds: grace,
            precondition_uid: body.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_owned),
            precondition_rv: rv
                .map(|v| {
                    v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid precondition resourceVersion {v:?}"))
                    })
                })
                .transpose()?,
        })
    }

    pub fn check_preconditions(
        &self,
        object: &Value,
        revision: u64,
        plural: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let uid = object.pointer("/metadata/uid").and_then(Value::as_str);
        if self.precondition_uid.as_deref().is_some_and(|u| Some(u) != uid)
            || self.precondition_rv.is_some_and(|rv| rv != revision)
        {
            return Err(ApiError::conflict_message(format!(
                "Operation cannot be fulfilled on {plural} \"{name}\": Precondition failed"
            )));
        }
        Ok(())
    }
}

/// What to do with the object.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Remove it now.
    Now,
    /// Keep it, now carrying deletionTimestamp (the object passed to `plan` was changed).
    Mark,
    /// Already being deleted; nothing to write.
    AlreadyMarked,
}

pub fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// A Pod whose graceful deletion is still running on its node.
pub fn grace_pending(object: &Value) -> bool {
    object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).is_some_and(|g| g > 0)
}

/// Adds `finalizer` to the object's finalizers unless it is there; whether it was added.
pub fn add_finalizer(object: &mut Value, finalizer: &str) -> bool {
    let mut list = finalizers(object);
    if list.iter().any(|f| f == finalizer) {
        return false;
    }
    list.push(finalizer.to_owned());
    object["metadata"]["finalizers"] = json!(list);
    true
}

/// Removes `finalizer` from the object's finalizers; whether it was there.
pub fn remove_finalizer(object: &mut Value, finalizer: &str) -> bool {
    let list = finalizers(object);
    let kept: Vec<&String> = list.iter().filter(|f| *f != finalizer).collect();
    if kept.len() == list.len() {
        return false;
    }
    if kept.is_empty() {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("finalizers");
        }
    } else {
        object["metadata"]["finalizers"] = json!(kept);
    }
    true
}

/// A namespace still holding objects: marked Terminating until the namespace controller has
/// emptied it.
fn namespace_pending(kind: &str, object: &Value) -> bool {
    kind == "Namespace"
        && object.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
}

/// An object being deleted that nothing holds any more: its deletion can complete.
pub fn finished(kind: &str, object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers(object).is_empty()
        && !grace_pending(object)
        && !namespace_pending(kind, object)
}

pub fn plan(kind: &str, object: &mut Value, options: &Options) -> Plan {
    // Orphan and Foreground wait for the garbage collector, on a finalizer of their own; a later
    // delete may switch an object already waiting (as the API server allows).
    let added = options.propagation.finalizer().is_some_and(|f| add_finalizer(object, f));
    if added {
        let other = if options.propagation == Propagation::Orphan { FOREGROUND } else { ORPHAN };
        remove_finalizer(object, other);
    }
    if namespace_pending(kind, object) {
        object["status"]["phase"] = json!("Terminating");
    }
    let has_finalizers = !finalizers(object).is_empty() || namespace_pending(kind, object);
    let marked = object.pointer("/metadata/deletionTimestamp").is_some();
    // A bound pod stops gracefully on its node; an unbound one has nothing to stop.
    let grace = if kind == "Pod"
        && object.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
    {
        options
            .grace_period_seconds
            .or_else(|| object.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
            .unwrap_or(30)
    } else {
        0
    };
    if marked {
        // A second delete may only shorten a pod's grace period; grace 0 with no finalizers ends it.
        let current =
            object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
        if grace == 0 && !has_finalizers {
            return Plan::Now;
        }
        if grace < current {
            object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            return Plan::Mark;
        }
        return if added { Plan::Mark } else { Plan::AlreadyMarked };
    }
    if grace == 0 && !has_finalizers {
        return Plan::Now;
    }
    object["metadata"]["deletionTimestamp"] = json!(now());
    object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    Plan::Mark
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let opts = Options::default();
        let mut plain = json!({"metadata": {}});
        assert_eq!(plan("ConfigMap", &mut plain, &opts), Plan::Now);
        let mut finalized = json!({"metadata": {"finalizers": ["example.com/keep"]}});
        assert_eq!(plan("ConfigMap", &mut finalized, &opts), Plan::Mark);
        assert!(finalized.pointer("/metadata/deletionTimestamp").is_some());
        let mut unbound = json!({"metadata": {}, "spec": {"terminationGracePeriodSeconds": 30}});
        assert_eq!(plan("Pod", &mut unbound, &opts), Plan::Now);
        let mut bound =
            json!({"metadata": {}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}});
        assert_eq!(plan("Pod", &mut bound, &opts), Plan::Mark);
        assert_eq!(bound["metadata"]["deletionGracePeriodSeconds"], 30);
        assert_eq!(
            plan("Pod", &mut bound, &Options { grace_period_seconds: Some(0), ..Default::default() }),
            Plan::Now
        );
    }

    #[test]
    fn propagation_waits_on_its_finalizer() {
        let orphan = Options { propagation: Propagation::Orphan, ..Default::default() };
        let foreground = Options { propagation: Propagation::Foreground, ..Default::default() };
        let mut rs = json!({"metadata": {"finalizers": ["example.com/keep"]}});
        assert_eq!(plan("ReplicaSet", &mut rs, &orphan), Plan::Mark);
        assert_eq!(finalizers(&rs), ["example.com/keep", ORPHAN]);
        assert_eq!(plan("ReplicaSet", &mut rs, &orphan), Plan::AlreadyMarked);
        assert_eq!(plan("ReplicaSet", &mut rs, &foreground), Plan::Mark, "switching policy");
        assert_eq!(finalizers(&rs), ["example.com/keep", FOREGROUND]);
        assert!(remove_finalizer(&mut rs, "example.com/keep") && remove_finalizer(&mut rs, FOREGROUND));
        assert!(rs.pointer("/metadata/finalizers").is_none());

        let mut ns = json!({"metadata": {}, "spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(plan("Namespace", &mut ns, &Options::default()), Plan::Mark);
        assert_eq!(ns["status"]["phase"], "Terminating");
    }

    #[test]
    fn options_parse_the_policy_from_query_or_body() {
        let params =
            |q: &[(&str, &str)]| Params(q.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        let none = Value::Null;
        let opts = Options::parse(&params(&[("propagationPolicy", "Foreground")]), &none).expect("parse");
        assert_eq!(opts.propagation, Propagation::Foreground);
        let body = json!({"kind": "DeleteOptions", "propagationPolicy": "Orphan"});
        assert_eq!(Options::parse(&params(&[]), &body).expect("parse").propagation, Propagation::Orphan);
        let legacy = json!({"orphanDependents": true});
        assert_eq!(Options::parse(&params(&[]), &legacy).expect("parse").propagation, Propagation::Orphan);
        let bad = Options::parse(&params(&[("propagationPolicy", "Sideways")]), &none).expect_err("bad");
        assert_eq!(bad.code, 400);
    }
}
