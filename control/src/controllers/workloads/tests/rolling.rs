//! RollingUpdate simulations: the surge and availability limits hold after every write, and the
//! rollout finishes.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{fixtures::deployment, world::World};
use crate::controllers::workloads::REVISION_ANNOTATION;

/// What a rollout from web:1 to web:2 looked like.
#[derive(Debug)]
struct Observed {
    max_pods: usize,
    max_spec_total: i32,
    min_available: usize,
    steps: usize,
    /// Plans that wrote nothing but asked to be woken later (minReadySeconds waits).
    waits: usize,
}

/// Rolls `replicas` pods from web:1 to web:2, one pod turning ready per second. The ReplicaSets
/// act every `lag` steps only, so with `lag` > 1 the Deployment plans on stale pod counts.
fn roll(replicas: i32, surge: i32, unavailable: i32, min_ready: i32, lag: usize) -> (World, Observed) {
    let mut d = deployment(replicas, "web:1", IntOrString::Int(surge), IntOrString::Int(unavailable));
    d.spec.min_ready_seconds = Some(min_ready);
    let mut w = World::new(d);
    w.run(100, &mut |_| {});
    assert_eq!(w.available(), usize::try_from(replicas).unwrap_or(0), "web:1 is fully up");
    w.set_image("web:2");
    w.ready_per_tick = 1;
    let mut seen = Observed { max_pods: 0, max_spec_total: 0, min_available: usize::MAX, steps: 0, waits: 0 };
    let record = |w: &World, seen: &mut Observed| {
        seen.max_pods = seen.max_pods.max(w.pods.len());
        seen.max_spec_total = seen.max_spec_total.max(w.spec_total());
        seen.min_available = seen.min_available.min(w.available());
    };
    for n in 0..300 {
        let plan = w.sync_deployment();
        record(&w, &mut seen);
        if plan.actions.is_empty() && plan.next_check.is_some_and(|at| at > w.now) {
            seen.waits += 1;
        }
        if n % lag == 0 {
            let mut check = |w: &World| record(w, &mut seen);
            w.sync_replica_sets(&mut check);
        }
        w.tick(1);
        seen.steps = n + 1;
        if w.rollout_done().expect("no deadline hit") {
            return (w, seen);
        }
    }
    panic!("rollout did not finish: {:#?}", w.d.status);
}

fn assert_finished(w: &World, replicas: usize) {
    assert_eq!(w.pods_with_image("web:2"), replicas);
    assert_eq!(w.pods_with_image("web:1"), 0);
    assert_eq!(w.rs_for("web:1").spec.replicas, Some(0));
    assert_eq!(w.rs_for("web:2").spec.replicas, Some(i32::try_from(replicas).unwrap_or(0)));
    let revision = w.d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION_ANNOTATION));
    assert_eq!(revision.map(String::as_str), Some("2"));
}

#[test]
fn five_replicas_surge_one_unavailable_one() {
    let (w, seen) = roll(5, 1, 1, 0, 1);
    assert!(seen.min_available >= 4, "{seen:?}");
    assert!(seen.max_pods <= 6 && seen.max_spec_total <= 6, "{seen:?}");
    assert_eq!(seen.max_pods, 6, "the surge is used");
    assert_eq!(seen.min_available, 4, "the unavailability budget is used");
    assert_finished(&w, 5);
}

#[test]
fn min_ready_seconds_holds_back_the_rollout_and_asks_to_be_woken() {
    let (w, seen) = roll(5, 1, 1, 3, 1);
    assert!(seen.min_available >= 4 && seen.max_pods <= 6, "{seen:?}");
    assert!(seen.waits > 0, "it waited on minReadySeconds with a next_check: {seen:?}");
    let (_, quick) = roll(5, 1, 1, 0, 1);
    assert!(seen.steps > quick.steps, "slower than without minReadySeconds: {seen:?} vs {quick:?}");
    assert_finished(&w, 5);
}

#[test]
fn stale_pod_counts_do_not_break_the_limits() {
    for lag in [2, 3] {
        let (w, seen) = roll(5, 1, 1, 0, lag);
        assert!(seen.min_available >= 4, "lag {lag}: {seen:?}");
        assert!(seen.max_pods <= 6 && seen.max_spec_total <= 6, "lag {lag}: {seen:?}");
        assert_finished(&w, 5);
    }
}

#[test]
fn no_unavailability_allowed_means_surge_first() {
    let (w, seen) = roll(4, 1, 0, 0, 1);
    assert_eq!(seen.min_available, 4, "{seen:?}");
    assert!(seen.max_pods <= 5, "{seen:?}");
    assert_finished(&w, 4);
}

#[test]
fn no_surge_allowed_means_replace_in_place() {
    let (w, seen) = roll(5, 0, 2, 0, 1);
    assert!(seen.max_pods <= 5, "{seen:?}");
    assert!(seen.min_available >= 3, "{seen:?}");
    assert_finished(&w, 5);
}

#[test]
fn rollout_restart_is_a_template_change() {
    let mut w = World::new(deployment(3, "web:1", IntOrString::Int(1), IntOrString::Int(0)));
    w.run(50, &mut |_| {});
    let before = w.rss[0].metadata.name.clone();
    w.edit(|spec| {
        let meta = spec.template.metadata.get_or_insert_with(Default::default);
        let annotations = meta.annotations.get_or_insert_with(Default::default);
        annotations.insert("kubectl.kubernetes.io/restartedAt".into(), "2024-01-01T00:00:00Z".into());
    });
    let mut min_available = usize::MAX;
    w.run(50, &mut |w| min_available = min_available.min(w.available()));
    assert_eq!(w.rss.len(), 2);
    assert_ne!(w.rss[1].metadata.name, before, "a new ReplicaSet with a new hash");
    assert_eq!(w.rss[1].spec.replicas, Some(3));
    assert_eq!(w.rss[0].spec.replicas, Some(0));
    assert_eq!(min_available, 3, "maxUnavailable 0 holds through the restart");
    assert!(w.pods.iter().all(|p| {
        p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("kubectl.kubernetes.io/restartedAt"))
    }));
}
