//! Deletion semantics: DeleteOptions, preconditions, finalizers and graceful pod deletion.

use serde_json::{Value, json};

use super::{Params, objects::now, status::ApiError};

/// What a DELETE asked for (query parameters, or a DeleteOptions body).
#[derive(Debug, Default)]
pub struct Options {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<u64>,
}

impl Options {
    pub fn parse(params: &Params, body: &[u8]) -> Result<Self, ApiError> {
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("DeleteOptions is not valid JSON: {e}")))?
        };
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
        Ok(Self {
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

pub fn plan(kind: &str, object: &mut Value, options: &Options) -> Plan {
    let has_finalizers = !finalizers(object).is_empty();
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
        return Plan::AlreadyMarked;
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
}
