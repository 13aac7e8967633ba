//! The moves of a rollout: finding or creating the new ReplicaSet, the RollingUpdate and
//! Recreate strategies, scaling when `spec.replicas` changes, and pruning old ReplicaSets.
//!
//! Each call takes one step, as upstream's sync does: a rolling update either scales the new
//! ReplicaSet up or old ones down, then waits for the pods to catch up (the caller plans again
//! when the ReplicaSets or pods change, or at `next_check`).

use super::{
    super::{DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, REVISION_ANNOTATION, hash},
    Strategy, reason, revision,
    state::{Set, State},
    status::is_complete,
};

impl State<'_> {
    /// Keeps the existing new ReplicaSet in line with the Deployment: copied annotations, a
    /// revision above every old one (this is what makes a rollback current again), and
    /// minReadySeconds. Records its revision for the Deployment's annotation.
    pub fn sync_new_replica_set(&mut self) {
        let Some(i) = self.new else { return };
        let next =
            revision::max_revision(self.old().iter().filter_map(|j| self.sets.get(*j)).map(|s| &s.rs)) + 1;
        let (d, settings) = (self.d, self.s);
        let Some(set) = self.sets.get_mut(i) else { return };
        revision::set_new_rs_annotations(d, &mut set.rs, next, true, &settings);
        let spec = &mut set.rs.spec;
        if spec.min_ready_seconds.unwrap_or(0) != settings.min_ready_seconds {
            spec.min_ready_seconds = Some(settings.min_ready_seconds);
        }
        let annotations = set.rs.metadata.annotations.as_ref();
        self.revision = annotations.and_then(|a| a.get(REVISION_ANNOTATION)).cloned();
        let name = set.rs.metadata.name.clone().unwrap_or_default();
        if self.progressing_missing() {
            self.set_progressing(reason::FOUND_NEW_RS, format!("Found new replica set {name:?}"));
        }
    }

    /// Creates the new ReplicaSet for the current template, sized by [`Self::new_rs_replicas`].
    /// If one of the Deployment's own ReplicaSets already has the name (a hash collision: same
    /// name, other template), bumps `status.collisionCount` instead, which changes the next hash.
    /// Returns whether a ReplicaSet was created.
    pub fn create_new(&mut self) -> bool {
        let hash = hash::pod_template_hash(&self.d.spec.template, self.status.collision_count);
        let mut rs = revision::new_replica_set(self.d, &hash, &self.s);
        if self.sets.iter().any(|set| set.rs.metadata.name == rs.metadata.name) {
            self.status.collision_count = Some(self.status.collision_count.unwrap_or(0).saturating_add(1));
            return false;
        }
        let next = revision::max_revision(self.sets.iter().map(|s| &s.rs)) + 1;
        revision::set_new_rs_annotations(self.d, &mut rs, next, false, &self.s);
        let name = rs.metadata.name.clone().unwrap_or_default();
        self.sets.push(Set { original: None, rs, pods: Default::default() });
        let i = self.sets.len() - 1;
        self.new = Some(i);
        let replicas = self.new_rs_replicas(i);
        if let Some(set) = self.sets.get_mut(i) {
            set.rs.spec.replicas = Some(replicas);
        }
        self.revision = Some(next.to_string());
        self.set_progressing(reason::NEW_RS_CREATED, format!("Created new replica set {name:?}"));
        true
    }

    /// How big the new ReplicaSet (index `i`) may be now: for RollingUpdate, grow it towards
    /// `replicas` as far as `replicas + maxSurge` pods in total allow; for Recreate, `replicas`
    /// (by then no old pod runs).
    fn new_rs_replicas(&self, i: usize) -> i32 {
        let current = self.sets.get(i).map_or(0, Set::replicas);
        match self.s.strategy {
            Strategy::Recreate => self.s.replicas,
            Strategy::RollingUpdate => {
                let max_total = self.s.replicas.saturating_add(self.s.max_surge);
                let total = self.total_replicas();
                if total >= max_total {
                    return current;
                }
                current + (max_total - total).min(self.s.replicas - current).max(0)
            }
        }
    }

    /// One RollingUpdate step: create the new ReplicaSet if missing, else scale it up, else scale
    /// old ones down; prune history once the previous status shows the rollout complete.
    pub fn rolling(&mut self) {
        if self.new.is_none() && !self.create_new() {
            return;
        }
        if self.reconcile_new() || self.reconcile_old() {
            return;
        }
        self.cleanup_if_complete();
    }

    /// Scales the new ReplicaSet towards `replicas` (down, if it is above). Returns whether it
    /// changed.
    fn reconcile_new(&mut self) -> bool {
        let Some(i) = self.new else { return false };
        let current = self.sets.get(i).map_or(0, Set::replicas);
        if current == self.s.replicas {
            return false;
        }
        let target = if current > self.s.replicas { self.s.replicas } else { self.new_rs_replicas(i) };
        self.scale(i, target)
    }

    /// Scales old ReplicaSets down as far as availability allows: first pods that are not
    /// available anyway (they cost nothing), then available ones down to
    /// `replicas - maxUnavailable` available in total. Returns whether any changed.
    fn reconcile_old(&mut self) -> bool {
        let old = self.old();
        if self.replicas_of(old.iter().copied()) == 0 {
            return false;
        }
        let min_available = self.s.replicas - self.s.max_unavailable;
        let new_unavailable =
            self.new.and_then(|i| self.sets.get(i)).map_or(0, |set| set.replicas() - set.available());
        let max_scaled_down = self.total_replicas() - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.scale_down_unhealthy(&old, max_scaled_down);
        let scaled = self.scale_down_available(&old, min_available);
        cleaned + scaled > 0
    }

    /// Takes up to `limit` unavailable replicas off old ReplicaSets, oldest first.
    fn scale_down_unhealthy(&mut self, old: &[usize], limit: i32) -> i32 {
        let mut done = 0;
        for &i in old {
            let Some(set) = self.sets.get(i) else { continue };
            let unhealthy = set.replicas() - set.available();
            if done >= limit || unhealthy <= 0 {
                continue;
            }
            let n = unhealthy.min(limit - done);
            let target = set.replicas() - n;
            self.scale(i, target);
            done += n;
        }
        done
    }

    /// Takes available replicas off old ReplicaSets, oldest first, while more than
    /// `min_available` are available across all of them.
    fn scale_down_available(&mut self, old: &[usize], min_available: i32) -> i32 {
        let available: i32 = self.sets.iter().map(Set::available).sum();
        let wanted = available - min_available;
        let mut done = 0;
        for &i in old {
            let replicas = self.sets.get(i).map_or(0, Set::replicas);
            if done >= wanted || replicas == 0 {
                continue;
            }
            let n = replicas.min(wanted - done);
            self.scale(i, replicas - n);
            done += n;
        }
        done.max(0)
    }

    /// One Recreate step: scale every old ReplicaSet to 0; once no old pod may still run (being
    /// deleted counts as running), create the new ReplicaSet at full size.
    pub fn recreate(&mut self) {
        let mut scaled = false;
        for i in self.old() {
            scaled |= self.scale(i, 0);
        }
        if scaled || self.old_pods_running() {
            return;
        }
        if self.new.is_none() && !self.create_new() {
            return;
        }
        if let Some(i) = self.new {
            self.scale(i, self.s.replicas);
        }
        self.cleanup_if_complete();
    }

    fn old_pods_running(&self) -> bool {
        self.old().iter().filter_map(|i| self.sets.get(*i)).any(|set| set.pods.running > 0)
    }

    /// Whether an active ReplicaSet was sized for another `spec.replicas` than the current one:
    /// the user scaled the Deployment, which is handled by [`Self::scale_all`], not as a rollout.
    pub fn is_scaling_event(&self) -> bool {
        self.sets.iter().filter(|set| set.replicas() > 0).any(|set| {
            let annotations = set.rs.metadata.annotations.as_ref();
            let desired = annotations.and_then(|a| a.get(DESIRED_REPLICAS_ANNOTATION));
            desired.and_then(|v| v.parse::<i32>().ok()).is_some_and(|n| n != self.s.replicas)
        })
    }

    /// Brings the ReplicaSets to the Deployment's size without rolling out (upstream `scale`):
    /// a single active ReplicaSet (or, with none active, the newest) takes `replicas`; a
    /// saturated new ReplicaSet leaves old ones at 0; otherwise, during a rolling update, the
    /// difference to `replicas + maxSurge` is spread over the active ReplicaSets in proportion
    /// to their size, leftovers to the largest.
    pub fn scale_all(&mut self) {
        let active: Vec<usize> = (0..self.sets.len()).filter(|i| self.sets[*i].replicas() > 0).collect();
        let only = match active.as_slice() {
            [] => self.new.or(self.sets.len().checked_sub(1)),
            [one] => Some(*one),
            _ => None,
        };
        if let Some(i) = only {
            self.resize(i, self.s.replicas);
            return;
        }
        if self.new_is_saturated() {
            let new = self.new;
            for i in active.into_iter().filter(|i| Some(*i) != new) {
                self.resize(i, 0);
            }
            return;
        }
        if self.s.strategy == Strategy::RollingUpdate {
            self.scale_proportionally(active);
        }
    }

    /// The new ReplicaSet already has, wants and makes available `replicas` pods.
    fn new_is_saturated(&self) -> bool {
        let Some(set) = self.new.and_then(|i| self.sets.get(i)) else { return false };
        let annotations = set.rs.metadata.annotations.as_ref();
        let desired = annotations.and_then(|a| a.get(DESIRED_REPLICAS_ANNOTATION));
        let desired = desired.and_then(|v| v.parse::<i32>().ok());
        set.replicas() == self.s.replicas
            && desired == Some(self.s.replicas)
            && set.pods.available == self.s.replicas
    }

    fn scale_proportionally(&mut self, mut active: Vec<usize>) {
        let allowed = if self.s.replicas > 0 { self.s.replicas.saturating_add(self.s.max_surge) } else { 0 };
        let to_add = allowed - self.replicas_of(active.iter().copied());
        // Largest first; among equals, grow newer ones first and shrink older ones first.
        active.sort_by(|a, b| {
            let size = |i: &usize| self.sets.get(*i).map_or(0, Set::replicas);
            let age = if to_add > 0 { b.cmp(a) } else { a.cmp(b) };
            size(b).cmp(&size(a)).then(age)
        });
        let mut added = 0;
        let mut sizes: Vec<(usize, i32)> = Vec::with_capacity(active.len());
        for &i in &active {
            let replicas = self.sets.get(i).map_or(0, Set::replicas);
            let share = if to_add == 0 { 0 } else { self.proportion(i, to_add, added) };
            added += share;
            sizes.push((i, replicas + share));
        }
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
        for (i, n) in sizes {
            self.resize(i, n);
        }
    }

    /// Set `i`'s share of `to_add` (of which `added` is handed out already): its size scaled by
    /// the ratio of the new to the old `replicas + maxSurge`, never past what is left to hand out.
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let replicas = self.sets.get(i).map_or(0, Set::replicas);
        if replicas == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.s.replicas == 0 {
            -replicas
        } else {
            let max_now = self.s.replicas.saturating_add(self.s.max_surge);
            let annotations = self.sets.get(i).and_then(|set| set.rs.metadata.annotations.as_ref());
            let annotated = annotations.and_then(|a| a.get(MAX_REPLICAS_ANNOTATION));
            let before = annotated.and_then(|v| v.parse::<i32>().ok()).filter(|n| *n > 0);
            // Without the annotation (e.g. scaled while paused), the current total is the base.
            let before =
                before.or_else(|| self.d.status.as_ref().and_then(|s| s.replicas).filter(|n| *n > 0));
            match before {
                None => 0,
                Some(before) => {
                    let scaled = (f64::from(replicas) * f64::from(max_now) / f64::from(before)).round();
                    scaled as i32 - replicas
                }
            }
        };
        let left = to_add - added;
        if to_add > 0 { fraction.min(left) } else { fraction.max(left) }
    }

    /// Prunes history when the status the Deployment had before this step shows the rollout
    /// complete.
    fn cleanup_if_complete(&mut self) {
        let before = self.d.status.clone().unwrap_or_default();
        if is_complete(&self.s, self.d.metadata.generation, &before) {
            self.cleanup();
        }
    }

    /// Deletes the oldest old ReplicaSets (lowest revision first) beyond
    /// `revisionHistoryLimit`, but only those that are scaled to 0, have no pods and whose
    /// status has caught up, so nothing running is ever deleted this way.
    pub fn cleanup(&mut self) {
        let Some(limit) = self.s.revision_history_limit else { return };
        let mut candidates: Vec<usize> = self
            .old()
            .into_iter()
            .filter(|i| self.sets[*i].rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = candidates.len().saturating_sub(usize::try_from(limit).unwrap_or(0));
        candidates.sort_by_key(|i| (revision::revision(&self.sets[*i].rs).unwrap_or(0), *i));
        for i in candidates.into_iter().take(excess) {
            let set = &self.sets[i];
            let before = set.original.and_then(|rs| rs.spec.replicas).unwrap_or(1);
            let status = set.rs.status.as_ref();
            let status_replicas = status.map_or(0, |s| s.replicas);
            let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
            let settled = set.rs.metadata.generation.is_none_or(|g| g <= observed);
            if set.replicas() == 0 && before == 0 && set.pods.running == 0 && status_replicas == 0 && settled
            {
                self.delete.push(i);
            }
        }
    }
}
