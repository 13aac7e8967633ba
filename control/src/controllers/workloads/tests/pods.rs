//! Pod helpers, selectors and the resolution of a Deployment's settings.

use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
    util::intstr::IntOrString,
};

use super::fixtures::{deleting, deployment, labels, phase, pod, ready, recreate_deployment, t};
use crate::controllers::workloads::{
    deployment::{Strategy, fenceposts, settings},
    pods::{is_active, is_available, is_ready, next_available_check},
    selector::matches,
};

#[test]
fn active_means_not_finished_and_not_deleting() {
    assert!(is_active(&pod("a", &[])));
    assert!(is_active(&phase(pod("a", &[]), "Pending")));
    assert!(!is_active(&phase(pod("a", &[]), "Succeeded")));
    assert!(!is_active(&phase(pod("a", &[]), "Failed")));
    assert!(!is_active(&deleting(pod("a", &[]))));
}

#[test]
fn available_after_min_ready_seconds_of_readiness() {
    let p = ready(pod("a", &[]), t(100));
    assert!(is_ready(&p));
    assert!(!is_ready(&pod("a", &[])));
    assert!(is_available(&p, 0, t(100)));
    assert!(!is_available(&p, 10, t(109)));
    assert!(is_available(&p, 10, t(110)));
    assert!(!is_available(&pod("a", &[]), 0, t(500)));
}

#[test]
fn next_available_check_names_the_moment_of_availability() {
    let p = ready(pod("a", &[]), t(100));
    assert_eq!(next_available_check(&p, 10, t(103)), Some(t(110)));
    assert!(is_available(&p, 10, t(110)), "at the named time it is available");
    assert_eq!(next_available_check(&p, 10, t(110)), None);
    assert_eq!(next_available_check(&p, 0, t(100)), None);
    assert_eq!(next_available_check(&pod("a", &[]), 10, t(100)), None, "not ready: an event will come");
}

fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn exprs(reqs: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector { match_labels: None, match_expressions: Some(reqs) }
}

#[test]
fn selector_operators() {
    let l = labels(&[("app", "web"), ("tier", "front")]);
    let has = |s: LabelSelector| matches(&s, Some(&l));
    assert!(has(exprs(vec![expr("app", "In", &["web", "api"])])));
    assert!(!has(exprs(vec![expr("app", "In", &["api"])])));
    assert!(has(exprs(vec![expr("app", "NotIn", &["api"])])));
    assert!(!has(exprs(vec![expr("app", "NotIn", &["web"])])));
    assert!(has(exprs(vec![expr("zone", "NotIn", &["a"])])), "a missing label is not in any set");
    assert!(has(exprs(vec![expr("tier", "Exists", &[])])));
    assert!(!has(exprs(vec![expr("zone", "Exists", &[])])));
    assert!(has(exprs(vec![expr("zone", "DoesNotExist", &[])])));
    assert!(!has(exprs(vec![expr("tier", "DoesNotExist", &[])])));
    assert!(!has(exprs(vec![expr("app", "Like", &["web"])])), "unknown operator matches nothing");
    assert!(!has(exprs(vec![expr("app", "In", &[])])), "In without values matches nothing");
    let both = LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        match_expressions: Some(vec![expr("tier", "In", &["back"])]),
    };
    assert!(!has(both), "every term must hold");
}

#[test]
fn empty_selector_matches_nothing() {
    let l = labels(&[("app", "web")]);
    assert!(!matches(&LabelSelector::default(), Some(&l)));
    assert!(!matches(
        &LabelSelector { match_labels: Some(labels(&[])), match_expressions: Some(vec![]) },
        Some(&l)
    ));
    let s = LabelSelector { match_labels: Some(labels(&[("app", "web")])), match_expressions: None };
    assert!(matches(&s, Some(&l)));
    assert!(!matches(&s, None));
}

#[test]
fn fenceposts_round_surge_up_and_unavailable_down() {
    let pct = |s: &str| IntOrString::String(s.into());
    assert_eq!(fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10), (3, 2));
    assert_eq!(fenceposts(None, None, 4), (1, 1), "default 25%/25%");
    assert_eq!(fenceposts(Some(&pct("50%")), Some(&pct("50%")), 5), (3, 2));
    assert_eq!(fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 5), (2, 0));
    assert_eq!(fenceposts(Some(&pct("0%")), Some(&pct("0%")), 5), (0, 1), "never both zero");
    assert_eq!(fenceposts(Some(&pct("10%")), Some(&pct("10%")), 3), (1, 0), "10% of 3: up 1, down 0");
    assert_eq!(fenceposts(Some(&pct("nonsense")), None, 8), (2, 2), "invalid counts as the default");
}

#[test]
fn settings_apply_defaults_and_limits() {
    let mut d = deployment(4, "web:1", IntOrString::Int(1), IntOrString::Int(9));
    let s = settings(&d);
    assert_eq!((s.replicas, s.max_surge, s.max_unavailable), (4, 1, 4), "maxUnavailable capped at replicas");
    assert_eq!(s.strategy, Strategy::RollingUpdate);
    assert_eq!(s.revision_history_limit, Some(10));
    assert_eq!(s.progress_deadline_seconds, Some(600));
    d.spec.replicas = Some(0);
    d.spec.progress_deadline_seconds = Some(i32::MAX);
    d.spec.revision_history_limit = Some(i32::MAX);
    let s = settings(&d);
    assert_eq!(s.max_unavailable, 0, "nothing can be unavailable of nothing");
    assert_eq!((s.progress_deadline_seconds, s.revision_history_limit), (None, None));
    let s = settings(&recreate_deployment(3, "web:1"));
    assert_eq!((s.strategy, s.max_surge, s.max_unavailable), (Strategy::Recreate, 0, 0));
}
