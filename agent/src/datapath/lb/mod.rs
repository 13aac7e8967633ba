//! User-space access to the load balancer's maps: frontends, backends, Maglev rows, conntrack.

pub mod maglev;
mod table;

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use skiff_common::{
    DropReason,
    lb::{
        AffinityKey, AffinityValue, Backend, CtForward, CtKey, CtReverse, ServiceKey, ServiceValue,
        SourceRange,
    },
    names,
    trace::FlowStats,
};

pub use table::MaglevTable;

use super::DatapathError;

/// What a purge can match an entry on: the frontend's Maglev row (conntrack, affinity), the
/// backend id, and the frontend address (conntrack, reverse NAT; network order and protocol).
#[derive(Debug, Clone, Copy)]
pub struct FlowRef {
    pub row: Option<u32>,
    pub backend: u32,
    pub frontend: Option<(u32, u16, u8)>,
}

/// The load balancer's maps, taken out of the loaded object (the programs keep their own
/// references, so this is the agent's handle on the live state).
pub struct LbMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, u32, Backend>,
    ct: HashMap<MapData, CtKey, CtForward>,
    rnat: HashMap<MapData, CtKey, CtReverse>,
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    source_ranges: LpmTrie<MapData, SourceRange, u8>,
    drops: PerCpuArray<MapData, u64>,
    svc_stats: PerCpuArray<MapData, FlowStats>,
    be_stats: PerCpuArray<MapData, FlowStats>,
    maglev: MaglevTable,
    max_backends: u32,
    /// The socket-level load balancer is on: UDP sockets it sent to a backend that leaves are
    /// ended (see [`LbMaps::end_udp_sockets`]), in this namespace (`None`: the agent's own).
    pub(super) socket_lb: Option<Option<std::path::PathBuf>>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

impl std::fmt::Debug for LbMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbMaps").field("maglev", &self.maglev).finish_non_exhaustive()
    }
}

impl LbMaps {
    pub(super) fn take(
        ebpf: &mut Ebpf,
        maglev_entries: u32,
        m: u32,
        max_backends: u32,
    ) -> Result<Self, DatapathError> {
        let maglev_map: aya::maps::Map =
            ebpf.take_map(names::MAP_MAGLEV).ok_or(DatapathError::MissingMap(names::MAP_MAGLEV))?;
        let maglev_data = match &maglev_map {
            aya::maps::Map::Array(data) => data,
            _ => return Err(DatapathError::MissingMap(names::MAP_MAGLEV)),
        };
        let maglev = MaglevTable::map(maglev_data.fd(), maglev_entries, m)?;
        Ok(Self {
            services: take(ebpf, names::MAP_SERVICES)?,
            backends: take(ebpf, names::MAP_BACKENDS)?,
            ct: take(ebpf, names::MAP_CT)?,
            rnat: take(ebpf, names::MAP_RNAT)?,
            affinity: take(ebpf, names::MAP_AFFINITY)?,
            source_ranges: take(ebpf, names::MAP_SRC_RANGES)?,
            drops: take(ebpf, names::MAP_DROPS)?,
            svc_stats: take(ebpf, names::MAP_SVC_STATS)?,
            be_stats: take(ebpf, names::MAP_BE_STATS)?,
            maglev,
            max_backends,
            socket_lb: None,
        })
    }

    /// Zeroes the traffic counters of a frontend row or backend id about to be (re)used, so a new
    /// frontend or endpoint never inherits what an earlier one counted.
    pub fn reset_stats(&mut self, row: Option<u32>, backend: Option<u32>) -> Result<(), DatapathError> {
        let zeros = || {
            let cpus =
                aya::util::nr_cpus().map_err(|_| DatapathError::Config("cannot count the possible CPUs"))?;
            aya::maps::PerCpuValues::try_from(vec![FlowStats::default(); cpus])
                .map_err(|_| DatapathError::Config("cannot count the possible CPUs"))
        };
        if let Some(row) = row {
            self.svc_stats.set(row, zeros()?, 0).map_err(map_err(names::MAP_SVC_STATS))?;
        }
        if let Some(id) = backend {
            self.be_stats.set(id, zeros()?, 0).map_err(map_err(names::MAP_BE_STATS))?;
        }
        Ok(())
    }

    /// Adds or replaces a frontend.
    pub fn set_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), DatapathError> {
        self.services.insert(key, value, 0).map_err(map_err(names::MAP_SERVICES))
    }

    /// Removes a frontend; absent is fine.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
        ignore_missing(self.services.remove(key)).map_err(map_err(names::MAP_SERVICES))
    }

    pub fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        self.services.get(key, 0).ok()
    }

    /// Every frontend and ClusterIP marker.
    pub fn services(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.services.iter().filter_map(Result::ok).collect()
    }

    /// Every backend.
    pub fn backends(&self) -> Vec<(u32, Backend)> {
        self.backends.iter().filter_map(Result::ok).collect()
    }

    pub fn max_backends(&self) -> u32 {
        self.max_backends
    }

    pub fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DatapathError> {
        self.backends.insert(id, backend, 0).map_err(map_err(names::MAP_BACKENDS))
    }

    pub fn backend(&self, id: u32) -> Option<Backend> {
        self.backends.get(&id, 0).ok()
    }

    /// Removes a backend; flows still pinned to it are purged by [`LbMaps::purge_frontend_flows`].
    pub fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.backends.remove(&id)).map_err(map_err(names::MAP_BACKENDS))
    }

    /// Writes a frontend's Maglev row (exactly `M` ids).
    pub fn set_maglev_row(&mut self, row: u32, ids: &[u32]) -> Result<(), DatapathError> {
        self.maglev.write_row(row, ids)
    }

    pub fn maglev_row(&self, row: u32) -> Option<Vec<u32>> {
        self.maglev.read_row(row)
    }

    pub fn maglev_m(&self) -> u32 {
        self.maglev.m()
    }

    /// Rows in the Maglev table: the frontend capacity.
    pub fn maglev_rows(&self) -> u32 {
        self.maglev.rows()
    }

    /// Ends the flows of one frontend (`key`, Maglev row `row`) that go to `backend_id`: its
    /// conntrack, reverse-NAT and affinity entries, so no flow (UDP above all) keeps going to an
    /// endpoint that left the frontend. Flows of other frontends to the same address are kept.
    /// Returns how many flows it ended.
    pub fn purge_frontend_flows(
        &mut self,
        key: &ServiceKey,
        row: u32,
        backend_id: u32,
    ) -> Result<usize, DatapathError> {
        let frontend = (key.addr_be, key.port_be, key.proto);
        self.purge_where(|f| {
            f.backend == backend_id
                && match (f.row, f.frontend) {
                    (Some(r), _) => r == row,
                    (None, Some(fe)) => fe == frontend,
                    (None, None) => false,
                }
        })
    }

    /// Ends every conntrack, reverse-NAT and affinity entry `matches` accepts. Returns the forward
    /// entries removed.
    pub fn purge_where(&mut self, matches: impl Fn(&FlowRef) -> bool) -> Result<usize, DatapathError> {
        let ct: Vec<CtKey> = self
            .ct
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| {
                matches(&FlowRef {
                    row: Some(v.svc_id),
                    backend: v.backend_id,
                    frontend: Some((k.daddr_be, k.dport_be, k.proto)),
                })
            })
            .map(|(k, _)| k)
            .collect();
        for k in &ct {
            ignore_missing(self.ct.remove(k)).map_err(map_err(names::MAP_CT))?;
        }
        let rnat: Vec<CtKey> = self
            .rnat
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| {
                matches(&FlowRef {
                    row: None,
                    backend: v.backend_id,
                    frontend: Some((v.vip_be, v.vport_be, k.proto)),
                })
            })
            .map(|(k, _)| k)
            .collect();
        for k in &rnat {
            ignore_missing(self.rnat.remove(k)).map_err(map_err(names::MAP_RNAT))?;
        }
        let affinity: Vec<AffinityKey> = self
            .affinity
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| matches(&FlowRef { row: Some(k.svc_id), backend: v.backend_id, frontend: None }))
            .map(|(k, _)| k)
            .collect();
        for k in &affinity {
            ignore_missing(self.affinity.remove(k)).map_err(map_err(names::MAP_AFFINITY))?;
        }
        Ok(ct.len())
    }

    /// Forgets one flow's forward entry (as its expiry or an LRU eviction would).
    pub fn remove_flow(&mut self, key: &CtKey) -> Result<(), DatapathError> {
        ignore_missing(self.ct.remove(key)).map_err(map_err(names::MAP_CT))
    }

    /// Forward conntrack entries (for inspection and tests).
    pub fn conntrack(&self) -> Vec<(CtKey, CtForward)> {
        self.ct.iter().filter_map(Result::ok).collect()
    }

    /// Reverse-NAT entries (for inspection and tests).
    pub fn reverse_nat(&self) -> Vec<(CtKey, CtReverse)> {
        self.rnat.iter().filter_map(Result::ok).collect()
    }

    /// Lets clients in `addr/len` reach the frontend of Maglev row `row`.
    pub fn allow_source(&mut self, row: u32, addr_be: u32, len: u8) -> Result<(), DatapathError> {
        let key = Key::new(SourceRange::prefix_len(len), SourceRange { svc_id_be: row.to_be(), addr_be });
        self.source_ranges.insert(&key, 1, 0).map_err(map_err(names::MAP_SRC_RANGES))
    }

    /// Takes a source range of row `row` away; absent is fine.
    pub fn forget_source(&mut self, row: u32, addr_be: u32, len: u8) -> Result<(), DatapathError> {
        let key = Key::new(SourceRange::prefix_len(len), SourceRange { svc_id_be: row.to_be(), addr_be });
        ignore_missing(self.source_ranges.remove(&key)).map_err(map_err(names::MAP_SRC_RANGES))
    }

    /// Ends the node's UDP sockets connected to `addr:port`, a backend leaving a frontend, when the
    /// socket-level load balancer is on: a connected UDP socket it sent there would otherwise keep
    /// sending into nothing (no hook runs for its later datagrams). The application's next call
    /// fails with ECONNABORTED and it reconnects — to a live backend. Done with the kernel's socket
    /// destroy (`ss -K`, CONFIG_INET_DIAG_DESTROY); a failure is logged, never fatal.
    pub fn end_udp_sockets(&self, addr: std::net::Ipv4Addr, port: u16) {
        let Some(netns) = &self.socket_lb else { return };
        let mut cmd = std::process::Command::new("ss");
        cmd.args(["-K", "-n", "-u", "dst", &addr.to_string(), "dport", "=", &format!(":{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(path) = netns {
            match std::fs::File::open(path) {
                // SAFETY: setns is one system call on a descriptor opened before the fork.
                Ok(file) => unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(std::io::Error::from)
                    });
                },
                Err(error) => {
                    tracing::warn!(%error, "ending UDP sockets of a removed backend: node namespace");
                    return;
                }
            }
        }
        if let Err(error) = cmd.status() {
            tracing::warn!(%error, backend = %addr, "ending UDP sockets of a removed backend (ss -K)");
        }
    }

    /// Row `row`'s source ranges (address, prefix length), from the trie.
    pub fn source_ranges(&self, row: u32) -> Vec<(std::net::Ipv4Addr, u8)> {
        self.source_ranges
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data().svc_id_be == row.to_be())
            .map(|k| (std::net::Ipv4Addr::from(k.data().addr_be.to_ne_bytes()), (k.prefix_len() - 32) as u8))
            .collect()
    }

    /// Drop/reject counter of one reason, summed over CPUs.
    pub fn drops(&self, reason: DropReason) -> Result<u64, DatapathError> {
        let per_cpu = self.drops.get(&reason.slot(), 0).map_err(map_err(names::MAP_DROPS))?;
        Ok(per_cpu.iter().sum())
    }
}

/// Deleting what is already gone is success.
fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) =>
        {
            Ok(())
        }
        other => other,
    }
}
