//! Revisions: rollback (`kubectl rollout undo`), history pruning, change-cause.

use k8s_openapi::{api::apps::v1::ReplicaSet, apimachinery::pkg::util::intstr::IntOrString};

use super::{
    fixtures::{deployment, template},
    world::World,
};
use crate::controllers::workloads::{
    CHANGE_CAUSE_ANNOTATION, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION,
    deployment::{Action, reason, status},
    hash::pod_template_hash,
};

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

fn world() -> World {
    World::new(deployment(3, "web:1", IntOrString::Int(1), IntOrString::Int(1)))
}

/// Rolls to `image`, recording `cause` the way `kubectl annotate ... kubernetes.io/change-cause`
/// does.
fn roll_to(w: &mut World, image: &str, cause: &str) {
    w.d.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CHANGE_CAUSE_ANNOTATION.into(), cause.into());
    w.set_image(image);
    w.run(60, &mut |_| {});
}

#[test]
fn rollback_reuses_the_old_replica_set_and_bumps_its_revision() {
    let mut w = world();
    roll_to(&mut w, "web:1", "v1");
    roll_to(&mut w, "web:2", "v2");
    let v1 = w.rs_for("web:1").metadata.name.clone();
    assert_eq!(annotation(w.rs_for("web:1"), REVISION_ANNOTATION), Some("1"));
    assert_eq!(annotation(w.rs_for("web:2"), REVISION_ANNOTATION), Some("2"));
    assert_eq!(annotation(w.rs_for("web:2"), CHANGE_CAUSE_ANNOTATION), Some("v2"));

    // `kubectl rollout undo`: the template of revision 1 goes back into the Deployment.
    let template = w.rs_for("web:1").spec.template.clone().expect("template");
    w.edit(|spec| spec.template = template);
    let plan = w.sync_deployment();
    assert!(plan.actions.iter().all(|a| !matches!(a, Action::CreateReplicaSet(_))), "{:?}", plan.actions);
    assert_eq!(plan.revision.as_deref(), Some("3"));
    let rs = w.rs_for("web:1");
    assert_eq!(rs.metadata.name, v1, "the old ReplicaSet is the new one again");
    assert_eq!(annotation(rs, REVISION_ANNOTATION), Some("3"));
    assert_eq!(annotation(rs, REVISION_HISTORY_ANNOTATION), Some("1"));
    assert_eq!(annotation(rs, CHANGE_CAUSE_ANNOTATION), Some("v2"), "the Deployment's annotations follow");

    w.run(60, &mut |_| {});
    assert_eq!(w.rss.len(), 2);
    assert_eq!(w.pods_with_image("web:1"), 3);
    assert_eq!(w.rs_for("web:2").spec.replicas, Some(0));
    let revision = w.d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION_ANNOTATION));
    assert_eq!(revision.map(String::as_str), Some("3"));
}

#[test]
fn history_limit_deletes_the_oldest_idle_replica_sets() {
    let mut w = world();
    w.d.spec.revision_history_limit = Some(2);
    for v in 1..=5 {
        roll_to(&mut w, &format!("web:{v}"), &format!("v{v}"));
    }
    let revisions: Vec<Option<&str>> = w.rss.iter().map(|rs| annotation(rs, REVISION_ANNOTATION)).collect();
    assert_eq!(revisions, [Some("3"), Some("4"), Some("5")], "current plus two old ones");
    let name = |image: &str| format!("web-{}", pod_template_hash(&template(&[("app", "web")], image), None));
    assert_eq!(w.deleted_rss, [name("web:1"), name("web:2")], "oldest revision first");
    assert_eq!(w.deleted_with_pods, 0);
    assert_eq!(w.pods_with_image("web:5"), 3);
}

#[test]
fn history_never_deletes_replica_sets_that_still_have_pods() {
    let mut w = world();
    w.d.spec.revision_history_limit = Some(0);
    roll_to(&mut w, "web:1", "v1");
    // Old pods linger while terminating, after the rollout already counts as complete.
    w.grace_seconds = Some(5);
    w.ready_per_tick = 1;
    roll_to(&mut w, "web:2", "v2");
    roll_to(&mut w, "web:3", "v3");
    for _ in 0..6 {
        w.step(&mut |_| {});
    }
    assert_eq!(w.deleted_with_pods, 0, "an old ReplicaSet with pods was deleted");
    assert_eq!(w.rss.len(), 1, "with limit 0 only the current one stays");
    assert_eq!(w.deleted_rss.len(), 2);
    let progressing =
        status::condition(w.d.status.as_ref().expect("status"), status::PROGRESSING).expect("cond");
    assert_eq!(progressing.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
}
