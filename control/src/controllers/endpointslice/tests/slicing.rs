//! How endpoints are spread over slices, and that changes touch as few slices as possible.

use serde_json::json;

use super::*;
use crate::controllers::endpointslice::MAX_ENDPOINTS;

fn sizes(slices: &[EndpointSlice]) -> Vec<usize> {
    slices.iter().map(endpoint_count).collect()
}

#[test]
fn many_pods_fill_slices_of_at_most_max_endpoints() {
    let pods = pods(250);
    let mut cluster = Cluster::default();
    let plan = cluster.plan(&service(), &pods);
    assert_eq!(sizes(&plan.create), [MAX_ENDPOINTS, MAX_ENDPOINTS, 50]);
    let mut expected: Vec<String> = (0..250).map(ip).collect();
    expected.sort();
    assert_eq!(addresses(&plan.create), expected, "every pod exactly once");
    cluster.apply(plan);
    assert!(cluster.plan(&service(), &pods).is_empty());
}

#[test]
fn removing_a_pod_updates_only_its_slice() {
    let svc = service();
    let mut pods = pods(250);
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods);

    let removed = ip(150);
    let home = cluster.slices.iter().find(|s| addresses(std::slice::from_ref(s)).contains(&removed));
    let home = home.and_then(|s| s.metadata.name.clone()).expect("slice holding the pod");
    pods.remove(150);
    let plan = cluster.plan(&svc, &pods);
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    let [updated] = plan.update.as_slice() else { panic!("one update: {plan:?}") };
    assert_eq!(updated.metadata.name.as_ref(), Some(&home));
    assert_eq!(endpoint_count(updated), endpoint_count(cluster.get(&home)) - 1);
    assert!(!addresses(&plan.update).contains(&removed));
    cluster.apply(plan);
    assert!(cluster.plan(&svc, &pods).is_empty());
}

#[test]
fn new_pods_go_into_a_slice_with_room_before_a_new_slice() {
    let svc = service();
    let mut pods = pods(260);
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods[..250]);

    let plan = cluster.plan(&svc, &pods);
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    assert_eq!(sizes(&plan.update), [60]);
    cluster.apply(plan);

    // Replacing a pod rewrites the one slice it left, and the newcomer rides along.
    pods[3] = pod("fresh", "10.9.0.1", true);
    let plan = cluster.plan(&svc, &pods);
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    assert_eq!(sizes(&plan.update), [MAX_ENDPOINTS]);
    cluster.apply(plan);
    assert!(cluster.plan(&svc, &pods).is_empty());
}

#[test]
fn unchanged_world_plans_nothing_whatever_the_input_order() {
    let svc = service();
    let mut pods = pods(120);
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods);
    pods.reverse();
    cluster.slices.reverse();
    assert_eq!(cluster.plan(&svc, &pods), Plan::default());
}

#[test]
fn output_is_deterministic() {
    let svc = service();
    let pods = pods(230);
    let mut shuffled = pods.clone();
    // A fixed permutation: stride 7 is coprime with 230, so every pod appears once.
    for (i, p) in pods.iter().enumerate() {
        shuffled[(i * 7) % pods.len()] = p.clone();
    }
    let a = plan_for(&svc, &pods, &[]);
    let b = plan_for(&svc, &shuffled, &[]);
    assert_eq!(a, b);
    let bytes = |p: &Plan| serde_json::to_vec(&p.create).expect("serialises");
    assert_eq!(bytes(&a), bytes(&b));
}

#[test]
fn no_endpoints_keeps_one_empty_placeholder_slice() {
    let svc = service();
    let mut cluster = Cluster::default();
    let plan = cluster.plan(&svc, &[]);
    let [placeholder] = plan.create.as_slice() else { panic!("one create: {plan:?}") };
    assert_eq!((endpoint_count(placeholder), placeholder.ports.clone()), (0, Some(vec![])));
    cluster.settle(&svc, &[]);
    let name = cluster.slices[0].metadata.name.clone();

    // The first pod reuses the placeholder rather than deleting it and creating another.
    let pods = pods(1);
    let plan = cluster.plan(&svc, &pods);
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    let [reused] = plan.update.as_slice() else { panic!("one update: {plan:?}") };
    assert_eq!(reused.metadata.name, name);
    cluster.apply(plan);

    // Losing the last pod turns the slice back into the placeholder.
    let plan = cluster.plan(&svc, &[]);
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    cluster.apply(plan);
    assert_eq!(cluster.slices.len(), 1);
    assert_eq!(cluster.slices[0].metadata.name, name);
    assert_eq!((endpoint_count(&cluster.slices[0]), cluster.slices[0].ports.clone()), (0, Some(vec![])));
    assert!(cluster.plan(&svc, &[]).is_empty());
}

#[test]
fn emptied_slices_go_when_others_remain() {
    let svc = service();
    let mut pods = pods(150);
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods);
    pods.truncate(100);
    let plan = cluster.plan(&svc, &pods);
    assert_eq!((plan.create.len(), plan.update.len()), (0, 0), "{plan:?}");
    assert_eq!(plan.delete.len(), 1);
    cluster.apply(plan);
    assert_eq!(sizes(&cluster.slices), [MAX_ENDPOINTS]);
}

#[test]
fn duplicate_addresses_in_slices_are_removed() {
    let svc = service();
    let pods = pods(2);
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods);
    // Someone (a lost race, an older writer) listed the first address twice and left a second
    // slice repeating it.
    let first = endpoint(&cluster.slices, &ip(0)).clone();
    let mut copy = cluster.slices[0].clone();
    cluster.slices[0].endpoints.as_mut().expect("endpoints").push(first.clone());
    copy.metadata.name = Some("web-zzzzz".into());
    copy.endpoints = Some(vec![first]);
    cluster.slices.push(copy);

    let plan = cluster.plan(&svc, &pods);
    let mut reversed = cluster.slices.clone();
    reversed.reverse();
    assert_eq!(plan_for(&svc, &pods, &reversed), plan, "which copy stays does not depend on listing order");
    assert!(plan.create.is_empty());
    assert_eq!(plan.delete, ["web-zzzzz"]);
    assert_eq!(addresses(&plan.update), [ip(0), ip(1)]);
    cluster.apply(plan);
    assert!(cluster.plan(&svc, &pods).is_empty());
}

#[test]
fn a_service_being_deleted_gets_no_new_slices() {
    let mut svc = service();
    svc.metadata.deletion_timestamp = Some(from(json!("2026-01-01T00:00:00Z")));
    assert_eq!(plan_for(&svc, &pods(3), &[]), Plan::default());
}

#[test]
fn an_oversized_slice_is_trimmed_and_the_rest_rehomed() {
    let svc = service();
    let pods = pods(150);
    let mut cluster = Cluster::default();
    cluster.settle(&svc, &pods);
    // One slice holding all 150, as a writer with a larger limit would have left it.
    let second = cluster.slices.pop().expect("two slices");
    cluster.slices[0].endpoints.as_mut().expect("endpoints").extend(second.endpoints.into_iter().flatten());

    let plan = cluster.plan(&svc, &pods);
    assert!(plan.delete.is_empty());
    assert_eq!((sizes(&plan.update), sizes(&plan.create)), (vec![MAX_ENDPOINTS], vec![50]));
    cluster.apply(plan);
    assert_eq!(addresses(&cluster.slices).len(), 150);
    assert!(cluster.plan(&svc, &pods).is_empty());
}
