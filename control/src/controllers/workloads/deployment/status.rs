//! The Deployment's status: counts over its ReplicaSets' pods, the `Available` condition, and
//! the `Progressing` condition that `kubectl rollout status` watches (it fails the rollout on
//! `ProgressDeadlineExceeded`).
//!
//! `Progressing` keeps upstream's meaning of its two times: `lastUpdateTime` moves whenever the
//! rollout makes progress (or a ReplicaSet is created or found, or the Deployment is resumed), and
//! is what the deadline counts from; `lastTransitionTime` moves only when the status flips.

use jiff::Timestamp;
use k8s_openapi::{
    api::apps::v1::{DeploymentCondition, DeploymentStatus},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::{
    super::{after, pods},
    Settings, reason,
    state::State,
};

/// Condition type: enough pods available (at least `replicas - maxUnavailable`).
pub const AVAILABLE: &str = "Available";
/// Condition type: how the current rollout is going.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: a ReplicaSet failed to create or delete pods (copied from the ReplicaSet).
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// The condition of `type_` in `status`.
pub fn condition<'s>(status: &'s DeploymentStatus, type_: &str) -> Option<&'s DeploymentCondition> {
    status.conditions.iter().flatten().find(|c| c.type_.as_deref() == Some(type_))
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_.as_deref() != Some(type_));
    }
}

fn new_condition(
    type_: &str,
    value: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.to_owned()),
        status: Some(value.to_owned()),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Puts `c` in `status` unless a condition of its type with the same status and reason is there
/// already; keeps the old `lastTransitionTime` when the status does not change.
fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let type_ = c.type_.clone().unwrap_or_default();
    if let Some(current) = condition(status, &type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

/// The rollout is done: every replica updated and available, nothing old left, and the status
/// describes the current spec. The same test `kubectl rollout status` applies.
pub fn is_complete(s: &Settings, generation: Option<i64>, status: &DeploymentStatus) -> bool {
    status.updated_replicas.unwrap_or(0) == s.replicas
        && status.replicas.unwrap_or(0) == s.replicas
        && status.available_replicas.unwrap_or(0) == s.replicas
        && status.observed_generation.unwrap_or(0) >= generation.unwrap_or(0)
}

/// Whether `new` shows progress over `old`: more updated, fewer old, more ready or more available.
fn progressed(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// When the rollout described by `status` runs out of time, if it can: there is a deadline, a
/// `Progressing` condition to count from, and the rollout has neither completed nor failed.
fn deadline(s: &Settings, status: &DeploymentStatus) -> Option<Timestamp> {
    let seconds = s.progress_deadline_seconds?;
    let c = condition(status, PROGRESSING)?;
    if matches!(c.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE | reason::TIMED_OUT)) {
        return None;
    }
    let from = c.last_update_time.as_ref().or(c.last_transition_time.as_ref())?;
    Some(after(from.0, seconds))
}

/// Whether the rollout has gone `progressDeadlineSeconds` without progress. Reached at the
/// deadline itself (upstream: strictly after), so a caller woken at `next_check` sees it.
fn timed_out(s: &Settings, status: &DeploymentStatus, now: Timestamp) -> bool {
    let c = condition(status, PROGRESSING);
    if c.is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
        return true;
    }
    deadline(s, status).is_some_and(|at| at <= now)
}

impl State<'_> {
    fn new_rs_name(&self) -> Option<String> {
        self.new.and_then(|i| self.sets.get(i)).and_then(|set| set.rs.metadata.name.clone())
    }

    /// Records a progress event on `Progressing` (creating or finding the new ReplicaSet).
    pub fn set_progressing(&mut self, reason: &str, message: String) {
        if self.s.progress_deadline_seconds.is_some() {
            set_condition(&mut self.status, new_condition(PROGRESSING, "True", reason, message, self.now));
        }
    }

    /// Whether `Progressing` is absent (upstream then notes the new ReplicaSet it found).
    pub fn progressing_missing(&self) -> bool {
        condition(&self.status, PROGRESSING).is_none()
    }

    /// Marks pausing and resuming on `Progressing` (status Unknown), so that time spent paused
    /// never counts against the deadline: resuming restarts the clock. A rollout already
    /// reported as failed keeps that.
    pub fn check_paused_conditions(&mut self) {
        if self.s.progress_deadline_seconds.is_none() {
            return;
        }
        let current = condition(&self.status, PROGRESSING).and_then(|c| c.reason.clone());
        if current.as_deref() == Some(reason::TIMED_OUT) {
            return;
        }
        let marked_paused = current.as_deref() == Some(reason::PAUSED);
        let (why, message) = match (self.s.paused, marked_paused) {
            (true, false) => (reason::PAUSED, "Deployment is paused"),
            (false, true) => (reason::RESUMED, "Deployment is resumed"),
            _ => return,
        };
        set_condition(
            &mut self.status,
            new_condition(PROGRESSING, "Unknown", why, message.to_owned(), self.now),
        );
    }

    /// The status from the pods as they are, with `Available` set (upstream `calculateStatus`).
    pub fn calculate(&self) -> DeploymentStatus {
        let sum = |f: fn(&super::state::Counts) -> i32| self.sets.iter().map(|set| f(&set.pods)).sum::<i32>();
        let available = sum(|c| c.available);
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(sum(|c| c.active)),
            updated_replicas: Some(self.new.and_then(|i| self.sets.get(i)).map_or(0, |set| set.pods.active)),
            ready_replicas: Some(sum(|c| c.ready)),
            available_replicas: Some(available),
            unavailable_replicas: Some((self.total_replicas() - available).max(0)),
            terminating_replicas: Some(sum(|c| c.terminating)),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
        };
        let c = if available >= self.s.replicas - self.s.max_unavailable {
            new_condition(
                AVAILABLE,
                "True",
                reason::MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.".into(),
                self.now,
            )
        } else {
            new_condition(
                AVAILABLE,
                "False",
                reason::MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                self.now,
            )
        };
        set_condition(&mut status, c);
        status
    }

    /// The status after a rollout step, with `Progressing` estimated (upstream
    /// `syncRolloutStatus`): complete, progressing (`lastUpdateTime` moves), or out of time.
    pub fn rollout_status(&self) -> DeploymentStatus {
        let mut status = self.calculate();
        if self.s.progress_deadline_seconds.is_none() {
            remove_condition(&mut status, PROGRESSING);
        }
        let name = self.new_rs_name();
        let subject = match &name {
            Some(n) => format!("ReplicaSet {n:?}"),
            None => format!("Deployment {:?}", self.d.metadata.name.as_deref().unwrap_or_default()),
        };
        let current = condition(&self.status, PROGRESSING).cloned();
        let done_before = status.replicas == status.updated_replicas
            && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        if self.s.progress_deadline_seconds.is_some() && !done_before {
            let before = self.d.status.clone().unwrap_or_default();
            if is_complete(&self.s, self.d.metadata.generation, &status) {
                let message = format!("{subject} has successfully progressed.");
                let c = new_condition(PROGRESSING, "True", reason::NEW_RS_AVAILABLE, message, self.now);
                set_condition(&mut status, c);
            } else if progressed(&before, &status) {
                let message = format!("{subject} is progressing.");
                let mut c =
                    new_condition(PROGRESSING, "True", reason::REPLICA_SET_UPDATED, message, self.now);
                // Unlike set_condition, progress with the same reason still moves lastUpdateTime.
                if let Some(current) = current.filter(|c| c.status.as_deref() == Some("True")) {
                    c.last_transition_time = current.last_transition_time;
                }
                remove_condition(&mut status, PROGRESSING);
                set_condition(&mut status, c);
            } else if timed_out(&self.s, &status, self.now) {
                let message = format!("{subject} has timed out progressing.");
                set_condition(
                    &mut status,
                    new_condition(PROGRESSING, "False", reason::TIMED_OUT, message, self.now),
                );
            }
        }
        match self.replica_failure() {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        status
    }

    /// A `ReplicaFailure` condition of the new ReplicaSet, else of any old one, as a Deployment
    /// condition.
    fn replica_failure(&self) -> Option<DeploymentCondition> {
        let new_first = self.new.into_iter().chain(self.old());
        let failure = new_first.filter_map(|i| self.sets.get(i)).find_map(|set| {
            let conditions = set.rs.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.into_iter().flatten().find(|c| c.type_.as_deref() == Some(REPLICA_FAILURE)).cloned()
        })?;
        Some(DeploymentCondition {
            type_: failure.type_,
            status: failure.status,
            reason: failure.reason,
            message: failure.message,
            last_update_time: failure.last_transition_time.clone(),
            last_transition_time: failure.last_transition_time,
        })
    }

    /// When to decide again although nothing changes: when a ready pod becomes available, or, for
    /// a rollout in flight (`rollout`), when its progress deadline passes.
    pub fn next_check(&self, status: &DeploymentStatus, rollout: bool) -> Option<Timestamp> {
        let pods = self.sets.iter().map(|set| set.pods.next_available).fold(None, pods::earliest);
        let complete = is_complete(&self.s, self.d.metadata.generation, status);
        let deadline =
            (rollout && !complete).then(|| deadline(&self.s, status)).flatten().filter(|at| *at > self.now);
        pods::earliest(pods, deadline)
    }
}
