//! The Deployment controller's decision: which ReplicaSets to create, resize or delete, which
//! revision the Deployment is at, and what its status says, as upstream's deployment controller
//! would decide in one sync.
//!
//! The caller gives [`plan`] the Deployment, the ReplicaSets it controls (see
//! [`claim_replica_sets`]) and the pods those ReplicaSets control, then applies the plan:
//!
//! 1. each [`Action`] in order, stopping at the first failed write;
//! 2. if [`DeploymentPlan::revision`] is set, the Deployment's `deployment.kubernetes.io/revision`
//!    annotation (a metadata write; re-read or patch, since step 3 is a separate write);
//! 3. if [`DeploymentPlan::status_changed`], the status subresource.
//!
//! A failed write just means "plan again": every decision is made from the current objects
//! (level-triggered), so a half-applied plan is finished by the next one. The caller plans again
//! whenever the Deployment, one of its ReplicaSets or one of their pods changes, and at
//! [`DeploymentPlan::next_check`].
//!
//! kubectl needs nothing else: `rollout restart` edits a template annotation and `rollout undo`
//! copies an old template back, both are template changes handled as rollouts; `scale` changes
//! `spec.replicas`, handled as a scaling event; `rollout status` reads the status written here.
//! `rollout pause`/`resume` set `spec.paused`: a paused Deployment only follows scaling and
//! prunes history; it makes no rollout progress and its deadline does not run.

mod revision;
mod rollout;
mod settings;
mod state;
pub mod status;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentStatus, ReplicaSet},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};

pub use self::settings::{Settings, Strategy, fenceposts, settings};
use self::state::State;
use super::{
    hash,
    owner::{self, Claimed},
    selector,
};

/// Reasons on the Deployment's conditions, as upstream spells them (kubectl and dashboards
/// match on them).
pub mod reason {
    /// Progressing=True: this sync created the new ReplicaSet.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// Progressing=True: the new ReplicaSet existed before a Progressing condition did.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// Progressing=True: the rollout moved (more updated, ready or available pods, fewer old).
    pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
    /// Progressing=True: the rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// Progressing=False: no progress for progressDeadlineSeconds; `kubectl rollout status`
    /// fails on it.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// Progressing=Unknown: paused, so progress is not being judged.
    pub const PAUSED: &str = "DeploymentPaused";
    /// Progressing=Unknown: resumed; the deadline counts from here.
    pub const RESUMED: &str = "DeploymentResumed";
    /// Available=True.
    pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Available=False.
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// One write to a ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this ReplicaSet (the new one): name `<deployment>-<hash>`, `pod-template-hash`
    /// in labels, selector and template, revision and desired/max-replicas annotations, the
    /// Deployment's copyable annotations, and the Deployment as controller. If the name is
    /// taken (AlreadyExists), see [`collision_count_after_conflict`].
    CreateReplicaSet(Box<ReplicaSet>),
    /// Replace this ReplicaSet (a copy of one passed in, same resourceVersion, so a concurrent
    /// change makes the write conflict instead of being lost). What changed is some of
    /// `spec.replicas` (the scaling), the revision / desired-replicas / max-replicas / copied
    /// annotations, and `spec.minReadySeconds`.
    UpdateReplicaSet(Box<ReplicaSet>),
    /// Delete this old ReplicaSet (history beyond revisionHistoryLimit); use the uid as a
    /// precondition. It has no pods and 0 replicas.
    DeleteReplicaSet {
        /// Its name.
        name: String,
        /// Its uid.
        uid: Option<String>,
    },
}

impl Action {
    /// The name of the ReplicaSet the action writes.
    pub fn name(&self) -> &str {
        match self {
            Action::CreateReplicaSet(rs) | Action::UpdateReplicaSet(rs) => {
                rs.metadata.name.as_deref().unwrap_or("")
            }
            Action::DeleteReplicaSet { name, .. } => name,
        }
    }
}

/// What one Deployment should do now; see the module docs for how to apply it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentPlan {
    /// ReplicaSet writes, in order: creation, then shrinking updates, then other updates, then
    /// deletions.
    pub actions: Vec<Action>,
    /// The value for the Deployment's `deployment.kubernetes.io/revision` annotation, when it
    /// differs from the current one (the new ReplicaSet's revision).
    pub revision: Option<String>,
    /// The status to write.
    pub status: DeploymentStatus,
    /// When to plan again if nothing else happens first: a ready pod becoming available after
    /// minReadySeconds, or the progress deadline of a rollout that is not moving.
    pub next_check: Option<Timestamp>,
}

impl DeploymentPlan {
    /// Whether [`Self::status`] differs from what `d` has (so it needs writing).
    pub fn status_changed(&self, d: &Deployment) -> bool {
        d.status.as_ref() != Some(&self.status)
    }
}

/// Decides for `d`, given the ReplicaSets it controls and the pods those control (pods of other
/// owners are ignored).
pub fn plan(d: &Deployment, rss: &[&ReplicaSet], pods: &[&Pod], now: Timestamp) -> DeploymentPlan {
    let mut st = State::new(d, rss, pods, now);
    // An empty selector would take over everything (see `selector`); upstream refuses to act on
    // it too and only acknowledges the spec.
    if selector::is_empty(&d.spec.selector) {
        let mut status = st.status.clone();
        status.observed_generation = d.metadata.generation;
        return st.into_plan(status, None);
    }
    st.identify_new();
    if d.metadata.deletion_timestamp.is_some() {
        let status = st.calculate();
        let next = st.next_check(&status, false);
        return st.into_plan(status, next);
    }
    st.check_paused_conditions();
    st.sync_new_replica_set();
    let rollout = !st.s.paused && !st.is_scaling_event();
    if rollout {
        match st.s.strategy {
            Strategy::RollingUpdate => st.rolling(),
            Strategy::Recreate => st.recreate(),
        }
    } else {
        st.scale_all();
        if st.s.paused {
            st.cleanup();
        }
    }
    let status = if rollout { st.rollout_status() } else { st.calculate() };
    let next = st.next_check(&status, rollout);
    st.into_plan(status, next)
}

/// After creating the new ReplicaSet failed with AlreadyExists: `None` if `existing` (the
/// ReplicaSet holding the name) is `d`'s own for the current template, so there is nothing to
/// do but wait for the cache; otherwise the `status.collisionCount` to write, which gives the
/// next plan a different hash and so a free name.
pub fn collision_count_after_conflict(d: &Deployment, existing: &ReplicaSet) -> Option<i32> {
    let uid = d.metadata.uid.as_deref().unwrap_or_default();
    let theirs = existing.spec.template.clone().unwrap_or_default();
    let ours = !uid.is_empty()
        && owner::is_controlled_by(&existing.metadata, uid)
        && hash::equal_ignoring_hash(&d.spec.template, &theirs);
    let current = d.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
    (!ours).then(|| current.saturating_add(1))
}

/// Which of the namespace's ReplicaSets `d` controls, adopts (orphans it selects: add
/// [`controller_ref`]) or releases (its own it no longer selects: remove its reference).
pub fn claim_replica_sets(d: &Deployment, rss: &[&ReplicaSet]) -> Claimed {
    owner::claim_all(&d.metadata, &d.spec.selector, rss.iter().map(|rs| &rs.metadata))
}

/// The ownerReference a Deployment puts on its ReplicaSets.
pub fn controller_ref(d: &Deployment) -> OwnerReference {
    owner::controller_ref("apps/v1", "Deployment", &d.metadata)
}
