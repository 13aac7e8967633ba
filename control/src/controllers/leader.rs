//! Leader election through a coordination.k8s.io/v1 Lease (`kube-system/skiff-control`), as
//! kube-controller-manager does: the holder renews it every retry period; a candidate takes it
//! over once it has gone unrenewed for the lease duration. The loops run only while this process
//! holds the Lease, and stop when a renewal has failed for the renew deadline — before anyone
//! else may take over — so two skiff-control processes on one store never run them together.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};

use super::{Ctx, Manager, clock};
use crate::{
    api::{ApiError, registry},
    store::Store,
};

const NAMESPACE: &str = "kube-system";
const NAME: &str = "skiff-control";
const MANAGER: &str = "skiff-leader-election";

#[derive(Debug, Clone)]
pub struct Election {
    /// Who this process is (`holderIdentity`).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops the loops.
    pub renew_deadline: Duration,
    /// How often to renew, and how often a candidate tries.
    pub retry_period: Duration,
}

impl Election {
    /// kube-controller-manager's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Campaigns for the Lease, runs the loops while holding it, and campaigns again after losing
/// it; returns when the store shuts down.
pub async fn run<S: Store + Clone>(ctx: Ctx<S>, election: Election) {
    loop {
        loop {
            // A standby tries again when the holder's Lease runs out (if that is sooner than the
            // retry period), so a dead leader is replaced within the lease duration.
            let wait = match try_hold(&ctx, &election).await {
                Ok(Hold::Mine) => break,
                Ok(Hold::Theirs { expires }) => election
                    .retry_period
                    .min(clock::until(ctx.clock.now(), expires) + Duration::from_millis(20)),
                Err(e) => {
                    tracing::debug!("leader election: {}", e.message);
                    election.retry_period
                }
            };
            tokio::time::sleep(wait).await;
        }
        tracing::info!(identity = %election.identity, "leading: running the control loops");
        // Aborted with this task too (a dropped LocalServer stops its loops and frees the store).
        let loops = AbortOnDrop(tokio::spawn(run_loops(ctx.clone())));
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(election.retry_period).await;
            if loops.0.is_finished() {
                return;
            }
            match try_hold(&ctx, &election).await {
                Ok(Hold::Mine) => renewed = tokio::time::Instant::now(),
                Ok(Hold::Theirs { .. }) => break,
                Err(e) if renewed.elapsed() >= election.renew_deadline => {
                    tracing::warn!("leader election: could not renew: {}", e.message);
                    break;
                }
                Err(_) => {}
            }
        }
        drop(loops);
        tracing::warn!(identity = %election.identity, "lost the leader Lease: control loops stopped");
    }
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The loops, started over after a failure; return when the store shuts down.
async fn run_loops<S: Store + Clone>(ctx: Ctx<S>) {
    loop {
        let result = match Manager::new(ctx.clone()) {
            Ok(manager) => manager.run().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) | Err(crate::store::StoreError::Closed) => return,
            Err(e) => {
                tracing::warn!("control loops restarting: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Who holds the Lease after an attempt to take or renew it.
enum Hold {
    Mine,
    /// Someone else, until `expires` unless they renew it.
    Theirs {
        expires: Timestamp,
    },
}

/// Takes or renews the Lease.
async fn try_hold<S: Store + Clone>(ctx: &Ctx<S>, election: &Election) -> Result<Hold, ApiError> {
    let now = ctx.clock.now();
    let key = registry::builtin("leases", "coordination.k8s.io")?.key(Some(NAMESPACE), NAME);
    let Some(stored) = ctx.server.store.get(&key) else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(NAME.into()),
                namespace: Some(NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(election.identity.clone()),
                lease_duration_seconds: Some(seconds(election.lease_duration)),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match ctx.server.create_as(super::writes::to_json(&lease)?, MANAGER).await {
            Ok(_) => Ok(Hold::Mine),
            // Someone created it first: theirs for a lease duration, as far as we know yet.
            Err(e) if e.reason == "AlreadyExists" => {
                Ok(Hold::Theirs { expires: clock::after(now, election.lease_duration) })
            }
            Err(e) => Err(e),
        };
    };
    let mut lease: Lease =
        serde_json::from_slice(&stored.value).map_err(|e| ApiError::internal(e.to_string()))?;
    lease.metadata.resource_version = Some(stored.mod_revision.to_string());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(election.identity.as_str());
    let duration = spec
        .lease_duration_seconds
        .map_or(election.lease_duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    let renewed = spec.renew_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let expires = clock::after(renewed, duration);
    if !mine && now < expires {
        return Ok(Hold::Theirs { expires });
    }
    if !mine {
        spec.holder_identity = Some(election.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(seconds(election.lease_duration));
    spec.renew_time = Some(MicroTime(now));
    match ctx.server.replace_as(super::writes::to_json(&lease)?, false, MANAGER).await {
        Ok(_) => Ok(Hold::Mine),
        // Someone else wrote it first: they hold it (or renewed it) now, for a lease duration.
        Err(e) if e.reason == "Conflict" && !mine => {
            Ok(Hold::Theirs { expires: clock::after(now, election.lease_duration) })
        }
        Err(e) => Err(e),
    }
}
