//! The working state of one Deployment decision: a copy of each ReplicaSet that the decision
//! edits (scales, annotates, creates), the pod counts behind each, and the status being built.
//! Edits are compared with the originals at the end to produce the actions.

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{Deployment, DeploymentStatus, ReplicaSet},
    core::v1::Pod,
};

use super::{
    super::{hash, owner, pods},
    Action, DeploymentPlan, Settings, revision,
};

/// What a ReplicaSet's pods look like now.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    /// Active pods (not finished, not being deleted).
    pub active: i32,
    pub ready: i32,
    /// Ready for the Deployment's minReadySeconds.
    pub available: i32,
    /// Pods that may still run containers, terminating ones included.
    pub running: i32,
    /// Pods being deleted that have not finished.
    pub terminating: i32,
    /// When the next ready pod becomes available.
    pub next_available: Option<Timestamp>,
}

impl Counts {
    fn of<'p>(owned: impl Iterator<Item = &'p Pod>, min_ready: i32, now: Timestamp) -> Self {
        let mut c = Counts::default();
        for pod in owned {
            if pods::may_be_running(pod) {
                c.running += 1;
                if pod.metadata.deletion_timestamp.is_some() {
                    c.terminating += 1;
                }
            }
            if !pods::is_active(pod) {
                continue;
            }
            c.active += 1;
            c.ready += i32::from(pods::is_ready(pod));
            c.available += i32::from(pods::is_available(pod, min_ready, now));
            c.next_available =
                pods::earliest(c.next_available, pods::next_available_check(pod, min_ready, now));
        }
        c
    }
}

/// One ReplicaSet of the Deployment.
#[derive(Debug)]
pub(super) struct Set<'a> {
    /// As passed in; `None` for the ReplicaSet this decision creates.
    pub original: Option<&'a ReplicaSet>,
    /// The copy being edited.
    pub rs: ReplicaSet,
    pub pods: Counts,
}

impl Set<'_> {
    /// `spec.replicas` of the working copy.
    pub fn replicas(&self) -> i32 {
        self.rs.spec.replicas.unwrap_or(1)
    }

    /// Available pods the decision may count on: those beyond `spec.replicas` are about to be
    /// deleted by the ReplicaSet (it deletes unavailable pods first), so they do not count.
    pub fn available(&self) -> i32 {
        self.pods.available.min(self.replicas())
    }

    fn name(&self) -> String {
        self.rs.metadata.name.clone().unwrap_or_default()
    }
}

/// A Deployment decision in progress.
#[derive(Debug)]
pub(super) struct State<'a> {
    pub d: &'a Deployment,
    pub s: Settings,
    pub now: Timestamp,
    /// Oldest first (creation time, then name); a ReplicaSet created by this decision is last.
    pub sets: Vec<Set<'a>>,
    /// Index of the new ReplicaSet (the one running the current template), if there is one.
    pub new: Option<usize>,
    /// The status being built; starts as the Deployment's current status.
    pub status: DeploymentStatus,
    /// The revision the Deployment's annotation should carry.
    pub revision: Option<String>,
    /// Indices of old ReplicaSets to delete.
    pub delete: Vec<usize>,
}

impl<'a> State<'a> {
    pub fn new(d: &'a Deployment, rss: &[&'a ReplicaSet], all_pods: &[&Pod], now: Timestamp) -> Self {
        let s = super::settings(d);
        let mut rss = rss.to_vec();
        rss.sort_by(|a, b| {
            let key = |rs: &ReplicaSet| {
                (rs.metadata.creation_timestamp.as_ref().map(|t| t.0), rs.metadata.name.clone())
            };
            key(a).cmp(&key(b))
        });
        let sets = rss
            .into_iter()
            .map(|rs| {
                let uid = rs.metadata.uid.as_deref();
                let owned =
                    all_pods.iter().filter(|p| uid.is_some_and(|u| owner::is_controlled_by(&p.metadata, u)));
                Set {
                    original: Some(rs),
                    rs: rs.clone(),
                    pods: Counts::of(owned.copied(), s.min_ready_seconds, now),
                }
            })
            .collect();
        State {
            d,
            s,
            now,
            sets,
            new: None,
            status: d.status.clone().unwrap_or_default(),
            revision: None,
            delete: Vec::new(),
        }
    }

    /// Indices of the old ReplicaSets (all but the new one), oldest first.
    pub fn old(&self) -> Vec<usize> {
        (0..self.sets.len()).filter(|i| Some(*i) != self.new).collect()
    }

    /// Finds the new ReplicaSet: the oldest whose template equals the Deployment's apart from
    /// the hash label.
    pub fn identify_new(&mut self) {
        let template = &self.d.spec.template;
        self.new = self.sets.iter().position(|set| {
            let theirs = set.rs.spec.template.clone().unwrap_or_default();
            hash::equal_ignoring_hash(template, &theirs)
        });
    }

    /// Sets `spec.replicas` of set `i` to `n` and records the Deployment's size on it, if either
    /// differs (upstream `scaleReplicaSet`). Returns whether the size changed.
    pub fn resize(&mut self, i: usize, n: i32) -> bool {
        let Some(set) = self.sets.get_mut(i) else { return false };
        let changed = set.replicas() != n;
        set.rs.spec.replicas = Some(n);
        revision::set_replicas_annotations(&mut set.rs, &self.s);
        changed
    }

    /// Sets set `i` to `n` replicas unless it has that many already (upstream
    /// `scaleReplicaSetAndRecordEvent`: an unchanged size writes nothing). Returns whether it
    /// changed.
    pub fn scale(&mut self, i: usize, n: i32) -> bool {
        let same = self.sets.get(i).is_none_or(|set| set.replicas() == n);
        !same && self.resize(i, n)
    }

    /// Sum of `spec.replicas` over `indices`.
    pub fn replicas_of(&self, indices: impl IntoIterator<Item = usize>) -> i32 {
        indices.into_iter().filter_map(|i| self.sets.get(i)).map(Set::replicas).sum()
    }

    /// Sum of `spec.replicas` over all sets.
    pub fn total_replicas(&self) -> i32 {
        self.sets.iter().map(Set::replicas).sum()
    }

    /// The actions that turn the passed-in ReplicaSets into the working copies: the creation
    /// first, then shrinking updates before growing ones (so a surge limit holds even if the
    /// writes land one by one), then deletions.
    pub fn into_plan(self, status: DeploymentStatus, next_check: Option<Timestamp>) -> DeploymentPlan {
        let mut actions = Vec::new();
        let mut shrink = Vec::new();
        let mut other = Vec::new();
        for (i, set) in self.sets.iter().enumerate() {
            match set.original {
                None => actions.push(Action::CreateReplicaSet(Box::new(set.rs.clone()))),
                Some(_) if self.delete.contains(&i) => {}
                Some(original) if *original != set.rs => {
                    let before = original.spec.replicas.unwrap_or(1);
                    let list = if set.replicas() < before { &mut shrink } else { &mut other };
                    list.push(Action::UpdateReplicaSet(Box::new(set.rs.clone())));
                }
                Some(_) => {}
            }
        }
        actions.append(&mut shrink);
        actions.append(&mut other);
        for i in &self.delete {
            if let Some(set) = self.sets.get(*i) {
                actions.push(Action::DeleteReplicaSet { name: set.name(), uid: set.rs.metadata.uid.clone() });
            }
        }
        let current =
            self.d.metadata.annotations.as_ref().and_then(|a| a.get(super::super::REVISION_ANNOTATION));
        let revision = self.revision.filter(|r| current != Some(r));
        DeploymentPlan { actions, revision, status, next_check }
    }
}
