//! A pod's node constraints: `spec.nodeSelector` and `spec.affinity.nodeAffinity` (required
//! terms filter, preferred terms score). Parsed once per scheduling attempt, borrowing from the
//! pod, so checking a node allocates nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

/// The only field a `matchFields` requirement may name.
const NAME_FIELD: &str = "metadata.name";

/// One `matchExpressions` requirement on node labels.
#[derive(Debug, Clone, Copy)]
enum LabelOp<'p> {
    In(&'p [String]),
    NotIn(&'p [String]),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// One `matchFields` requirement on the node's name (validation allows exactly one value).
#[derive(Debug, Clone, Copy)]
enum NameOp<'p> {
    In(&'p str),
    NotIn(&'p str),
}

/// A node selector term: every requirement must hold. A term with a requirement that does not
/// parse matches no node (upstream ignores such terms rather than failing the pod).
#[derive(Debug, Clone)]
struct Term<'p> {
    labels: Vec<(&'p str, LabelOp<'p>)>,
    names: Vec<NameOp<'p>>,
    valid: bool,
}

impl<'p> Term<'p> {
    fn parse(term: &'p NodeSelectorTerm) -> Self {
        let mut valid = true;
        let mut labels = Vec::new();
        for r in term.match_expressions.iter().flatten() {
            match label_op(r) {
                Some(op) => labels.push((r.key.as_str(), op)),
                None => valid = false,
            }
        }
        let mut names = Vec::new();
        for r in term.match_fields.iter().flatten() {
            match name_op(r) {
                Some(op) => names.push(op),
                None => valid = false,
            }
        }
        // An empty term selects nothing.
        valid &= !(labels.is_empty() && names.is_empty());
        Self { labels, names, valid }
    }

    fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        self.valid
            && self.labels.iter().all(|(key, op)| label_matches(labels.get(*key).map(String::as_str), op))
            && self.names.iter().all(|op| match op {
                NameOp::In(v) => *v == name,
                NameOp::NotIn(v) => *v != name,
            })
    }
}

fn values(r: &NodeSelectorRequirement) -> &[String] {
    r.values.as_deref().unwrap_or(&[])
}

/// Parses a label requirement as `labels.NewRequirement` validates it.
fn label_op(r: &NodeSelectorRequirement) -> Option<LabelOp<'_>> {
    let values = values(r);
    let single_int = || match values {
        [v] => v.parse::<i64>().ok(),
        _ => None,
    };
    match r.operator.as_str() {
        "In" if !values.is_empty() => Some(LabelOp::In(values)),
        "NotIn" if !values.is_empty() => Some(LabelOp::NotIn(values)),
        "Exists" if values.is_empty() => Some(LabelOp::Exists),
        "DoesNotExist" if values.is_empty() => Some(LabelOp::DoesNotExist),
        "Gt" => single_int().map(LabelOp::Gt),
        "Lt" => single_int().map(LabelOp::Lt),
        _ => None,
    }
}

fn name_op(r: &NodeSelectorRequirement) -> Option<NameOp<'_>> {
    match (r.key.as_str(), r.operator.as_str(), values(r)) {
        (NAME_FIELD, "In", [v]) => Some(NameOp::In(v)),
        (NAME_FIELD, "NotIn", [v]) => Some(NameOp::NotIn(v)),
        _ => None,
    }
}

fn label_matches(value: Option<&str>, op: &LabelOp<'_>) -> bool {
    match (op, value) {
        (LabelOp::In(vs), Some(v)) => vs.iter().any(|x| x == v),
        (LabelOp::In(_), None) => false,
        (LabelOp::NotIn(vs), Some(v)) => !vs.iter().any(|x| x == v),
        (LabelOp::NotIn(_), None) => true,
        (LabelOp::Exists, v) => v.is_some(),
        (LabelOp::DoesNotExist, v) => v.is_none(),
        (LabelOp::Gt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
        (LabelOp::Lt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
        (LabelOp::Gt(_) | LabelOp::Lt(_), None) => false,
    }
}

/// Which nodes the required terms could match by name alone (upstream's NodeAffinity
/// PreFilter): DaemonSet pods name their node with `matchFields: metadata.name In [node]`, and
/// then only those nodes are examined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameSet<'p> {
    /// Some term does not restrict the name.
    All,
    /// Only these nodes (sorted, without repeats).
    Only(Vec<&'p str>),
    /// Every term restricts the name and no name satisfies them all: nothing can match.
    Conflict,
}

fn name_set<'p>(terms: &'p [NodeSelectorTerm]) -> NameSet<'p> {
    if terms.is_empty() {
        return NameSet::All;
    }
    let mut union: Vec<&str> = Vec::new();
    for term in terms {
        let mut names: Option<Vec<&str>> = None;
        for r in term.match_fields.iter().flatten() {
            if r.key == NAME_FIELD && r.operator == "In" {
                let these: Vec<&str> = values(r).iter().map(String::as_str).collect();
                names = Some(match names {
                    None => these,
                    Some(before) => before.into_iter().filter(|n| these.contains(n)).collect(),
                });
            }
        }
        match names {
            None => return NameSet::All,
            Some(names) => union.extend(names),
        }
    }
    union.sort_unstable();
    union.dedup();
    if union.is_empty() { NameSet::Conflict } else { NameSet::Only(union) }
}

/// The pod's hard constraints: `nodeSelector` and the required node affinity terms (any one
/// term must match).
#[derive(Debug, Clone, Default)]
pub(crate) struct Required<'p> {
    selector: Option<&'p BTreeMap<String, String>>,
    /// `None` when the pod has no required node affinity; an empty list matches no node.
    terms: Option<Vec<Term<'p>>>,
    pub(crate) names: Option<NameSet<'p>>,
}

impl<'p> Required<'p> {
    pub(crate) fn parse(spec: &'p PodSpec) -> Self {
        let node_affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
        let required =
            node_affinity.and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
        Self {
            selector: spec.node_selector.as_ref(),
            terms: required.map(|r| r.node_selector_terms.iter().map(Term::parse).collect()),
            names: required.map(|r| name_set(&r.node_selector_terms)),
        }
    }

    /// True when the pod constrains nodes at all (upstream skips the filter otherwise).
    pub(crate) fn is_some(&self) -> bool {
        self.selector.is_some() || self.terms.is_some()
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        let selector_ok = self.selector.is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)));
        selector_ok && self.terms.as_ref().is_none_or(|terms| terms.iter().any(|t| t.matches(labels, name)))
    }
}

/// The pod's preferred node affinity: each matching term adds its weight to a node's score.
#[derive(Debug, Clone, Default)]
pub(crate) struct Preferred<'p> {
    terms: Vec<(i64, Term<'p>)>,
}

impl<'p> Preferred<'p> {
    pub(crate) fn parse(spec: &'p PodSpec) -> Self {
        let node_affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
        let preferred =
            node_affinity.and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_ref());
        let terms = preferred
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0)
            .map(|p| (i64::from(p.weight), Term::parse(&p.preference)))
            .collect();
        Self { terms }
    }

    /// True when the pod has no preferred terms: then no node's labels need to be read.
    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The sum of the weights of the terms the node matches.
    pub(crate) fn score(&self, labels: &BTreeMap<String, String>, name: &str) -> i64 {
        self.terms.iter().filter(|(_, t)| t.matches(labels, name)).map(|(w, _)| *w).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::pod;
    use serde_json::{Value, json};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn spec_with(affinity: Value) -> PodSpec {
        let p = pod(
            "p",
            json!({"containers": [{"name": "c", "image": "i"}], "affinity": {"nodeAffinity": affinity}}),
        );
        p.spec.expect("spec")
    }

    fn required(terms: Value) -> PodSpec {
        spec_with(json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}))
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Value {
        json!({"key": key, "operator": op, "values": values})
    }

    #[test]
    fn operators() {
        let node = labels(&[("zone", "a"), ("cores", "8")]);
        let cases = [
            (expr("zone", "In", &["a", "b"]), true),
            (expr("zone", "In", &["b"]), false),
            (expr("missing", "In", &["a"]), false),
            (expr("zone", "NotIn", &["b"]), true),
            (expr("zone", "NotIn", &["a"]), false),
            (expr("missing", "NotIn", &["a"]), true),
            (expr("zone", "Exists", &[]), true),
            (expr("missing", "Exists", &[]), false),
            (expr("missing", "DoesNotExist", &[]), true),
            (expr("zone", "DoesNotExist", &[]), false),
            (expr("cores", "Gt", &["4"]), true),
            (expr("cores", "Gt", &["8"]), false),
            (expr("cores", "Lt", &["9"]), true),
            (expr("cores", "Lt", &["8"]), false),
            (expr("zone", "Gt", &["1"]), false),
            (expr("missing", "Lt", &["1"]), false),
            // Refused by validation, so the term never matches:
            (expr("zone", "In", &[]), false),
            (expr("zone", "Exists", &["a"]), false),
            (expr("cores", "Gt", &["four"]), false),
            (expr("cores", "Gt", &["1", "2"]), false),
            (expr("zone", "Near", &["a"]), false),
        ];
        for (e, want) in cases {
            let spec = required(json!([{"matchExpressions": [e.clone()]}]));
            assert_eq!(Required::parse(&spec).matches(&node, "n1"), want, "{e}");
        }
    }

    #[test]
    fn terms_are_ored_and_expressions_anded() {
        let node = labels(&[("zone", "a"), ("disk", "ssd")]);
        let both = required(
            json!([{"matchExpressions": [expr("zone", "In", &["a"]), expr("disk", "In", &["hdd"])]}]),
        );
        assert!(!Required::parse(&both).matches(&node, "n1"));
        let either = required(json!([
            {"matchExpressions": [expr("zone", "In", &["b"])]},
            {"matchExpressions": [expr("disk", "In", &["ssd"])]},
        ]));
        assert!(Required::parse(&either).matches(&node, "n1"));
        let empty = required(json!([{}]));
        assert!(!Required::parse(&empty).matches(&node, "n1"), "an empty term selects nothing");
        let none = required(json!([]));
        assert!(!Required::parse(&none).matches(&node, "n1"), "no terms select nothing");
    }

    #[test]
    fn match_fields_on_the_node_name() {
        let node = labels(&[]);
        let spec = required(json!([{"matchFields": [expr("metadata.name", "In", &["n1"])]}]));
        let r = Required::parse(&spec);
        assert!(r.matches(&node, "n1"));
        assert!(!r.matches(&node, "n2"));
        let spec = required(json!([{"matchFields": [expr("metadata.name", "NotIn", &["n1"])]}]));
        assert!(!Required::parse(&spec).matches(&node, "n1"));
        assert!(Required::parse(&spec).matches(&node, "n2"));
        let spec = required(json!([{"matchFields": [expr("metadata.uid", "In", &["n1"])]}]));
        assert!(!Required::parse(&spec).matches(&node, "n1"), "only metadata.name is a field");
    }

    #[test]
    fn node_selector_and_affinity_must_both_hold() {
        let mut spec = required(json!([{"matchExpressions": [expr("zone", "In", &["a"])]}]));
        spec.node_selector = Some(labels(&[("disk", "ssd")]));
        let r = Required::parse(&spec);
        assert!(r.matches(&labels(&[("zone", "a"), ("disk", "ssd")]), "n"));
        assert!(!r.matches(&labels(&[("zone", "a")]), "n"));
        assert!(!r.matches(&labels(&[("disk", "ssd")]), "n"));
        let plain = pod("p", json!({"containers": []})).spec.expect("spec");
        assert!(!Required::parse(&plain).is_some());
    }

    #[test]
    fn name_sets_like_upstream_prefilter() {
        // Owned, so the parsed spec can go: Some(names), or None for "all nodes".
        let names = |terms: Value| -> Result<Option<Vec<String>>, &'static str> {
            let spec = required(terms);
            match Required::parse(&spec).names.expect("required affinity") {
                NameSet::All => Ok(None),
                NameSet::Only(names) => Ok(Some(names.iter().map(|n| n.to_string()).collect())),
                NameSet::Conflict => Err("conflict"),
            }
        };
        let owned = |list: &[&str]| Ok(Some(list.iter().map(|n| n.to_string()).collect()));
        let ds = json!([{"matchFields": [expr("metadata.name", "In", &["n2", "n1"])]}]);
        assert_eq!(names(ds), owned(&["n1", "n2"]));
        let two = json!([
            {"matchFields": [expr("metadata.name", "In", &["n1"])]},
            {"matchFields": [expr("metadata.name", "In", &["n3", "n1"])]},
        ]);
        assert_eq!(names(two), owned(&["n1", "n3"]));
        let open = json!([
            {"matchFields": [expr("metadata.name", "In", &["n1"])]},
            {"matchExpressions": [expr("zone", "Exists", &[])]},
        ]);
        assert_eq!(names(open), Ok(None));
        let conflict = json!([{"matchFields": [
            expr("metadata.name", "In", &["n1"]), expr("metadata.name", "In", &["n2"])]}]);
        assert_eq!(names(conflict), Err("conflict"));
    }

    #[test]
    fn preferred_sums_matching_weights() {
        let spec = spec_with(json!({"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "preference": {"matchExpressions": [expr("zone", "In", &["a"])]}},
            {"weight": 3, "preference": {"matchExpressions": [expr("disk", "In", &["ssd"])]}},
            {"weight": 0, "preference": {"matchExpressions": [expr("zone", "Exists", &[])]}},
            {"weight": 7, "preference": {}},
        ]}));
        let p = Preferred::parse(&spec);
        assert!(!p.is_empty());
        assert_eq!(p.score(&labels(&[("zone", "a"), ("disk", "ssd")]), "n"), 8);
        assert_eq!(p.score(&labels(&[("zone", "a")]), "n"), 5);
        assert_eq!(p.score(&labels(&[]), "n"), 0);
    }
}
