//! An in-memory copy of the load balancer's maps, for golden tests of the whole control path
//! (YAML in, map dump out) without privileges.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::Ipv4Addr,
};

use skiff_common::lb::{
    BACKEND_F_LOCAL, Backend, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_RANDOM, SVC_F_SOURCE_RANGES,
    ServiceKey, ServiceValue,
};

use super::dataplane::MapStore;
use crate::datapath::DatapathError;

/// The maps' contents, as the datapath would see them.
#[derive(Debug, Clone)]
pub struct MemoryMaps {
    m: u32,
    rows_cap: u32,
    backends_cap: u32,
    pub services: HashMap<ServiceKey, ServiceValue>,
    pub backends: HashMap<u32, Backend>,
    pub rows: HashMap<u32, Vec<u32>>,
    /// loadBalancerSourceRanges per row.
    pub source_ranges: HashMap<u32, std::collections::BTreeSet<(Ipv4Addr, u8)>>,
    /// Every purge the dataplane asked for: (frontend, row, backend id).
    pub purges: Vec<(ServiceKey, u32, u32)>,
    /// Counts of map writes, to check that diffs are minimal.
    pub writes: usize,
}

impl MemoryMaps {
    pub fn new(m: u32, rows: u32) -> Self {
        Self::with_backends(m, rows, 65536)
    }

    pub fn with_backends(m: u32, rows: u32, backends: u32) -> Self {
        Self {
            m,
            rows_cap: rows,
            backends_cap: backends,
            services: HashMap::new(),
            backends: HashMap::new(),
            rows: HashMap::new(),
            source_ranges: HashMap::new(),
            purges: Vec::new(),
            writes: 0,
        }
    }

    /// A stable, readable dump: frontends with their backends and Maglev shares, ClusterIP
    /// markers, and backends. Ids and rows are left out (they are allocation details); addresses
    /// stand in for them.
    pub fn dump(&self) -> String {
        let ip = |be: u32| Ipv4Addr::from(be.to_ne_bytes());
        let backend = |id: &u32| {
            self.backends.get(id).map_or_else(
                || format!("<missing backend {id}>"),
                |b| format!("{}:{}", ip(b.addr_be), u16::from_be(b.port_be)),
            )
        };
        let mut frontends = BTreeMap::new();
        let mut markers = Vec::new();
        for (key, value) in &self.services {
            if key.port_be == 0 && key.proto == 0 {
                markers.push(ip(key.addr_be));
                continue;
            }
            let proto = match key.proto {
                6 => "TCP",
                17 => "UDP",
                _ => "?",
            };
            let name = format!("{}:{}/{proto}", ip(key.addr_be), u16::from_be(key.port_be));
            let mut line = format!("frontend {name} backends={}", value.backend_count);
            for (flag, word) in [
                (SVC_F_EXTERNAL, "external"),
                (SVC_F_AFFINITY, "affinity"),
                (SVC_F_LOCAL, "local"),
                (SVC_F_RANDOM, "random"),
            ] {
                if value.flags & flag != 0 {
                    line.push(' ');
                    line.push_str(word);
                }
            }
            if value.flags & SVC_F_AFFINITY != 0 {
                let _ = write!(line, " timeout={}s", value.affinity_timeout_s);
            }
            if value.flags & SVC_F_SOURCE_RANGES != 0 {
                let ranges: Vec<String> = self
                    .source_ranges
                    .get(&value.id)
                    .into_iter()
                    .flatten()
                    .map(|(a, l)| format!("{a}/{l}"))
                    .collect();
                let _ = write!(line, " source-ranges={}", ranges.join(","));
            }
            let mut shares: BTreeMap<String, usize> = BTreeMap::new();
            if value.backend_count > 0 {
                for id in self.rows.get(&value.id).into_iter().flatten() {
                    *shares.entry(backend(id)).or_default() += 1;
                }
            }
            frontends.insert(name, (line, shares));
        }
        let mut out = String::new();
        for (line, shares) in frontends.values() {
            out.push_str(line);
            out.push('\n');
            for (addr, n) in shares {
                let _ = writeln!(out, "  -> {addr} slots={n}");
            }
        }
        markers.sort();
        for m in markers {
            let _ = writeln!(out, "clusterip {m}");
        }
        let mut addrs: Vec<String> = self
            .backends
            .iter()
            .map(|(id, b)| {
                if b.flags & BACKEND_F_LOCAL != 0 { format!("{} (local)", backend(id)) } else { backend(id) }
            })
            .collect();
        addrs.sort();
        for a in addrs {
            let _ = writeln!(out, "backend {a}");
        }
        out
    }
}

impl MapStore for MemoryMaps {
    fn set_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), DatapathError> {
        self.writes += 1;
        self.services.insert(key, value);
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
        self.writes += 1;
        self.services.remove(key);
        Ok(())
    }
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DatapathError> {
        self.writes += 1;
        self.backends.insert(id, backend);
        Ok(())
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        self.writes += 1;
        self.backends.remove(&id);
        Ok(())
    }
    fn allow_source(&mut self, row: u32, addr: Ipv4Addr, len: u8) -> Result<(), DatapathError> {
        self.writes += 1;
        self.source_ranges.entry(row).or_default().insert((addr, len));
        Ok(())
    }
    fn source_ranges(&self, row: u32) -> Vec<(Ipv4Addr, u8)> {
        self.source_ranges.get(&row).into_iter().flatten().copied().collect()
    }
    fn forget_source(&mut self, row: u32, addr: Ipv4Addr, len: u8) -> Result<(), DatapathError> {
        self.writes += 1;
        if let Some(set) = self.source_ranges.get_mut(&row) {
            set.remove(&(addr, len));
        }
        Ok(())
    }
    fn set_maglev_row(&mut self, row: u32, ids: &[u32]) -> Result<(), DatapathError> {
        if row >= self.rows_cap || ids.len() != self.m as usize {
            return Err(DatapathError::MaglevRow { row, len: ids.len(), rows: self.rows_cap, m: self.m });
        }
        self.writes += 1;
        self.rows.insert(row, ids.to_vec());
        Ok(())
    }
    fn purge_flows(&mut self, key: &ServiceKey, row: u32, backend_id: u32) -> Result<usize, DatapathError> {
        self.purges.push((*key, row, backend_id));
        Ok(0)
    }
    fn purge_backend(&mut self, _backend_id: u32) -> Result<usize, DatapathError> {
        Ok(0)
    }
    fn purge_row(&mut self, _row: u32) -> Result<usize, DatapathError> {
        Ok(0)
    }
    fn maglev_m(&self) -> u32 {
        self.m
    }
    fn rows(&self) -> u32 {
        self.rows_cap
    }
    fn max_backends(&self) -> u32 {
        self.backends_cap
    }
    fn frontends(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.services.iter().map(|(k, v)| (*k, *v)).collect()
    }
    fn backend_entries(&self) -> Vec<(u32, Backend)> {
        self.backends.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
