//! Recreate simulations: old and new pods never run side by side.

use super::{fixtures::recreate_deployment, world::World};
use crate::controllers::workloads::deployment::Action;

#[test]
fn recreate_never_runs_old_and_new_together() {
    let mut w = World::new(recreate_deployment(3, "web:1"));
    w.grace_seconds = Some(3);
    w.run(30, &mut |_| {});
    assert_eq!(w.pods_with_image("web:1"), 3);
    w.set_image("web:2");
    let mut overlap = Vec::new();
    let mut saw_terminating_old = false;
    w.run(30, &mut |w| {
        let (old, new) = (w.pods_with_image("web:1"), w.pods_with_image("web:2"));
        if old > 0 && new > 0 {
            overlap.push((old, new));
        }
        saw_terminating_old |= w.pods.iter().any(|p| p.metadata.deletion_timestamp.is_some());
    });
    assert!(overlap.is_empty(), "old and new pods together: {overlap:?}");
    assert!(saw_terminating_old, "the wait for terminating pods was exercised");
    assert_eq!(w.pods_with_image("web:2"), 3);
    assert_eq!(w.rs_for("web:1").spec.replicas, Some(0));
}

#[test]
fn recreate_waits_for_terminating_pods_before_creating() {
    let mut w = World::new(recreate_deployment(2, "web:1"));
    w.grace_seconds = Some(1);
    w.run(30, &mut |_| {});
    w.set_image("web:2");
    let plan = w.sync_deployment();
    assert!(matches!(plan.actions.as_slice(), [Action::UpdateReplicaSet(rs)] if rs.spec.replicas == Some(0)));
    w.sync_replica_sets(&mut |_| {});
    assert_eq!(w.pods.len(), 2, "both old pods still terminating");
    let plan = w.sync_deployment();
    assert!(plan.actions.is_empty(), "nothing new while old pods may run: {:?}", plan.actions);
    w.tick(1);
    let plan = w.sync_deployment();
    assert!(
        matches!(plan.actions.as_slice(), [Action::CreateReplicaSet(rs)] if rs.spec.replicas == Some(2)),
        "{:?}",
        plan.actions
    );
}
