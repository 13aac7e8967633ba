//! An in-memory cluster for one Deployment: it applies Deployment plans to a list of
//! ReplicaSets, ReplicaSet plans to a list of pods, and plays kubelet by making pods ready over
//! time. Tests drive it step by step and check invariants after every write.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, ReplicaSet},
        core::v1::{Pod, PodSpec, PodStatus},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::fixtures::{image_of, ready, t};
use crate::controllers::workloads::{
    REVISION_ANNOTATION,
    deployment::{self, Action, DeploymentPlan, reason, status},
    owner, pods, replicaset,
};

/// A check run after every write; gets the world as it is then.
pub type Check<'a> = &'a mut dyn FnMut(&World);

#[derive(Debug)]
pub struct World {
    pub now: Timestamp,
    pub d: Deployment,
    pub rss: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    /// Seconds a deleted pod stays (terminating) before it is gone; `None`: gone at once.
    pub grace_seconds: Option<i64>,
    /// Pods that turn ready per tick (oldest first).
    pub ready_per_tick: usize,
    /// Pods with this image never turn ready.
    pub broken_image: Option<String>,
    /// Every ReplicaSet deletion so far, by name, in order.
    pub deleted_rss: Vec<String>,
    /// ReplicaSet deletions that found pods still controlled by the ReplicaSet.
    pub deleted_with_pods: usize,
    /// The last Deployment plan.
    pub last: Option<DeploymentPlan>,
    serial: u64,
}

impl World {
    pub fn new(d: Deployment) -> Self {
        World {
            now: t(0),
            d,
            rss: Vec::new(),
            pods: Vec::new(),
            grace_seconds: None,
            ready_per_tick: usize::MAX,
            broken_image: None,
            deleted_rss: Vec::new(),
            deleted_with_pods: 0,
            last: None,
            serial: 0,
        }
    }

    /// Changes the Deployment's spec the way an API update does (generation + 1).
    pub fn edit(&mut self, f: impl FnOnce(&mut DeploymentSpec)) {
        f(&mut self.d.spec);
        self.d.metadata.generation = Some(self.d.metadata.generation.unwrap_or(0) + 1);
    }

    fn next(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Plans the Deployment and applies the plan.
    pub fn sync_deployment(&mut self) -> DeploymentPlan {
        let rss: Vec<&ReplicaSet> = self.rss.iter().collect();
        let pods: Vec<&Pod> = self.pods.iter().collect();
        let plan = deployment::plan(&self.d, &rss, &pods, self.now);
        for action in plan.actions.clone() {
            self.apply(action);
        }
        if let Some(revision) = &plan.revision {
            self.d
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(REVISION_ANNOTATION.into(), revision.clone());
        }
        if plan.status_changed(&self.d) {
            self.d.status = Some(plan.status.clone());
        }
        self.last = Some(plan.clone());
        plan
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::CreateReplicaSet(rs) => {
                let mut rs = *rs;
                assert!(!self.rss.iter().any(|r| r.metadata.name == rs.metadata.name), "name taken");
                rs.metadata.uid = Some(format!("rs-uid-{}", self.next()));
                rs.metadata.creation_timestamp = Some(Time(self.now));
                rs.metadata.generation = Some(1);
                self.rss.push(rs);
            }
            Action::UpdateReplicaSet(rs) => {
                let slot = self
                    .rss
                    .iter_mut()
                    .find(|r| r.metadata.name == rs.metadata.name)
                    .expect("updated RS exists");
                let spec_changed = slot.spec != rs.spec;
                *slot = *rs;
                if spec_changed {
                    slot.metadata.generation = Some(slot.metadata.generation.unwrap_or(0) + 1);
                }
            }
            Action::DeleteReplicaSet { name, uid } => {
                self.rss.retain(|r| r.metadata.name.as_ref() != Some(&name));
                // The garbage collector would take the pods with it.
                let uid = uid.unwrap_or_default();
                let before = self.pods.len();
                self.pods.retain(|p| !owner::is_controlled_by(&p.metadata, &uid));
                self.deleted_with_pods += usize::from(self.pods.len() != before);
                self.deleted_rss.push(name);
            }
        }
    }

    /// Runs every ReplicaSet's plan, oldest ReplicaSet first, with `check` after each.
    pub fn sync_replica_sets(&mut self, check: Check<'_>) {
        for i in 0..self.rss.len() {
            let pods: Vec<&Pod> = self.pods.iter().collect();
            let plan = replicaset::plan(&self.rss[i], &pods, self.now);
            let rs = self.rss[i].clone();
            for name in &plan.adopt {
                let pod = self.pod_mut(name);
                pod.metadata
                    .owner_references
                    .get_or_insert_with(Vec::new)
                    .push(replicaset::controller_ref(&rs));
            }
            for name in &plan.release {
                let uid = rs.metadata.uid.clone().unwrap_or_default();
                let pod = self.pod_mut(name);
                pod.metadata.owner_references.get_or_insert_with(Vec::new).retain(|r| r.uid != uid);
            }
            for _ in 0..plan.create {
                let mut pod = replicaset::pod_from_template(&rs);
                let n = self.next();
                pod.metadata.name =
                    Some(format!("{}{n}", pod.metadata.generate_name.clone().unwrap_or_default()));
                pod.metadata.uid = Some(format!("pod-uid-{n}"));
                pod.metadata.creation_timestamp = Some(Time(self.now));
                pod.spec.get_or_insert_with(PodSpec::default).node_name = Some(format!("node-{}", n % 3));
                pod.status = Some(PodStatus { phase: Some("Running".into()), ..PodStatus::default() });
                self.pods.push(pod);
            }
            for name in &plan.delete {
                if self.grace_seconds.is_some() {
                    self.pod_mut(name).metadata.deletion_timestamp = Some(Time(self.now));
                } else {
                    self.pods.retain(|p| p.metadata.name.as_ref() != Some(name));
                }
            }
            self.rss[i].status = Some(plan.status);
            check(self);
        }
    }

    fn pod_mut(&mut self, name: &str) -> &mut Pod {
        self.pods.iter_mut().find(|p| p.metadata.name.as_deref() == Some(name)).expect("pod exists")
    }

    /// Time passes: terminating pods past their grace period finish, and up to
    /// `ready_per_tick` pods become ready.
    pub fn tick(&mut self, seconds: i64) {
        self.now = self.now.checked_add(SignedDuration::from_secs(seconds)).expect("in range");
        let grace = SignedDuration::from_secs(self.grace_seconds.unwrap_or(0));
        let now = self.now;
        self.pods.retain(|p| p.metadata.deletion_timestamp.as_ref().is_none_or(|t| t.0 + grace > now));
        let broken = self.broken_image.clone();
        let mut budget = self.ready_per_tick;
        for pod in self.pods.iter_mut() {
            if budget == 0 {
                break;
            }
            let healthy = broken.as_deref() != Some(image_of(pod.spec.as_ref()).as_str());
            if healthy && pods::is_active(pod) && !pods::is_ready(pod) {
                *pod = ready(pod.clone(), now);
                budget -= 1;
            }
        }
    }

    /// One round: the Deployment, then its ReplicaSets, then a second passes. `check` runs
    /// after every write.
    pub fn step(&mut self, check: Check<'_>) -> DeploymentPlan {
        let plan = self.sync_deployment();
        check(self);
        self.sync_replica_sets(check);
        self.tick(1);
        plan
    }

    /// Steps until `kubectl rollout status` would succeed; panics after `max_steps` or if the
    /// rollout fails. Returns the number of steps taken.
    pub fn run(&mut self, max_steps: usize, check: Check<'_>) -> usize {
        for n in 1..=max_steps {
            self.step(check);
            if self.rollout_done().expect("rollout does not fail") {
                // One more sync records completion (and prunes history) on the final state.
                self.step(check);
                return n;
            }
        }
        panic!("rollout not done after {max_steps} steps: {:#?}", self.d.status);
    }

    /// What `kubectl rollout status` concludes: `Ok(true)` done, `Ok(false)` still waiting,
    /// `Err` failed (progress deadline exceeded).
    pub fn rollout_done(&self) -> Result<bool, String> {
        let st = self.d.status.clone().unwrap_or_default();
        if self.d.metadata.generation.unwrap_or(0) > st.observed_generation.unwrap_or(0) {
            return Ok(false);
        }
        let progressing = status::condition(&st, status::PROGRESSING);
        if let Some(c) = progressing.filter(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
            return Err(c.message.clone().unwrap_or_default());
        }
        let n = |v: Option<i32>| v.unwrap_or(0);
        let want = self.d.spec.replicas.unwrap_or(1);
        Ok(n(st.updated_replicas) >= want
            && n(st.replicas) <= n(st.updated_replicas)
            && n(st.available_replicas) >= n(st.updated_replicas))
    }

    /// The ReplicaSet whose template runs `image`.
    pub fn rs_for(&self, image: &str) -> &ReplicaSet {
        self.rss
            .iter()
            .find(|r| image_of(r.spec.template.as_ref().and_then(|t| t.spec.as_ref())) == image)
            .expect("RS for image exists")
    }

    pub fn pods_with_image(&self, image: &str) -> usize {
        self.pods.iter().filter(|p| image_of(p.spec.as_ref()) == image).count()
    }

    /// Pods available under the Deployment's minReadySeconds.
    pub fn available(&self) -> usize {
        let min_ready = self.d.spec.min_ready_seconds.unwrap_or(0);
        self.pods.iter().filter(|p| pods::is_available(p, min_ready, self.now)).count()
    }

    /// Sum of the ReplicaSets' `spec.replicas`.
    pub fn spec_total(&self) -> i32 {
        self.rss.iter().map(|r| r.spec.replicas.unwrap_or(1)).sum()
    }

    pub fn set_image(&mut self, image: &str) {
        self.edit(|spec| {
            if let Some(c) = spec.template.spec.as_mut().and_then(|s| s.containers.first_mut()) {
                c.image = Some(image.to_owned());
            }
        });
    }
}
