//! What `up` started, in `/run/skiff-lab/state.json`: written before the first thing is created
//! and after each process starts, so `down` (and a failed `up`) know what to stop.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::topology::{LAB_DIR, NodeSpec};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Nodes asked for.
    pub nodes: u8,
    /// Set once every node is Ready.
    pub ready: bool,
    pub control_pid: Option<u32>,
    pub node_procs: Vec<NodeProcs>,
    /// The agents' `--proxy-mode` (`ebpf` or `iptables`).
    #[serde(default = "default_mode")]
    pub proxy_mode: String,
}

fn default_mode() -> String {
    "ebpf".into()
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct NodeProcs {
    pub index: u8,
    pub containerd_pid: Option<u32>,
    pub agent_pid: Option<u32>,
    pub pod_cidr: Option<String>,
}

impl NodeProcs {
    pub fn spec(&self) -> NodeSpec {
        NodeSpec { index: self.index }
    }
}

pub fn path() -> PathBuf {
    Path::new(LAB_DIR).join("state.json")
}

/// The recorded state; `None` when no lab was started.
pub fn load() -> anyhow::Result<Option<LabState>> {
    let path = path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the state atomically (beside, then renamed).
pub fn save(state: &LabState) -> anyhow::Result<()> {
    let path = path();
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state)?;
    std::fs::create_dir_all(LAB_DIR).with_context(|| format!("creating {LAB_DIR}"))?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_through_json() {
        let state = LabState {
            nodes: 2,
            proxy_mode: "iptables".into(),
            ready: true,
            control_pid: Some(7),
            node_procs: vec![NodeProcs {
                index: 1,
                containerd_pid: Some(8),
                agent_pid: Some(9),
                pod_cidr: Some("10.244.0.0/24".into()),
            }],
        };
        let text = serde_json::to_string(&state).expect("serialize");
        let back: LabState = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.node_procs[0].spec().name(), "skiff-lab-n1");
        assert_eq!(back.node_procs[0].pod_cidr.as_deref(), Some("10.244.0.0/24"));
        assert_eq!((back.nodes, back.ready, back.control_pid), (2, true, Some(7)));
        assert_eq!(back.proxy_mode, "iptables");
    }
}
