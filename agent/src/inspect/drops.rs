//! `skiff drops`: the datapath's drop and reject counters by reason, summed over CPUs, with the
//! change since the previous reading under `--watch`.

use std::path::Path;

use anyhow::Context as _;
use aya::maps::{Map, PerCpuArray};
use serde::Serialize;
use skiff_common::{DropReason, names};

use super::{
    output::{number, table, text},
    pins,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropCount {
    /// The stable number (`skiff_common::DropReason`).
    pub reason: u32,
    pub name: String,
    pub description: &'static str,
    pub count: u64,
    /// Since the previous reading (`--watch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<u64>,
}

/// Every reason's count, in reason order (zeros included: a reason that never fired is news too).
pub fn read(pin_dir: &Path) -> anyhow::Result<Vec<DropCount>> {
    let map = pins::open(pin_dir, names::MAP_DROPS)?;
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(map)).context("SKIFF_DROPS is not a per-CPU array")?;
    DropReason::ALL
        .iter()
        .map(|reason| {
            let per_cpu = counters.get(&reason.slot(), 0).context("reading SKIFF_DROPS")?;
            Ok(DropCount {
                reason: reason.slot(),
                name: reason.name().to_owned(),
                description: reason.as_str(),
                count: per_cpu.iter().sum(),
                delta: None,
            })
        })
        .collect()
}

/// `now` with each reason's increase over `before` (a counter that went down — the map was
/// recreated — counts from zero).
pub fn with_deltas(before: &[DropCount], mut now: Vec<DropCount>) -> Vec<DropCount> {
    for row in &mut now {
        let prev = before.iter().find(|b| b.reason == row.reason).map_or(0, |b| b.count);
        row.delta = Some(if row.count >= prev { row.count - prev } else { row.count });
    }
    now
}

pub fn as_table(rows: &[DropCount]) -> String {
    let watching = rows.iter().any(|r| r.delta.is_some());
    let mut columns = vec![number("#"), text("REASON"), number("COUNT")];
    if watching {
        columns.push(number("DELTA"));
    }
    columns.push(text("MEANING"));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![r.reason.to_string(), r.name.clone(), r.count.to_string()];
            if watching {
                cells.push(r.delta.map_or_else(String::new, |d| format!("+{d}")));
            }
            cells.push(r.description.to_owned());
            cells
        })
        .collect();
    table(&columns, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reason: DropReason, count: u64) -> DropCount {
        DropCount {
            reason: reason.slot(),
            name: reason.name().to_owned(),
            description: reason.as_str(),
            count,
            delta: None,
        }
    }

    #[test]
    fn deltas_are_increases_and_a_reset_counter_counts_from_zero() {
        let before = [row(DropReason::NoEndpoints, 10), row(DropReason::BackendGone, 7)];
        let now = vec![
            row(DropReason::NoEndpoints, 15),
            row(DropReason::BackendGone, 2),
            row(DropReason::NoRoute, 4),
        ];
        let deltas: Vec<Option<u64>> = with_deltas(&before, now).iter().map(|r| r.delta).collect();
        assert_eq!(deltas, [Some(5), Some(2), Some(4)]);
    }

    #[test]
    fn the_table_names_each_reason_and_shows_deltas_only_when_watching() {
        let rows = vec![row(DropReason::NoEndpoints, 3), row(DropReason::SourceRangeDenied, 12)];
        assert_eq!(
            as_table(&rows),
            concat!(
                " #  REASON             COUNT  MEANING\n",
                " 1  NoEndpoints            3  service has no endpoints (rejected)\n",
                "15  SourceRangeDenied     12  client outside the load balancer's source ranges\n",
            )
        );
        let watched = with_deltas(&rows, rows.clone());
        assert!(
            as_table(&watched).lines().nth(1).is_some_and(|l| l.contains("+0")),
            "{}",
            as_table(&watched)
        );
    }
}
