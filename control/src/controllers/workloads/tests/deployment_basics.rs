//! The first plan of a Deployment, special cases, and ReplicaSet ownership.

use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::{LabelSelector, Time},
    util::intstr::IntOrString,
};

use super::{
    fixtures::{deployment, labels, replica_set, t, template},
    world::World,
};
use crate::controllers::workloads::{
    CHANGE_CAUSE_ANNOTATION, DESIRED_REPLICAS_ANNOTATION, LAST_APPLIED_ANNOTATION, MAX_REPLICAS_ANNOTATION,
    POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION,
    deployment::{self, Action, claim_replica_sets, collision_count_after_conflict, reason, status},
    hash::pod_template_hash,
};

fn web(replicas: i32) -> k8s_openapi::api::apps::v1::Deployment {
    deployment(replicas, "web:1", IntOrString::String("25%".into()), IntOrString::String("25%".into()))
}

#[test]
fn first_plan_creates_the_new_replica_set_fully_described() {
    let mut d = web(3);
    d.metadata.annotations =
        Some(labels(&[(CHANGE_CAUSE_ANNOTATION, "first"), (LAST_APPLIED_ANNOTATION, "{}")]));
    let plan = deployment::plan(&d, &[], &[], t(0));
    let [Action::CreateReplicaSet(rs)] = plan.actions.as_slice() else { panic!("{:?}", plan.actions) };
    let hash = pod_template_hash(&d.spec.template, None);
    assert_eq!(rs.metadata.name, Some(format!("web-{hash}")));
    assert_eq!(rs.metadata.namespace.as_deref(), Some("ns"));
    let with_hash = labels(&[("app", "web"), (POD_TEMPLATE_HASH_LABEL, &hash)]);
    assert_eq!(rs.metadata.labels.as_ref(), Some(&with_hash));
    assert_eq!(rs.spec.selector.match_labels.as_ref(), Some(&with_hash));
    let template_labels =
        rs.spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref());
    assert_eq!(template_labels, Some(&with_hash));
    let annotations = rs.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get(REVISION_ANNOTATION).map(String::as_str), Some("1"));
    assert_eq!(annotations.get(DESIRED_REPLICAS_ANNOTATION).map(String::as_str), Some("3"));
    assert_eq!(annotations.get(MAX_REPLICAS_ANNOTATION).map(String::as_str), Some("4"), "3 + ceil(25% of 3)");
    assert_eq!(annotations.get(CHANGE_CAUSE_ANNOTATION).map(String::as_str), Some("first"));
    assert!(!annotations.contains_key(LAST_APPLIED_ANNOTATION));
    let owner = rs.metadata.owner_references.as_deref().and_then(<[_]>::first).expect("owner");
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Deployment", "uid-deploy-web"));
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    assert_eq!(rs.spec.replicas, Some(3), "nothing runs yet, so it may start at full size");
    assert_eq!(plan.revision.as_deref(), Some("1"));
    let progressing = status::condition(&plan.status, status::PROGRESSING).expect("Progressing");
    assert_eq!(progressing.reason.as_deref(), Some(reason::NEW_RS_CREATED));
    assert_eq!(progressing.last_update_time, Some(Time(t(0))));
    let available = status::condition(&plan.status, status::AVAILABLE).expect("Available");
    assert_eq!(available.status.as_deref(), Some("False"));
    assert_eq!(plan.status.observed_generation, Some(1));
}

#[test]
fn a_fresh_deployment_rolls_out_and_reports_completion() {
    let mut w = World::new(web(3));
    w.run(20, &mut |_| {});
    let st = w.d.status.clone().unwrap_or_default();
    assert_eq!((st.replicas, st.updated_replicas, st.available_replicas), (Some(3), Some(3), Some(3)));
    assert_eq!(st.unavailable_replicas, Some(0));
    let progressing = status::condition(&st, status::PROGRESSING).expect("Progressing");
    assert_eq!(progressing.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
    assert_eq!(progressing.last_transition_time, Some(Time(t(0))), "True all along: no transition");
    let available = status::condition(&st, status::AVAILABLE).expect("Available");
    assert_eq!(available.reason.as_deref(), Some(reason::MINIMUM_REPLICAS_AVAILABLE));
    let last = w.last.clone().expect("planned");
    assert!(last.actions.is_empty(), "a finished rollout is quiet: {:?}", last.actions);
    assert!(!last.status_changed(&w.d));
    assert_eq!(last.next_check, None);
}

#[test]
fn an_empty_selector_does_nothing_but_acknowledge_the_spec() {
    let mut d = web(3);
    d.spec.selector = LabelSelector::default();
    d.metadata.generation = Some(4);
    let plan = deployment::plan(&d, &[], &[], t(0));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.status.observed_generation, Some(4));
}

#[test]
fn a_deployment_being_deleted_only_reports() {
    let mut d = web(3);
    d.metadata.deletion_timestamp = Some(Time(t(0)));
    let plan = deployment::plan(&d, &[], &[], t(0));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.status.replicas, Some(0));
}

#[test]
fn a_hash_collision_bumps_the_collision_count_and_then_picks_another_name() {
    let d = web(3);
    let hash = pod_template_hash(&d.spec.template, None);
    // One of its own ReplicaSets holds the name with another template.
    let mut squatter = replica_set(&format!("web-{hash}"), 0);
    squatter.spec.template = Some(template(&[("app", "web")], "other:1"));
    squatter.metadata.owner_references = Some(vec![deployment::controller_ref(&d)]);
    let mut w = World::new(d);
    w.rss.push(squatter);
    let plan = w.sync_deployment();
    assert!(plan.actions.iter().all(|a| !matches!(a, Action::CreateReplicaSet(_))));
    assert_eq!(plan.status.collision_count, Some(1));
    let plan = w.sync_deployment();
    let created: Vec<&str> =
        plan.actions.iter().filter(|a| matches!(a, Action::CreateReplicaSet(_))).map(Action::name).collect();
    let renamed = format!("web-{}", pod_template_hash(&w.d.spec.template, Some(1)));
    assert_eq!(created, [renamed.as_str()]);
}

#[test]
fn conflict_on_create_tells_own_replica_set_from_a_stranger() {
    let d = web(3);
    let mut stranger = replica_set("web-x", 0);
    assert_eq!(collision_count_after_conflict(&d, &stranger), Some(1));
    stranger.metadata.owner_references = Some(vec![deployment::controller_ref(&d)]);
    stranger.spec.template = Some(d.spec.template.clone());
    assert_eq!(collision_count_after_conflict(&d, &stranger), None, "ours, current template: just wait");
}

#[test]
fn claims_replica_sets_like_pods() {
    let d = web(3);
    let rs = |name: &str, app: &str, owned: bool| {
        let mut rs = replica_set(name, 1);
        rs.metadata.labels = Some(labels(&[("app", app)]));
        rs.metadata.owner_references = owned.then(|| vec![deployment::controller_ref(&d)]);
        rs
    };
    let (own, orphan, stray, other) = (
        rs("own", "web", true),
        rs("orphan", "web", false),
        rs("stray", "db", true),
        rs("other", "db", false),
    );
    let claimed = claim_replica_sets(&d, &[&own, &orphan, &stray, &other]);
    assert_eq!(claimed.owned, ["own", "orphan"]);
    assert_eq!(claimed.adopt, ["orphan"]);
    assert_eq!(claimed.release, ["stray"]);
}

#[test]
fn waits_for_min_ready_seconds_with_a_precise_wake_up() {
    let mut d = web(2);
    d.spec.min_ready_seconds = Some(10);
    let mut w = World::new(d);
    // Creates the ReplicaSet and its pods; they turn ready at t(1).
    w.step(&mut |_| {});
    let plan = w.sync_deployment();
    assert_eq!((plan.status.ready_replicas, plan.status.available_replicas), (Some(2), Some(0)));
    assert_eq!(plan.next_check, Some(t(11)), "when the pods have been ready for 10s, before the deadline");
    w.now = t(11);
    let plan = w.sync_deployment();
    assert_eq!(plan.status.available_replicas, Some(2));
    assert_eq!(w.rollout_done(), Ok(true));
}
