//! A Deployment's spec with API defaults applied and the rolling-update fenceposts resolved.
//!
//! skiff's API server may store a Deployment without the defaults upstream's would have filled
//! in, so they are applied here: replicas 1, strategy RollingUpdate with maxSurge and
//! maxUnavailable 25%, revisionHistoryLimit 10, progressDeadlineSeconds 600.

use k8s_openapi::{api::apps::v1::Deployment, apimachinery::pkg::util::intstr::IntOrString};

/// How a Deployment replaces pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// New pods come up while old ones go down, within maxSurge / maxUnavailable.
    RollingUpdate,
    /// All old pods go away before any new one is created.
    Recreate,
}

/// The resolved knobs of one Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `spec.strategy.type`; an unknown type is treated as RollingUpdate (validation rejects it).
    pub strategy: Strategy,
    /// Pods allowed above `replicas` during a rolling update; 0 for Recreate.
    pub max_surge: i32,
    /// Pods allowed below `replicas` during a rolling update, at most `replicas`; 0 for Recreate
    /// or when `replicas` is 0.
    pub max_unavailable: i32,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
    /// Old ReplicaSets to keep; `None` keeps all (`revisionHistoryLimit` of `i32::MAX`).
    pub revision_history_limit: Option<i32>,
    /// Seconds without progress before a rollout is reported failed; `None` when disabled
    /// (`progressDeadlineSeconds` of `i32::MAX`).
    pub progress_deadline_seconds: Option<i32>,
    /// `spec.paused`.
    pub paused: bool,
}

/// maxSurge and maxUnavailable when unset: 25% of replicas.
const DEFAULT_PERCENT: i64 = 25;

/// Resolves `d`'s spec.
pub fn settings(d: &Deployment) -> Settings {
    let spec = &d.spec;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let strategy = spec.strategy.as_ref();
    let kind = match strategy.and_then(|s| s.type_.as_deref()) {
        Some("Recreate") => Strategy::Recreate,
        _ => Strategy::RollingUpdate,
    };
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let (max_surge, max_unavailable) = match kind {
        Strategy::Recreate => (0, 0),
        Strategy::RollingUpdate => fenceposts(
            rolling.and_then(|r| r.max_surge.as_ref()),
            rolling.and_then(|r| r.max_unavailable.as_ref()),
            replicas,
        ),
    };
    let unlimited = |v: i32| (v != i32::MAX).then_some(v.max(0));
    Settings {
        replicas,
        strategy: kind,
        max_surge,
        max_unavailable: if replicas == 0 { 0 } else { max_unavailable.min(replicas) },
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0).max(0),
        revision_history_limit: unlimited(spec.revision_history_limit.unwrap_or(10)),
        progress_deadline_seconds: unlimited(spec.progress_deadline_seconds.unwrap_or(600)),
        paused: spec.paused.unwrap_or(false),
    }
}

/// maxSurge (percentages round up) and maxUnavailable (round down) for `replicas`. If both come
/// out 0, maxUnavailable becomes 1: validation forbids asking for 0/0, but rounding down can
/// produce it, and a rollout that may neither add nor remove a pod would never move.
pub fn fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let surge = scaled(surge, replicas, true);
    let unavailable = scaled(unavailable, replicas, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// An absolute count, or a percentage of `total`. Anything else (validation rejects it) counts
/// as the 25% default rather than stopping the Deployment.
fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    let percent = |s: &str| s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok());
    let percent = match value {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => percent(s),
        None => None,
    };
    let part = percent.unwrap_or(DEFAULT_PERCENT).max(0).saturating_mul(i64::from(total));
    let count = if round_up { part.saturating_add(99) / 100 } else { part / 100 };
    i32::try_from(count).unwrap_or(i32::MAX)
}
