//! A DaemonSet's update knobs, with API defaults applied and percentages resolved against the
//! number of nodes that should run it.
//!
//! Defaults are applied here because skiff's API server may store a DaemonSet without them:
//! strategy RollingUpdate, maxUnavailable 1, maxSurge 0. Both fenceposts round percentages
//! *up* (unlike a Deployment's maxUnavailable), and if both come out 0 on a DaemonSet that
//! should run somewhere, maxUnavailable becomes 1 so a rollout can always move.

use k8s_openapi::{api::apps::v1::DaemonSet, apimachinery::pkg::util::intstr::IntOrString};

/// How a DaemonSet replaces pods whose template is out of date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Old pods are replaced node by node, within maxUnavailable / maxSurge.
    RollingUpdate,
    /// Old pods stay until someone deletes them; their replacements are current.
    OnDelete,
}

/// The resolved knobs of one DaemonSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub strategy: Strategy,
    /// Nodes that may be without an available pod during a rollout; 0 for OnDelete.
    pub max_unavailable: i32,
    /// Nodes that may run a new pod next to the old one during a rollout; 0 for OnDelete.
    pub max_surge: i32,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
}

impl Settings {
    /// Whether a node may run two pods (old and new) at once.
    pub fn allows_surge(&self) -> bool {
        self.max_surge > 0
    }
}

/// Resolves `ds`'s spec for `desired` nodes (those that should run it).
pub fn settings(ds: &DaemonSet, desired: usize) -> Settings {
    let strategy = ds.spec.update_strategy.as_ref();
    let kind = match strategy.and_then(|s| s.type_.as_deref()) {
        Some("OnDelete") => Strategy::OnDelete,
        _ => Strategy::RollingUpdate,
    };
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let desired = i32::try_from(desired).unwrap_or(i32::MAX);
    let (mut max_unavailable, max_surge) = match kind {
        Strategy::OnDelete => (0, 0),
        Strategy::RollingUpdate => (
            scaled(rolling.and_then(|r| r.max_unavailable.as_ref()), desired, 1),
            scaled(rolling.and_then(|r| r.max_surge.as_ref()), desired, 0),
        ),
    };
    if kind == Strategy::RollingUpdate && desired > 0 && max_unavailable == 0 && max_surge == 0 {
        max_unavailable = 1;
    }
    Settings {
        strategy: kind,
        max_unavailable,
        max_surge,
        min_ready_seconds: ds.spec.min_ready_seconds.unwrap_or(0).max(0),
    }
}

/// An absolute count, or a percentage of `total` rounded up; unset or malformed (validation
/// rejects that) gives `default`.
fn scaled(value: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match value {
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(percent) => {
                let part = percent.max(0).saturating_mul(i64::from(total));
                i32::try_from(part.saturating_add(99) / 100).unwrap_or(i32::MAX)
            }
            None => default,
        },
        None => default,
    }
}
