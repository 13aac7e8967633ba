//! Victim selection through [`Cluster::preempt`] and nominated pods through
//! [`Cluster::schedule`]: minimal victims, budget preference, `Never`, reserved room.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::{
    Budget, Cluster,
    testing::{container, node_from, pod},
};

/// A pod requesting `cpu` with `priority` (as admission would have set it).
fn prio(name: &str, cpu: &str, priority: i32) -> Pod {
    pod(name, json!({"priority": priority, "containers": [container(cpu, "10Mi")]}))
}

/// Nodes of `cpu` each, with `pods` placed: (node, pod).
fn cluster(nodes: &[(&str, &str)], pods: &[(&str, Pod)]) -> Cluster {
    let mut c = Cluster::new();
    for (name, cpu) in nodes {
        c.upsert_node(node_from(name, json!({"status": {"allocatable": {"cpu": cpu}}})));
    }
    for (node, p) in pods {
        c.add_pod(node, p);
    }
    c
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("default/{n}")).collect()
}

#[test]
fn only_as_many_lower_priority_pods_as_needed_and_the_least_important_go() {
    let c = cluster(
        &[("n1", "4")],
        &[
            ("n1", prio("low-a", "1", 1)),
            ("n1", prio("low-b", "1", 2)),
            ("n1", prio("mid", "1", 5)),
            ("n1", prio("high", "1", 100)),
        ],
    );
    let preemptor = prio("p", "2", 50);
    assert!(c.schedule(&preemptor).is_err(), "the node is full");
    let plan = c.preempt(&preemptor, &[]).expect("a node after preemption");
    assert_eq!(plan.node, "n1");
    assert_eq!(plan.victims, keys(&["low-b", "low-a"]), "the two least important, no more");
    assert_eq!(plan.budget_violations, 0);
    // Needing 4 cpu, the equal-or-higher one blocks any plan.
    assert_eq!(c.preempt(&prio("p", "4", 50), &[]), None);
}

#[test]
fn equal_priority_never_preempts_and_never_policy_waits() {
    let mut c = cluster(&[("n1", "1")], &[("n1", prio("peer", "1", 10))]);
    assert!(!c.could_preempt(&prio("p", "1", 10)), "nobody is less important");
    assert_eq!(c.preempt(&prio("p", "1", 10), &[]), None, "equal priority is no victim");
    c.add_pod("n1", &prio("lesser", "0", 9));
    assert!(c.could_preempt(&prio("p", "1", 10)));
    c.remove_pod("default", "lesser");
    assert!(!c.could_preempt(&prio("p", "1", 10)), "priorities are counted out again");
    let mut never = prio("p", "1", 1000);
    never.spec.as_mut().expect("spec").preemption_policy = Some("Never".into());
    assert!(!super::may_preempt(&never));
    assert_eq!(c.preempt(&never, &[]), None);
    assert!(c.preempt(&prio("p", "1", 1000), &[]).is_some());
}

#[test]
fn nodes_whose_victims_break_fewer_budgets_win_then_lower_victim_priority_then_fewer() {
    let c = cluster(
        &[("a", "2"), ("b", "2")],
        &[("a", prio("guarded", "2", 1)), ("b", prio("free-1", "1", 3)), ("b", prio("free-2", "1", 3))],
    );
    let preemptor = prio("p", "2", 100);
    // Without budgets, node a costs one victim of priority 1, node b two of priority 3.
    let plan = c.preempt(&preemptor, &[]).expect("plan");
    assert_eq!((plan.node.as_str(), plan.victims.clone()), ("a", keys(&["guarded"])));
    // A budget allowing no disruption of `guarded` sends the preemptor to b.
    let budget = Budget { allowed: 0, pods: BTreeSet::from(["default/guarded".to_owned()]) };
    let plan = c.preempt(&preemptor, &[budget]).expect("plan");
    assert_eq!((plan.node.as_str(), plan.budget_violations), ("b", 0));
    assert_eq!(plan.victims, keys(&["free-1", "free-2"]));
    // One allowed disruption over all three: a's single victim is fine, b's second is not.
    let all = Budget { allowed: 1, pods: keys(&["guarded", "free-1", "free-2"]).into_iter().collect() };
    let plan = c.preempt(&preemptor, &[all]).expect("plan");
    assert_eq!((plan.node.as_str(), plan.budget_violations), ("a", 0));
    // With none allowed, both nodes break budgets; a breaks fewer and says so.
    let none = Budget { allowed: 0, pods: keys(&["guarded", "free-1", "free-2"]).into_iter().collect() };
    let plan = c.preempt(&preemptor, &[none]).expect("plan");
    assert_eq!((plan.node.as_str(), plan.budget_violations), ("a", 1));

    // Same priority everywhere: fewer victims win.
    let c = cluster(
        &[("a", "2"), ("b", "2")],
        &[("a", prio("a-1", "1", 1)), ("a", prio("a-2", "1", 1)), ("b", prio("b-1", "2", 1))],
    );
    let plan = c.preempt(&preemptor, &[]).expect("plan");
    assert_eq!(plan.victims, keys(&["b-1"]));
}

#[test]
fn reprieve_keeps_budgeted_pods_when_others_suffice() {
    // Both low pods could go; only one must. The budgeted one is tried back first and stays.
    let c = cluster(&[("n1", "2")], &[("n1", prio("budgeted", "1", 5)), ("n1", prio("plain", "1", 1))]);
    let budget = Budget { allowed: 0, pods: BTreeSet::from(["default/budgeted".to_owned()]) };
    let plan = c.preempt(&prio("p", "1", 10), &[budget]).expect("plan");
    assert_eq!((plan.victims, plan.budget_violations), (keys(&["plain"]), 0));
}

#[test]
fn untolerated_taints_are_no_candidates() {
    let mut c = cluster(&[], &[]);
    c.upsert_node(node_from(
        "tainted",
        json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}, "status": {"allocatable": {"cpu": "1"}}}),
    ));
    c.add_pod("tainted", &prio("low", "1", 0));
    assert_eq!(c.preempt(&prio("p", "1", 10), &[]), None);
}

#[test]
fn room_nominated_to_a_pod_is_kept_from_lower_and_equal_priority_pods() {
    let mut c = cluster(&[("n1", "2")], &[("n1", prio("running", "1", 0))]);
    let nominee = prio("nominee", "1", 10);
    c.nominate("n1", &nominee);
    assert_eq!(c.nominated_node("default", "nominee"), Some("n1"));
    let err = c.schedule(&prio("lower", "1", 5)).expect_err("the room is reserved").to_string();
    assert_eq!(err, "0/1 nodes are available: 1 Insufficient cpu.");
    assert!(c.schedule(&prio("equal", "1", 10)).is_err());
    assert_eq!(c.schedule(&prio("higher", "1", 11)).as_deref(), Ok("n1"));
    assert!(c.fits_on("n1", &nominee), "the nominee itself fits");
    assert!(c.unnominate("default", "nominee"));
    assert_eq!(c.schedule(&prio("lower", "1", 5)).as_deref(), Ok("n1"));
}
