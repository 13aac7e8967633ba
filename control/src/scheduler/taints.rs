//! Node taints and pod tolerations, parsed once (a node's when it is stored, a pod's once per
//! scheduling attempt) so the per-node checks compare enums and short strings only.

use k8s_openapi::api::core::v1::{Node, Toleration};

/// The taint `kubectl cordon` stands for: a cordoned node is refused unless the pod tolerates it.
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// A taint effect. Validation admits only the first three; anything else never matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    Other,
}

impl Effect {
    fn parse(s: &str) -> Self {
        match s {
            "NoSchedule" => Self::NoSchedule,
            "PreferNoSchedule" => Self::PreferNoSchedule,
            "NoExecute" => Self::NoExecute,
            _ => Self::Other,
        }
    }

    /// The effects the filter enforces; `PreferNoSchedule` only lowers a node's score.
    fn forbids_scheduling(self) -> bool {
        matches!(self, Self::NoSchedule | Self::NoExecute)
    }
}

/// One taint of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTaint {
    pub key: String,
    pub value: String,
    pub effect: Effect,
}

/// The taints in `node.spec.taints`, in order (the first untolerated one names the failure).
pub(crate) fn node_taints(node: &Node) -> Vec<NodeTaint> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    taints
        .into_iter()
        .flatten()
        .map(|t| NodeTaint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: Effect::parse(&t.effect),
        })
        .collect()
}

/// Which taint effects a toleration covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EffectMatch {
    /// No effect given: every effect.
    Any,
    Only(Effect),
    /// An effect name validation would refuse: nothing.
    Never,
}

/// How a toleration compares values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    /// `Equal` (the default): the values must be equal.
    Equal,
    /// Any value.
    Exists,
    /// `Lt`/`Gt` are behind the alpha gate `TaintTolerationComparisonOperators` (off by default
    /// upstream), so like upstream with the gate off they tolerate nothing.
    Unsupported,
}

/// One pod toleration, borrowed from the pod.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tolerance<'p> {
    /// Empty: every key.
    key: &'p str,
    operator: Operator,
    value: &'p str,
    effect: EffectMatch,
}

impl<'p> Tolerance<'p> {
    pub(crate) fn parse(t: &'p Toleration) -> Self {
        let effect = match t.effect.as_deref() {
            None | Some("") => EffectMatch::Any,
            Some(e) => match Effect::parse(e) {
                Effect::Other => EffectMatch::Never,
                known => EffectMatch::Only(known),
            },
        };
        let operator = match t.operator.as_deref() {
            None | Some("") | Some("Equal") => Operator::Equal,
            Some("Exists") => Operator::Exists,
            Some(_) => Operator::Unsupported,
        };
        Self {
            key: t.key.as_deref().unwrap_or(""),
            operator,
            value: t.value.as_deref().unwrap_or(""),
            effect,
        }
    }

    /// Upstream's `Toleration.ToleratesTaint`.
    fn tolerates(&self, key: &str, value: &str, effect: Effect) -> bool {
        let effect_ok = match self.effect {
            EffectMatch::Any => true,
            EffectMatch::Only(e) => e == effect,
            EffectMatch::Never => false,
        };
        effect_ok
            && (self.key.is_empty() || self.key == key)
            && match self.operator {
                Operator::Equal => self.value == value,
                Operator::Exists => true,
                Operator::Unsupported => false,
            }
    }
}

fn tolerated(tolerations: &[Tolerance<'_>], key: &str, value: &str, effect: Effect) -> bool {
    tolerations.iter().any(|t| t.tolerates(key, value, effect))
}

/// The first `NoSchedule`/`NoExecute` taint no toleration covers; it names the filter failure.
pub(crate) fn first_untolerated<'n>(
    taints: &'n [NodeTaint],
    tolerations: &[Tolerance<'_>],
) -> Option<&'n NodeTaint> {
    first_untolerated_where(taints, tolerations, Effect::forbids_scheduling)
}

/// The first taint whose effect `counts` that no toleration covers.
pub(crate) fn first_untolerated_where<'n>(
    taints: &'n [NodeTaint],
    tolerations: &[Tolerance<'_>],
    counts: impl Fn(Effect) -> bool,
) -> Option<&'n NodeTaint> {
    taints.iter().find(|t| counts(t.effect) && !tolerated(tolerations, &t.key, &t.value, t.effect))
}

/// How many `PreferNoSchedule` taints the pod does not tolerate (fewer scores better).
pub(crate) fn intolerable_preferences(taints: &[NodeTaint], tolerations: &[Tolerance<'_>]) -> i64 {
    let count = taints
        .iter()
        .filter(|t| {
            t.effect == Effect::PreferNoSchedule && !tolerated(tolerations, &t.key, &t.value, t.effect)
        })
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Whether the pod may go to a cordoned node (it tolerates `node.kubernetes.io/unschedulable`
/// with effect `NoSchedule`, as DaemonSet pods do).
pub(crate) fn tolerates_unschedulable(tolerations: &[Tolerance<'_>]) -> bool {
    tolerated(tolerations, UNSCHEDULABLE_TAINT_KEY, "", Effect::NoSchedule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: &str, effect: &str) -> NodeTaint {
        NodeTaint { key: key.into(), value: value.into(), effect: Effect::parse(effect) }
    }

    fn tolerations(list: serde_json::Value) -> Vec<Toleration> {
        serde_json::from_value(list).expect("tolerations")
    }

    fn check(list: &[Toleration], t: &NodeTaint) -> bool {
        let parsed: Vec<Tolerance<'_>> = list.iter().map(Tolerance::parse).collect();
        tolerated(&parsed, &t.key, &t.value, t.effect)
    }

    #[test]
    fn equal_needs_key_value_and_effect() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        let list = tolerations(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        assert!(check(&list, &t));
        let list = tolerations(json!([{"key": "dedicated", "operator": "Equal", "value": "cpu"}]));
        assert!(!check(&list, &t), "different value");
        let list = tolerations(json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]));
        assert!(!check(&list, &t), "different effect");
        let list = tolerations(json!([{"key": "other", "value": "gpu"}]));
        assert!(!check(&list, &t), "different key");
    }

    #[test]
    fn exists_and_empty_key_match_broadly() {
        let t = taint("node.kubernetes.io/unreachable", "", "NoExecute");
        let list = tolerations(json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]));
        assert!(check(&list, &t));
        let list = tolerations(json!([{"operator": "Exists"}]));
        assert!(check(&list, &t), "empty key with Exists tolerates everything");
        let list = tolerations(json!([{"operator": "Exists", "effect": "NoSchedule"}]));
        assert!(!check(&list, &t), "but only for the effect it names");
    }

    #[test]
    fn unknown_operators_and_effects_tolerate_nothing() {
        let t = taint("size", "5", "NoSchedule");
        let list = tolerations(json!([{"key": "size", "operator": "Gt", "value": "3"}]));
        assert!(!check(&list, &t));
        let list = tolerations(json!([{"key": "size", "operator": "Exists", "effect": "Sometimes"}]));
        assert!(!check(&list, &t));
    }

    #[test]
    fn first_untolerated_skips_prefer_no_schedule_and_keeps_order() {
        let taints = vec![
            taint("soft", "", "PreferNoSchedule"),
            taint("a", "1", "NoSchedule"),
            taint("b", "2", "NoExecute"),
        ];
        let list = tolerations(json!([{"key": "a", "operator": "Exists"}]));
        let parsed: Vec<Tolerance<'_>> = list.iter().map(Tolerance::parse).collect();
        assert_eq!(first_untolerated(&taints, &parsed), Some(&taints[2]));
        assert_eq!(first_untolerated(&taints, &[]), Some(&taints[1]));
        assert_eq!(first_untolerated(&taints[..1], &[]), None);
    }

    #[test]
    fn counts_intolerable_preferences() {
        let taints = vec![
            taint("x", "", "PreferNoSchedule"),
            taint("y", "", "PreferNoSchedule"),
            taint("z", "", "NoSchedule"),
        ];
        assert_eq!(intolerable_preferences(&taints, &[]), 2);
        let list = tolerations(json!([{"key": "x", "operator": "Exists", "effect": "PreferNoSchedule"}]));
        let parsed: Vec<Tolerance<'_>> = list.iter().map(Tolerance::parse).collect();
        assert_eq!(intolerable_preferences(&taints, &parsed), 1);
    }

    #[test]
    fn unschedulable_needs_a_no_schedule_toleration() {
        let ok = tolerations(
            json!([{"key": UNSCHEDULABLE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]),
        );
        let parsed: Vec<Tolerance<'_>> = ok.iter().map(Tolerance::parse).collect();
        assert!(tolerates_unschedulable(&parsed));
        let wrong = tolerations(
            json!([{"key": UNSCHEDULABLE_TAINT_KEY, "operator": "Exists", "effect": "NoExecute"}]),
        );
        let parsed: Vec<Tolerance<'_>> = wrong.iter().map(Tolerance::parse).collect();
        assert!(!tolerates_unschedulable(&parsed));
        assert!(!tolerates_unschedulable(&[]));
    }
}
