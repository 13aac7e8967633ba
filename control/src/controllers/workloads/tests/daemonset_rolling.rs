//! DaemonSet rollouts: the fenceposts, and step-by-step simulations (the plan applied, the
//! scheduler binding at once, a kubelet finishing deletions and readying pods each second) that
//! check the availability and surge limits after every step.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetUpdateStrategy, RollingUpdateDaemonSet},
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString},
};

use super::{
    daemonset::{daemon_pod, daemon_set, hash_of, node_named, plan_for},
    fixtures::{image_of, ready, t},
};
use crate::controllers::workloads::{
    daemonset::{Settings, Strategy, plan, pod_for_node, settings, template::target_node},
    pods,
};

fn rolling(ds: &mut DaemonSet, unavailable: IntOrString, surge: IntOrString) {
    ds.spec.update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_unavailable: Some(unavailable),
            max_surge: Some(surge),
        }),
    });
}

fn set_image(ds: &mut DaemonSet, image: &str) {
    let spec = ds.spec.template.spec.get_or_insert_with(Default::default);
    spec.containers[0].image = Some(image.into());
}

#[test]
fn daemonset_fenceposts_default_round_up_and_never_both_zero() {
    let mut ds = daemon_set("agent:1");
    let s = settings(&ds, 10);
    assert_eq!(
        s,
        Settings {
            strategy: Strategy::RollingUpdate,
            max_unavailable: 1,
            max_surge: 0,
            min_ready_seconds: 0
        }
    );
    rolling(&mut ds, IntOrString::String("25%".into()), IntOrString::String("10%".into()));
    assert_eq!(
        (settings(&ds, 10).max_unavailable, settings(&ds, 10).max_surge),
        (3, 1),
        "2.5 and 1 round up"
    );
    rolling(&mut ds, IntOrString::Int(0), IntOrString::Int(0));
    assert_eq!(settings(&ds, 3).max_unavailable, 1, "0/0 would never move");
    assert_eq!(settings(&ds, 0).max_unavailable, 0, "unless nothing should run");
    ds.spec.update_strategy =
        Some(DaemonSetUpdateStrategy { type_: Some("OnDelete".into()), rolling_update: None });
    let s = settings(&ds, 3);
    assert_eq!((s.strategy, s.max_unavailable, s.max_surge), (Strategy::OnDelete, 0, 0));
}

#[test]
fn daemonset_replaces_unavailable_old_pods_beyond_the_budget() {
    let mut ds = daemon_set("agent:1");
    let old = hash_of(&ds);
    set_image(&mut ds, "agent:2");
    let nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| node_named(n, &[], vec![])).collect();
    let pods = [
        daemon_pod("p1", "n1", &old),
        daemon_pod("p2", "n2", &old),
        ready(daemon_pod("p3", "n3", &old), t(0)),
    ];
    let p = plan_for(&ds, &nodes, &pods);
    assert_eq!(p.delete, ["p1", "p2"], "not-ready old pods serve nothing; the ready one waits");
}

#[test]
fn daemonset_node_fixes_come_before_the_rollout() {
    let mut ds = daemon_set("agent:1");
    let old = hash_of(&ds);
    set_image(&mut ds, "agent:2");
    let nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| node_named(n, &[], vec![])).collect();
    let pods = [ready(daemon_pod("p1", "n1", &old), t(0)), ready(daemon_pod("p2", "n2", &old), t(0))];
    let p = plan_for(&ds, &nodes, &pods);
    assert_eq!((p.create.as_slice(), p.delete.len()), (["n3".to_owned()].as_slice(), 0));
    let p = plan_for(&ds, &nodes[..2], &pods);
    assert_eq!(p.delete, ["p1"], "then one old pod at a time");
}

#[test]
fn daemonset_on_delete_replaces_only_what_users_delete() {
    let mut ds = daemon_set("agent:1");
    let old = hash_of(&ds);
    set_image(&mut ds, "agent:2");
    ds.spec.update_strategy =
        Some(DaemonSetUpdateStrategy { type_: Some("OnDelete".into()), rolling_update: None });
    let nodes: Vec<Node> = ["n1", "n2"].iter().map(|n| node_named(n, &[], vec![])).collect();
    let pods = [ready(daemon_pod("p1", "n1", &old), t(0))];
    let p = plan_for(&ds, &nodes, &pods);
    assert!(p.delete.is_empty(), "old pods stay");
    assert_eq!(p.create, ["n2"], "a missing pod comes back current");
    assert_eq!(p.status.and_then(|s| s.updated_number_scheduled), Some(0));
}

/// The plan applied step by step to nodes `n0..n<count>`.
struct Sim {
    ds: DaemonSet,
    nodes: Vec<Node>,
    pods: BTreeMap<String, Pod>,
    now: Timestamp,
    next: usize,
}

impl Sim {
    fn new(ds: DaemonSet, count: usize) -> Self {
        let nodes = (0..count).map(|i| node_named(&format!("n{i}"), &[], vec![])).collect();
        Sim { ds, nodes, pods: BTreeMap::new(), now: t(0), next: 0 }
    }

    /// One plan, applied: new pods bound at once, deleted pods marked for deletion.
    fn sync(&mut self) -> bool {
        let nodes: Vec<&Node> = self.nodes.iter().collect();
        let pods: Vec<&Pod> = self.pods.values().collect();
        let p = plan(&self.ds, &nodes, &pods, self.now, &|_| None);
        for node in &p.create {
            let mut pod = pod_for_node(&self.ds, node, &p.hash);
            let name = format!("agent-{}", self.next);
            self.next += 1;
            pod.metadata.name = Some(name.clone());
            pod.metadata.uid = Some(format!("uid-{name}"));
            pod.metadata.creation_timestamp = Some(Time(self.now));
            pod.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
            self.pods.insert(name, pod);
        }
        for name in &p.delete {
            if let Some(pod) = self.pods.get_mut(name) {
                pod.metadata.deletion_timestamp = Some(Time(self.now));
            }
        }
        if let Some(s) = p.status {
            self.ds.status = Some(s);
        }
        !p.create.is_empty() || !p.delete.is_empty()
    }

    /// A second passes: the kubelet removes pods being deleted and readies the others.
    fn tick(&mut self) {
        self.now = self.now.checked_add(jiff::SignedDuration::from_secs(1)).expect("time");
        self.pods.retain(|_, p| p.metadata.deletion_timestamp.is_none());
        let now = self.now;
        for pod in self.pods.values_mut() {
            if !pods::is_ready(pod) {
                *pod = ready(pod.clone(), now);
            }
        }
    }

    fn live_on(&self, node: &str) -> Vec<&Pod> {
        let live = self.pods.values().filter(|p| p.metadata.deletion_timestamp.is_none());
        live.filter(|p| target_node(p) == Some(node)).collect()
    }

    /// Nodes without an available pod that is staying.
    fn unavailable_nodes(&self) -> usize {
        let min_ready = self.ds.spec.min_ready_seconds.unwrap_or(0);
        let names = self.nodes.iter().filter_map(|n| n.metadata.name.as_deref());
        names.filter(|n| !self.live_on(n).iter().any(|p| pods::is_available(p, min_ready, self.now))).count()
    }

    fn doubled_nodes(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .filter(|n| self.live_on(n).len() > 1)
            .count()
    }

    fn all_on(&self, image: &str) -> bool {
        self.pods.len() == self.nodes.len() && self.pods.values().all(|p| image_of(p.spec.as_ref()) == image)
    }

    /// Runs until nothing changes for a second; `check` after every sync and every tick.
    fn run(&mut self, mut check: impl FnMut(&Sim)) {
        for _ in 0..500 {
            let acted = self.sync();
            check(self);
            self.tick();
            check(self);
            let min_ready = self.ds.spec.min_ready_seconds.unwrap_or(0);
            let settled = self.pods.values().all(|p| pods::is_available(p, min_ready, self.now));
            if !acted && settled && !self.sync() {
                return;
            }
        }
        panic!("the rollout did not finish");
    }
}

#[test]
fn daemonset_rollout_without_surge_stays_within_max_unavailable() {
    let mut ds = daemon_set("agent:1");
    rolling(&mut ds, IntOrString::String("40%".into()), IntOrString::Int(0));
    let mut sim = Sim::new(ds, 5);
    sim.run(|_| {});
    assert!(sim.all_on("agent:1"));
    set_image(&mut sim.ds, "agent:2");
    let (mut worst, mut most_pods) = (0, 0);
    sim.run(|s| {
        worst = worst.max(s.unavailable_nodes());
        most_pods = most_pods.max(s.doubled_nodes());
    });
    assert!(sim.all_on("agent:2"));
    assert_eq!(worst, 2, "40% of 5 nodes, used in full");
    assert_eq!(most_pods, 0, "no node ever runs two pods");
    let status = sim.ds.status.clone().expect("status");
    assert_eq!((status.updated_number_scheduled, status.number_available), (Some(5), Some(5)));
}

#[test]
fn daemonset_rollout_with_surge_keeps_every_node_available() {
    let mut ds = daemon_set("agent:1");
    ds.spec.min_ready_seconds = Some(3);
    rolling(&mut ds, IntOrString::Int(0), IntOrString::Int(2));
    let mut sim = Sim::new(ds, 5);
    sim.run(|_| {});
    assert_eq!(sim.unavailable_nodes(), 0);
    set_image(&mut sim.ds, "agent:2");
    let (mut worst, mut most_doubled) = (0, 0);
    sim.run(|s| {
        worst = worst.max(s.unavailable_nodes());
        most_doubled = most_doubled.max(s.doubled_nodes());
    });
    assert!(sim.all_on("agent:2"));
    assert_eq!(worst, 0, "every node keeps an available pod");
    assert_eq!(most_doubled, 2, "maxSurge nodes run old and new side by side");
}
