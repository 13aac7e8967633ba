//! Single ReplicaSet plans: claiming, sizing, ranking and status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::fixtures::{
    controlled_by, created, deleting, labels, node, phase, pod, ready, replica_set, restarts, t,
};
use crate::controllers::workloads::{
    BURST_REPLICAS,
    pods::DELETION_COST_ANNOTATION,
    replicaset::{plan, pod_from_template},
};

const WEB: &[(&str, &str)] = &[("app", "web")];
const RS_UID: &str = "uid-rs";

#[test]
fn adopts_orphans_releases_strays_and_leaves_others_alone() {
    let rs = replica_set("rs", 4);
    let pods = [
        controlled_by(pod("mine", WEB), "ReplicaSet", RS_UID),
        pod("orphan", WEB),
        pod("unselected-orphan", &[("app", "db")]),
        controlled_by(pod("someone-elses", WEB), "ReplicaSet", "uid-other"),
        controlled_by(pod("stray", &[("app", "db")]), "ReplicaSet", RS_UID),
        deleting(pod("dying-orphan", WEB)),
        phase(pod("finished-orphan", WEB), "Succeeded"),
    ];
    let refs: Vec<_> = pods.iter().collect();
    let p = plan(&rs, &refs, t(0));
    assert_eq!(p.adopt, ["orphan"]);
    assert_eq!(p.release, ["stray"]);
    assert_eq!(p.owned, ["mine", "orphan"]);
    assert_eq!(p.create, 2);
    assert!(p.delete.is_empty());
    assert_eq!(p.status.replicas, 2);
}

#[test]
fn a_replica_set_being_deleted_only_reports() {
    let mut rs = replica_set("rs", 4);
    rs.metadata.deletion_timestamp = Some(Time(t(0)));
    let pods = [pod("orphan", WEB), controlled_by(pod("stray", &[("app", "db")]), "ReplicaSet", RS_UID)];
    let refs: Vec<_> = pods.iter().collect();
    let p = plan(&rs, &refs, t(0));
    assert!(p.adopt.is_empty() && p.release.is_empty() && p.delete.is_empty());
    assert_eq!(p.create, 0);
}

#[test]
fn creation_is_capped_at_a_burst() {
    let p = plan(&replica_set("rs", 100_000), &[], t(0));
    assert_eq!(p.create, BURST_REPLICAS);
}

#[test]
fn deletes_the_least_established_pods_first() {
    let mine = |name: &str| controlled_by(pod(name, WEB), "ReplicaSet", RS_UID);
    let pods = [
        ready(mine("veteran"), t(10)),
        ready(restarts(mine("flaky"), 5), t(10)),
        ready(created(mine("young"), t(5)), t(10)),
        ready(mine("recent"), t(50)),
        mine("not-ready"),
        phase(mine("pending"), "Pending"),
        node(mine("unscheduled"), ""),
    ];
    let refs: Vec<_> = pods.iter().collect();
    let p = plan(&replica_set("rs", 1), &refs, t(100));
    assert_eq!(p.delete, ["unscheduled", "pending", "not-ready", "recent", "flaky", "young"]);
}

#[test]
fn deletion_cost_and_crowded_nodes_go_first() {
    let mine = |name: &str| ready(controlled_by(pod(name, WEB), "ReplicaSet", RS_UID), t(10));
    let mut cheap = mine("cheap");
    cheap.metadata.annotations = Some(labels(&[(DELETION_COST_ANNOTATION, "-5")]));
    let pods = [
        node(mine("alone"), "n2"),
        node(mine("crowded-1"), "n1"),
        node(mine("crowded-2"), "n1"),
        node(cheap, "n3"),
    ];
    let refs: Vec<_> = pods.iter().collect();
    let p = plan(&replica_set("rs", 1), &refs, t(100));
    assert_eq!(p.delete, ["cheap", "crowded-1", "crowded-2"]);
}

#[test]
fn status_counts_owned_active_pods() {
    let mut rs = replica_set("rs", 5);
    rs.metadata.generation = Some(7);
    rs.spec.min_ready_seconds = Some(30);
    if let Some(meta) = rs.spec.template.as_mut().and_then(|t| t.metadata.as_mut()) {
        meta.labels = Some(labels(&[("app", "web"), ("tier", "front")]));
    }
    let full = &[("app", "web"), ("tier", "front")];
    let pods = [
        ready(controlled_by(pod("available", full), "ReplicaSet", RS_UID), t(0)),
        ready(controlled_by(pod("warming-up", full), "ReplicaSet", RS_UID), t(80)),
        controlled_by(pod("starting", WEB), "ReplicaSet", RS_UID),
        deleting(ready(controlled_by(pod("leaving", full), "ReplicaSet", RS_UID), t(0))),
    ];
    let refs: Vec<_> = pods.iter().collect();
    let p = plan(&rs, &refs, t(100));
    let s = &p.status;
    assert_eq!(s.replicas, 3, "the terminating pod does not count");
    assert_eq!(s.fully_labeled_replicas, Some(2));
    assert_eq!(s.ready_replicas, Some(2));
    assert_eq!(s.available_replicas, Some(1));
    assert_eq!(s.terminating_replicas, Some(1));
    assert_eq!(s.observed_generation, Some(7));
    assert_eq!(p.create, 2, "the terminating pod is replaced at once");
    assert_eq!(p.next_check, Some(t(110)), "when warming-up has been ready for 30s");
}

#[test]
fn pods_from_the_template_carry_the_owner() {
    let rs = replica_set("rs", 1);
    let p = pod_from_template(&rs);
    assert_eq!(p.metadata.generate_name.as_deref(), Some("rs-"));
    assert_eq!(p.metadata.labels, Some(labels(WEB)));
    let owner = p.metadata.owner_references.as_deref().and_then(<[_]>::first).expect("owner");
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("ReplicaSet", RS_UID, Some(true))
    );
    assert_eq!(owner.block_owner_deletion, Some(true));
}
