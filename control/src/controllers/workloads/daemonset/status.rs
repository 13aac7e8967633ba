//! A DaemonSet's status, counted per node as upstream counts it (and as `kubectl rollout status
//! ds` reads it: done once `observedGeneration` has caught up and both `updatedNumberScheduled`
//! and `numberAvailable` reach `desiredNumberScheduled`).
//!
//! For each node that should run the DaemonSet, its oldest pod (a pod being deleted included)
//! decides whether the node is scheduled, ready, available and updated; a node that should not
//! run it but has a pod is misscheduled. Counted from the pods as they are, before the plan's
//! writes.

use k8s_openapi::api::{
    apps::v1::{DaemonSet, DaemonSetStatus},
    core::v1::Pod,
};

use super::View;
use crate::controllers::workloads::pods;

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(super) fn of(ds: &DaemonSet, view: &View<'_>) -> DaemonSetStatus {
    let (mut desired, mut misscheduled) = (0, 0);
    let mut first_pods: Vec<&Pod> = Vec::new();
    for (node, placement) in &view.nodes {
        let oldest = view.pods.get(node).and_then(|here| here.first().copied());
        match (placement.may_place(), oldest) {
            (true, oldest) => {
                desired += 1;
                first_pods.extend(oldest);
            }
            (false, Some(_)) => misscheduled += 1,
            (false, None) => {}
        }
    }
    let available = count(first_pods.iter().filter(|p| pods::is_ready(p) && view.is_available(p)).count());
    let desired = count(desired);
    let previous = ds.status.clone().unwrap_or_default();
    DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: count(first_pods.len()),
        number_misscheduled: count(misscheduled),
        number_ready: count(first_pods.iter().filter(|p| pods::is_ready(p)).count()),
        number_available: Some(available),
        number_unavailable: Some(desired - available),
        updated_number_scheduled: Some(count(first_pods.iter().filter(|p| view.is_updated(p)).count())),
        observed_generation: ds.metadata.generation,
        collision_count: previous.collision_count,
        conditions: previous.conditions,
    }
}
