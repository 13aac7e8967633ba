//! Scaling (`kubectl scale`), including in the middle of a rollout.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{fixtures::deployment, world::World};
use crate::controllers::workloads::{
    DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION,
    deployment::{Action, reason, status},
};

fn annotation(w: &World, image: &str, key: &str) -> Option<String> {
    w.rs_for(image).metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned()
}

#[test]
fn scaling_a_settled_deployment_resizes_its_replica_set() {
    let mut w = World::new(deployment(3, "web:1", IntOrString::Int(1), IntOrString::Int(1)));
    w.run(30, &mut |_| {});
    w.edit(|spec| spec.replicas = Some(5));
    let plan = w.sync_deployment();
    let [Action::UpdateReplicaSet(rs)] = plan.actions.as_slice() else { panic!("{:?}", plan.actions) };
    assert_eq!(rs.spec.replicas, Some(5));
    assert_eq!(annotation(&w, "web:1", DESIRED_REPLICAS_ANNOTATION).as_deref(), Some("5"));
    assert_eq!(annotation(&w, "web:1", MAX_REPLICAS_ANNOTATION).as_deref(), Some("6"));
    w.run(30, &mut |_| {});
    assert_eq!(w.pods_with_image("web:1"), 5);
    assert_eq!(w.rss.len(), 1, "scaling is not a rollout");
    let st = w.d.status.clone().unwrap_or_default();
    let progressing = status::condition(&st, status::PROGRESSING).expect("Progressing");
    assert_eq!(progressing.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
}

/// Starts a slow rollout of 5 replicas (surge 1) from web:1 to web:2 and stops midway, with both
/// ReplicaSets active.
fn midway() -> World {
    let mut w = World::new(deployment(5, "web:1", IntOrString::Int(1), IntOrString::Int(1)));
    w.run(30, &mut |_| {});
    w.ready_per_tick = 1;
    w.set_image("web:2");
    for _ in 0..3 {
        w.step(&mut |_| {});
    }
    let (old, new) = (w.rs_for("web:1").spec.replicas, w.rs_for("web:2").spec.replicas);
    assert!(old > Some(0) && new > Some(0) && new < Some(5), "midway: old {old:?}, new {new:?}");
    w
}

fn sizes(w: &World) -> (i32, i32) {
    (w.rs_for("web:1").spec.replicas.unwrap_or(0), w.rs_for("web:2").spec.replicas.unwrap_or(0))
}

#[test]
fn scaling_up_mid_rollout_spreads_the_new_replicas_proportionally() {
    let mut w = midway();
    let (old, new) = sizes(&w);
    w.edit(|spec| spec.replicas = Some(10));
    let plan = w.sync_deployment();
    assert!(plan.actions.iter().all(|a| matches!(a, Action::UpdateReplicaSet(_))), "{:?}", plan.actions);
    let (old2, new2) = sizes(&w);
    assert_eq!(old2 + new2, 11, "replicas + maxSurge");
    assert!(old2 > old && new2 > new, "both grow: {old}/{new} -> {old2}/{new2}");
    assert_eq!(annotation(&w, "web:2", DESIRED_REPLICAS_ANNOTATION).as_deref(), Some("10"));
    assert_eq!(annotation(&w, "web:1", MAX_REPLICAS_ANNOTATION).as_deref(), Some("11"));
    let mut max_pods = 0;
    w.run(200, &mut |w| max_pods = max_pods.max(w.pods.len()));
    assert!(max_pods <= 11, "{max_pods}");
    assert_eq!(w.pods_with_image("web:2"), 10);
    assert_eq!(w.pods_with_image("web:1"), 0);
}

#[test]
fn scaling_down_mid_rollout_keeps_totals() {
    let mut w = midway();
    w.edit(|spec| spec.replicas = Some(2));
    w.sync_deployment();
    let (old, new) = sizes(&w);
    assert_eq!(old + new, 3, "replicas + maxSurge");
    assert!(old >= 0 && new >= 0);
    w.sync_replica_sets(&mut |_| {});
    assert!(w.pods.len() <= 3, "{}", w.pods.len());
    w.run(200, &mut |_| {});
    assert_eq!(w.pods_with_image("web:2"), 2);
    assert_eq!(w.pods_with_image("web:1"), 0);
}

#[test]
fn scaling_to_zero_and_back() {
    let mut w = World::new(deployment(3, "web:1", IntOrString::Int(1), IntOrString::Int(1)));
    w.run(30, &mut |_| {});
    w.edit(|spec| spec.replicas = Some(0));
    w.run(30, &mut |_| {});
    assert!(w.pods.is_empty());
    w.edit(|spec| spec.replicas = Some(2));
    w.run(30, &mut |_| {});
    assert_eq!(w.pods_with_image("web:1"), 2);
    assert_eq!(w.rss.len(), 1);
}
