//! The Progressing condition: deadline, pause and resume.

use jiff::SignedDuration;
use k8s_openapi::{api::apps::v1::DeploymentCondition, apimachinery::pkg::util::intstr::IntOrString};

use super::{fixtures::deployment, world::World};
use crate::controllers::workloads::deployment::{Action, reason, status};

fn progressing(w: &World) -> DeploymentCondition {
    let st = w.d.status.clone().unwrap_or_default();
    status::condition(&st, status::PROGRESSING).cloned().expect("Progressing condition")
}

fn world(deadline: i32) -> World {
    let mut d = deployment(5, "web:1", IntOrString::Int(1), IntOrString::Int(1));
    d.spec.progress_deadline_seconds = Some(deadline);
    let mut w = World::new(d);
    w.run(30, &mut |_| {});
    w
}

#[test]
fn a_stuck_rollout_exceeds_its_deadline() {
    let mut w = world(30);
    w.broken_image = Some("web:2".into());
    w.set_image("web:2");
    // Let it move until it is stuck: old pods down to the availability floor, new ones never ready.
    let mut stuck_plan = None;
    for _ in 0..10 {
        let plan = w.step(&mut |w| assert!(w.available() >= 4, "availability floor"));
        if plan.actions.is_empty() {
            stuck_plan = Some(plan);
            break;
        }
    }
    let stuck = stuck_plan.expect("the rollout gets stuck");
    let c = progressing(&w);
    assert_eq!(c.status.as_deref(), Some("True"));
    let last_update = c.last_update_time.clone().expect("lastUpdateTime").0;
    let deadline = last_update.checked_add(SignedDuration::from_secs(30)).expect("in range");
    assert_eq!(stuck.next_check, Some(deadline), "woken exactly at the deadline");
    assert_eq!(w.rollout_done(), Ok(false));

    // Just before the deadline nothing changes; at it, the rollout fails.
    w.now = deadline.checked_sub(SignedDuration::from_secs(1)).expect("in range");
    w.sync_deployment();
    assert_eq!(progressing(&w).status.as_deref(), Some("True"));
    w.now = deadline;
    let plan = w.sync_deployment();
    let c = progressing(&w);
    assert_eq!((c.status.as_deref(), c.reason.as_deref()), (Some("False"), Some(reason::TIMED_OUT)));
    assert_eq!(c.last_transition_time.map(|t| t.0), Some(deadline));
    assert_eq!(plan.next_check, None, "nothing left to wait for");
    assert!(w.rollout_done().is_err(), "kubectl rollout status fails");
    let available = status::condition(&plan.status, status::AVAILABLE).expect("Available");
    assert_eq!(available.status.as_deref(), Some("True"), "four old pods still serve");

    // A fixed image is a new rollout, and progress resumes.
    w.set_image("web:3");
    w.run(60, &mut |_| {});
    assert_eq!(progressing(&w).reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
}

#[test]
fn progress_moves_last_update_time_but_not_last_transition_time() {
    let mut w = world(600);
    w.ready_per_tick = 1;
    w.set_image("web:2");
    let first = {
        w.step(&mut |_| {});
        progressing(&w)
    };
    assert_eq!(first.reason.as_deref(), Some(reason::NEW_RS_CREATED));
    w.step(&mut |_| {});
    w.step(&mut |_| {});
    let later = progressing(&w);
    assert_eq!(later.reason.as_deref(), Some(reason::REPLICA_SET_UPDATED));
    assert!(later.last_update_time > first.last_update_time);
    assert_eq!(later.last_transition_time, first.last_transition_time);
}

#[test]
fn paused_deployments_scale_but_do_not_roll_out() {
    let mut w = world(30);
    w.edit(|spec| spec.paused = Some(true));
    w.set_image("web:2");
    let plan = w.sync_deployment();
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(progressing(&w).reason.as_deref(), Some(reason::PAUSED));
    assert_eq!(progressing(&w).status.as_deref(), Some("Unknown"));

    w.edit(|spec| spec.replicas = Some(7));
    let plan = w.sync_deployment();
    assert!(matches!(plan.actions.as_slice(), [Action::UpdateReplicaSet(rs)] if rs.spec.replicas == Some(7)));

    // Paused far beyond the deadline: resuming restarts the clock instead of failing.
    w.tick(3600);
    w.edit(|spec| spec.paused = Some(false));
    let plan = w.sync_deployment();
    assert!(plan.actions.iter().any(|a| matches!(a, Action::CreateReplicaSet(_))), "{:?}", plan.actions);
    assert_eq!(progressing(&w).status.as_deref(), Some("True"));
    w.run(60, &mut |_| {});
    assert_eq!(w.pods_with_image("web:2"), 7);
}
