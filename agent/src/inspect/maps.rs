//! `skiff maps`: every pinned map's kind, capacity and fill, with a warning near full (a full
//! conntrack or frontend map is where a datapath starts failing quietly).

use std::path::Path;

use anyhow::Context as _;
use aya::maps::MapType;
use serde::Serialize;
use skiff_common::names;

use super::{
    output::{number, table, text},
    pins,
};

/// Fill at or above which a map is flagged.
pub const NEAR_FULL_PERCENT: f64 = 90.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapFill {
    pub name: &'static str,
    pub kind: String,
    pub max_entries: u32,
    /// Keys present; `None` for arrays, whose every slot always exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill_percent: Option<f64>,
    pub near_full: bool,
}

/// Arrays (and the ring buffer) have no keys to count.
fn keyed(kind: MapType) -> bool {
    matches!(
        kind,
        MapType::Hash | MapType::LruHash | MapType::PerCpuHash | MapType::LruPerCpuHash | MapType::LpmTrie
    )
}

/// Every map skiff pins under `pin_dir`, in `skiff_common::names::MAPS` order (aya-log's ring
/// buffer is the agent's own and not pinned).
pub fn read(pin_dir: &Path) -> anyhow::Result<Vec<MapFill>> {
    names::MAPS
        .iter()
        .filter(|&&name| name != names::MAP_LOGS)
        .map(|&name| {
            let map = pins::open(pin_dir, name)?;
            let info = map.info().with_context(|| format!("reading {name}'s info"))?;
            let kind = info.map_type().with_context(|| format!("{name}'s type"))?;
            let max_entries = info.max_entries();
            let entries = if keyed(kind) {
                Some(
                    pins::count_keys(&map, info.key_size(), max_entries)
                        .with_context(|| format!("counting {name}"))?,
                )
            } else {
                None
            };
            let fill_percent = entries.map(|n| n as f64 * 100.0 / f64::from(max_entries.max(1)));
            Ok(MapFill {
                name,
                kind: format!("{kind:?}"),
                max_entries,
                entries,
                fill_percent,
                near_full: fill_percent.is_some_and(|p| p >= NEAR_FULL_PERCENT),
            })
        })
        .collect()
}

pub fn as_table(rows: &[MapFill]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.to_owned(),
                r.kind.clone(),
                r.max_entries.to_string(),
                r.entries.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                r.fill_percent.map_or_else(|| "-".to_owned(), |p| format!("{p:.1}%")),
                if r.near_full { "near full".to_owned() } else { String::new() },
            ]
        })
        .collect();
    table(
        &[text("MAP"), text("KIND"), number("CAPACITY"), number("ENTRIES"), number("FILL"), text("WARNING")],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_show_no_fill_and_a_nearly_full_map_is_flagged() {
        let rows = [
            MapFill {
                name: "SKIFF_CT",
                kind: "LruHash".into(),
                max_entries: 1000,
                entries: Some(950),
                fill_percent: Some(95.0),
                near_full: true,
            },
            MapFill {
                name: "SKIFF_DROPS",
                kind: "PerCpuArray".into(),
                max_entries: 16,
                entries: None,
                fill_percent: None,
                near_full: false,
            },
        ];
        assert_eq!(
            as_table(&rows),
            "\
MAP          KIND         CAPACITY  ENTRIES   FILL  WARNING
SKIFF_CT     LruHash          1000      950  95.0%  near full
SKIFF_DROPS  PerCpuArray        16        -      -
"
        );
    }
}
