//! Applying frontends to the datapath's maps with the fewest writes, in an order that never sends
//! a packet to a backend that is not in the maps yet or no longer in them.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque, hash_map::Entry},
    net::Ipv4Addr,
};

use skiff_common::lb::{
    BACKEND_F_LOCAL, Backend, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_SOURCE_RANGES, ServiceKey,
    ServiceValue,
};

use super::model::{BackendAddr, Frontend, FrontendKey, Protocol};
use crate::datapath::{
    DatapathError,
    lb::{
        LbMaps,
        maglev::{self, MaglevBackend},
    },
};

/// Where the service proxy's decisions go.
pub trait Dataplane {
    /// Makes `key` balance as `frontend` says (adds it or changes it).
    fn upsert(&mut self, key: FrontendKey, frontend: &Frontend) -> Result<(), DataplaneError>;
    /// Stops balancing `key`.
    fn remove(&mut self, key: &FrontendKey) -> Result<(), DataplaneError>;
    /// Marks `vip` as a ClusterIP (reference-counted: once per Service that has it).
    fn add_clusterip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError>;
    /// Drops one reference to `vip` as a ClusterIP.
    fn remove_clusterip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError>;
    /// Called once the first complete listing has been applied: removes whatever a previous agent
    /// left in the datapath that the listing did not claim.
    fn sweep_unclaimed(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
    /// Makes the calls since the last commit take effect. The eBPF dataplane writes each change
    /// as it comes (nothing to do here); the iptables one batches them into one iptables-restore.
    fn commit(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }
}

/// A borrowed dataplane is a dataplane (a proxy can drive one that something else owns).
impl<D: Dataplane + ?Sized> Dataplane for &mut D {
    fn upsert(&mut self, key: FrontendKey, frontend: &Frontend) -> Result<(), DataplaneError> {
        (**self).upsert(key, frontend)
    }
    fn remove(&mut self, key: &FrontendKey) -> Result<(), DataplaneError> {
        (**self).remove(key)
    }
    fn add_clusterip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        (**self).add_clusterip(vip)
    }
    fn remove_clusterip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        (**self).remove_clusterip(vip)
    }
    fn sweep_unclaimed(&mut self) -> Result<(), DataplaneError> {
        (**self).sweep_unclaimed()
    }
    fn commit(&mut self) -> Result<(), DataplaneError> {
        (**self).commit()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{what} is full ({capacity} entries): {key} not programmed; raise the capacity")]
    Full { what: &'static str, capacity: u32, key: String },
    #[error("writing the datapath maps")]
    Maps(#[from] DatapathError),
    #[error("applying iptables rules")]
    Iptables(#[from] super::iptables::IptablesError),
}

/// The map operations the load-balancing dataplane needs: the real maps ([`LbMaps`]) or an
/// in-memory copy ([`super::memory::MemoryMaps`]) for golden tests.
pub trait MapStore {
    fn set_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), DatapathError>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError>;
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DatapathError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError>;
    /// Lets clients in `addr/len` reach the frontend of row `row` (loadBalancerSourceRanges).
    fn allow_source(&mut self, row: u32, addr: Ipv4Addr, len: u8) -> Result<(), DatapathError>;
    fn forget_source(&mut self, row: u32, addr: Ipv4Addr, len: u8) -> Result<(), DatapathError>;
    /// The source ranges row `row` has now (e.g. left by a previous agent).
    fn source_ranges(&self, row: u32) -> Vec<(Ipv4Addr, u8)>;
    /// A UDP backend left a frontend: end the node's own sockets connected to it (the
    /// socket-level load balancer's; no-op when that is off).
    fn end_udp_sockets(&mut self, _backend: &BackendAddr) {}
    fn set_maglev_row(&mut self, row: u32, ids: &[u32]) -> Result<(), DatapathError>;
    /// Zeroes the traffic counters of a row or backend id taken into (re)use.
    fn reset_stats(&mut self, _row: Option<u32>, _backend: Option<u32>) -> Result<(), DatapathError> {
        Ok(())
    }
    /// Ends the flows of frontend `key` (Maglev row `row`) that go to `backend_id`.
    fn purge_flows(&mut self, key: &ServiceKey, row: u32, backend_id: u32) -> Result<usize, DatapathError>;
    /// Ends every flow that goes to `backend_id` (it is leaving the maps; its id will be reused).
    fn purge_backend(&mut self, backend_id: u32) -> Result<usize, DatapathError>;
    /// Ends every flow and affinity of Maglev row `row` (its frontend is gone; the row will be reused).
    fn purge_row(&mut self, row: u32) -> Result<usize, DatapathError>;
    fn maglev_m(&self) -> u32;
    /// Maglev rows available (the frontend capacity).
    fn rows(&self) -> u32;
    /// Backend capacity.
    fn max_backends(&self) -> u32;
    /// Frontends (and ClusterIP markers) present now, e.g. left by a previous agent.
    fn frontends(&self) -> Vec<(ServiceKey, ServiceValue)>;
    /// Backends present now.
    fn backend_entries(&self) -> Vec<(u32, Backend)>;
}

impl MapStore for LbMaps {
    fn set_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), DatapathError> {
        LbMaps::set_service(self, key, value)
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DatapathError> {
        LbMaps::remove_service(self, key)
    }
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), DatapathError> {
        LbMaps::set_backend(self, id, backend)
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        LbMaps::remove_backend(self, id)
    }
    fn allow_source(&mut self, row: u32, addr: Ipv4Addr, len: u8) -> Result<(), DatapathError> {
        LbMaps::allow_source(self, row, be(addr), len)
    }
    fn forget_source(&mut self, row: u32, addr: Ipv4Addr, len: u8) -> Result<(), DatapathError> {
        LbMaps::forget_source(self, row, be(addr), len)
    }
    fn source_ranges(&self, row: u32) -> Vec<(Ipv4Addr, u8)> {
        LbMaps::source_ranges(self, row)
    }
    fn end_udp_sockets(&mut self, backend: &BackendAddr) {
        LbMaps::end_udp_sockets(self, backend.ip, backend.port);
    }
    fn set_maglev_row(&mut self, row: u32, ids: &[u32]) -> Result<(), DatapathError> {
        LbMaps::set_maglev_row(self, row, ids)
    }
    fn reset_stats(&mut self, row: Option<u32>, backend: Option<u32>) -> Result<(), DatapathError> {
        LbMaps::reset_stats(self, row, backend)
    }
    fn purge_flows(&mut self, key: &ServiceKey, row: u32, backend_id: u32) -> Result<usize, DatapathError> {
        LbMaps::purge_frontend_flows(self, key, row, backend_id)
    }
    fn purge_backend(&mut self, backend_id: u32) -> Result<usize, DatapathError> {
        LbMaps::purge_where(self, |f| f.backend == backend_id)
    }
    fn purge_row(&mut self, row: u32) -> Result<usize, DatapathError> {
        LbMaps::purge_where(self, |f| f.row == Some(row))
    }
    fn maglev_m(&self) -> u32 {
        LbMaps::maglev_m(self)
    }
    fn rows(&self) -> u32 {
        LbMaps::maglev_rows(self)
    }
    fn max_backends(&self) -> u32 {
        LbMaps::max_backends(self)
    }
    fn frontends(&self) -> Vec<(ServiceKey, ServiceValue)> {
        LbMaps::services(self)
    }
    fn backend_entries(&self) -> Vec<(u32, Backend)> {
        LbMaps::backends(self)
    }
}

fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn service_key(key: &FrontendKey) -> ServiceKey {
    ServiceKey::new(be(key.vip), key.port.to_be(), key.proto.number())
}

#[derive(Debug)]
struct BackendSlot {
    id: u32,
    refs: usize,
}

/// The eBPF dataplane's bookkeeping over a [`MapStore`]: Maglev row per frontend, one backend id
/// per endpoint address shared by every frontend that uses it, one ClusterIP marker per VIP.
#[derive(Debug)]
pub struct LbDataplane<S> {
    store: S,
    applied: HashMap<FrontendKey, (u32, Frontend)>,
    /// Freed rows and ids are reused oldest first, so stale state naming them has had the most
    /// time to age out (and is purged on release anyway).
    free_rows: VecDeque<u32>,
    next_row: u32,
    backends: HashMap<BackendAddr, BackendSlot>,
    free_ids: VecDeque<u32>,
    next_id: u32,
    vips: HashMap<Ipv4Addr, usize>,
    /// Frontends found in the maps at start and not claimed yet, with their rows.
    adopted_rows: HashMap<FrontendKey, u32>,
    /// ClusterIP markers found in the maps at start and not claimed yet.
    adopted_vips: HashSet<Ipv4Addr>,
}

impl<S: MapStore> LbDataplane<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            applied: HashMap::new(),
            free_rows: VecDeque::new(),
            next_row: 0,
            backends: HashMap::new(),
            free_ids: VecDeque::new(),
            // Backend id 0 is never used, so an all-zero Maglev row can never look valid.
            next_id: 1,
            vips: HashMap::new(),
            adopted_rows: HashMap::new(),
            adopted_vips: HashSet::new(),
        }
    }

    /// Takes over maps a previous agent filled: frontends keep their rows and endpoints their ids,
    /// so established flows (whose conntrack entries name both) keep working while the service
    /// proxy re-lists; [`Dataplane::sweep_unclaimed`] then removes what nobody claimed.
    pub fn adopt(store: S) -> Self {
        let mut dp = Self::new(store);
        let mut rows = BTreeSet::new();
        for (key, value) in dp.store.frontends() {
            let vip = Ipv4Addr::from(key.addr_be.to_ne_bytes());
            if key == ServiceKey::vip_marker(key.addr_be) {
                dp.vips.insert(vip, 0);
                dp.adopted_vips.insert(vip);
            } else if let Some(proto) = Protocol::from_number(key.proto) {
                dp.adopted_rows.insert(FrontendKey { vip, port: u16::from_be(key.port_be), proto }, value.id);
                rows.insert(value.id);
            }
        }
        dp.next_row = rows.last().map_or(0, |r| r + 1);
        dp.free_rows = (0..dp.next_row).filter(|r| !rows.contains(r)).collect();
        let mut ids = BTreeSet::new();
        for (id, b) in dp.store.backend_entries() {
            if let Some(proto) = Protocol::from_number(b.proto) {
                let addr = BackendAddr {
                    ip: Ipv4Addr::from(b.addr_be.to_ne_bytes()),
                    port: u16::from_be(b.port_be),
                    proto,
                    local: b.flags & BACKEND_F_LOCAL != 0,
                };
                dp.backends.insert(addr, BackendSlot { id, refs: 0 });
                ids.insert(id);
            }
        }
        dp.next_id = ids.last().map_or(1, |id| id + 1);
        dp.free_ids = (1..dp.next_id).filter(|id| !ids.contains(id)).collect();
        dp
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Frontends currently programmed.
    pub fn len(&self) -> usize {
        self.applied.len()
    }

    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }

    fn acquire_row(&mut self, key: &FrontendKey) -> Result<u32, DataplaneError> {
        if let Some(row) = self.adopted_rows.remove(key) {
            return Ok(row);
        }
        let row = match self.free_rows.pop_front() {
            Some(row) => row,
            None if self.next_row >= self.store.rows() => {
                return Err(DataplaneError::Full {
                    what: "the frontend table",
                    capacity: self.store.rows(),
                    key: key.to_string(),
                });
            }
            None => {
                self.next_row += 1;
                self.next_row - 1
            }
        };
        if let Err(err) = self.store.reset_stats(Some(row), None) {
            self.free_rows.push_front(row);
            return Err(err.into());
        }
        Ok(row)
    }

    fn acquire_backend(&mut self, addr: BackendAddr) -> Result<u32, DataplaneError> {
        if let Some(slot) = self.backends.get_mut(&addr) {
            slot.refs += 1;
            return Ok(slot.id);
        }
        if self.backends.len() >= self.store.max_backends() as usize {
            let capacity = self.store.max_backends();
            return Err(DataplaneError::Full { what: "the backend table", capacity, key: addr.to_string() });
        }
        let id = match self.free_ids.pop_front() {
            Some(id) => id,
            None => {
                self.next_id += 1;
                self.next_id - 1
            }
        };
        let backend = Backend {
            addr_be: be(addr.ip),
            port_be: addr.port.to_be(),
            proto: addr.proto.number(),
            flags: if addr.local { BACKEND_F_LOCAL } else { 0 },
        };
        if let Err(err) =
            self.store.reset_stats(None, Some(id)).and_then(|()| self.store.set_backend(id, backend))
        {
            self.free_ids.push_back(id);
            return Err(err.into());
        }
        self.backends.insert(addr, BackendSlot { id, refs: 1 });
        Ok(id)
    }

    fn release_backend(&mut self, addr: &BackendAddr) -> Result<(), DataplaneError> {
        let Entry::Occupied(mut slot) = self.backends.entry(*addr) else { return Ok(()) };
        slot.get_mut().refs -= 1;
        if slot.get().refs == 0 {
            let id = slot.remove().id;
            self.free_backend(id)?;
        }
        Ok(())
    }

    /// Takes backend `id` (already out of `backends`) out of the maps, ends its flows and frees
    /// the id.
    fn free_backend(&mut self, id: u32) -> Result<(), DataplaneError> {
        self.store.remove_backend(id)?;
        self.store.purge_backend(id)?;
        self.free_ids.push_back(id);
        Ok(())
    }

    fn retain_vip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        let refs = self.vips.entry(vip).or_insert(0);
        *refs += 1;
        if *refs == 1 && !self.adopted_vips.remove(&vip) {
            self.store.set_service(ServiceKey::vip_marker(be(vip)), ServiceValue::default())?;
        }
        Ok(())
    }

    fn release_vip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        let Entry::Occupied(mut refs) = self.vips.entry(vip) else { return Ok(()) };
        *refs.get_mut() -= 1;
        if *refs.get() == 0 {
            refs.remove();
            self.store.remove_service(&ServiceKey::vip_marker(be(vip)))?;
        }
        Ok(())
    }
}

impl<S: MapStore> Dataplane for LbDataplane<S> {
    fn upsert(&mut self, key: FrontendKey, frontend: &Frontend) -> Result<(), DataplaneError> {
        let previous = self.applied.get(&key).cloned();
        if previous.as_ref().is_some_and(|(_, f)| f == frontend) {
            return Ok(());
        }
        let adopted_row = self.adopted_rows.get(&key).copied();
        let row = match &previous {
            Some((row, _)) => *row,
            None => self.acquire_row(&key)?,
        };
        let old: BTreeSet<BackendAddr> =
            previous.as_ref().map(|(_, f)| f.referenced().copied().collect()).unwrap_or_default();
        let new: BTreeSet<BackendAddr> = frontend.referenced().copied().collect();

        // 1. Backends first: nothing may point at an id that is not in the map yet. If one cannot
        //    be had (the table is full), undo this call's acquisitions so nothing leaks.
        let mut ids = HashMap::new();
        let mut acquired = Vec::new();
        for addr in &new {
            let id = if old.contains(addr) {
                self.backends.get(addr).map(|s| s.id)
            } else {
                match self.acquire_backend(*addr) {
                    Ok(id) => {
                        acquired.push(*addr);
                        Some(id)
                    }
                    Err(err) => {
                        for a in &acquired {
                            self.release_backend(a)?;
                        }
                        if previous.is_none() {
                            match adopted_row {
                                Some(r) => {
                                    self.adopted_rows.insert(key, r);
                                }
                                None => self.free_rows.push_front(row),
                            }
                        }
                        return Err(err);
                    }
                }
            };
            if let Some(id) = id {
                ids.insert(*addr, id);
            }
        }
        // 2. The Maglev row over the active set, then the frontend itself.
        let members: Vec<MaglevBackend> = frontend
            .active
            .iter()
            .filter_map(|a| ids.get(a).map(|id| MaglevBackend { key: a.to_string(), id: *id }))
            .collect();
        let table = maglev::row(&members, self.store.maglev_m());
        if !table.is_empty() {
            self.store.set_maglev_row(row, &table)?;
        }
        let mut flags = 0;
        if frontend.affinity_timeout_s.is_some() {
            flags |= SVC_F_AFFINITY;
        }
        if frontend.local_only {
            flags |= SVC_F_LOCAL;
        }
        if frontend.external {
            flags |= SVC_F_EXTERNAL;
        }
        // Ranges in before the flag that enforces them; ranges that left go after it is written.
        let old_ranges: BTreeSet<(Ipv4Addr, u8)> = match &previous {
            Some((_, f)) => f.source_ranges.clone(),
            None if adopted_row.is_some() => self.store.source_ranges(row).into_iter().collect(),
            None => BTreeSet::new(),
        };
        for &(addr, len) in frontend.source_ranges.difference(&old_ranges) {
            self.store.allow_source(row, addr, len)?;
        }
        if !frontend.source_ranges.is_empty() {
            flags |= SVC_F_SOURCE_RANGES;
        }
        let value = ServiceValue {
            id: row,
            backend_count: members.len() as u32,
            flags,
            affinity_timeout_s: frontend.affinity_timeout_s.unwrap_or(0),
        };
        self.store.set_service(service_key(&key), value)?;
        // A ClusterIP is marked as such (its other ports are rejected); a node's own address, an
        // external IP or a load-balancer address is not, so other traffic to it passes.
        if previous.is_none() && !frontend.external {
            self.retain_vip(key.vip)?;
        }
        for &(addr, len) in old_ranges.difference(&frontend.source_ranges) {
            self.store.forget_source(row, addr, len)?;
        }
        // 3. Endpoints gone from this frontend: end their flows here, drop them if nobody else uses them.
        for addr in old.difference(&new) {
            if let Some(slot) = self.backends.get(addr) {
                self.store.purge_flows(&service_key(&key), row, slot.id)?;
            }
            if addr.proto == Protocol::Udp {
                self.store.end_udp_sockets(addr);
            }
            self.release_backend(addr)?;
        }
        self.applied.insert(key, (row, frontend.clone()));
        Ok(())
    }

    fn remove(&mut self, key: &FrontendKey) -> Result<(), DataplaneError> {
        let Some((row, frontend)) = self.applied.remove(key) else { return Ok(()) };
        self.store.remove_service(&service_key(key))?;
        for &(addr, len) in &frontend.source_ranges {
            self.store.forget_source(row, addr, len)?;
        }
        for addr in frontend.referenced() {
            if let Some(slot) = self.backends.get(addr) {
                self.store.purge_flows(&service_key(key), row, slot.id)?;
            }
            self.release_backend(addr)?;
        }
        if !frontend.external {
            self.release_vip(key.vip)?;
        }
        self.store.purge_row(row)?;
        self.free_rows.push_back(row);
        Ok(())
    }

    fn add_clusterip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.retain_vip(vip)
    }

    fn remove_clusterip(&mut self, vip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.release_vip(vip)
    }

    fn sweep_unclaimed(&mut self) -> Result<(), DataplaneError> {
        for (key, row) in std::mem::take(&mut self.adopted_rows) {
            tracing::info!(frontend = %key, "removing a frontend no Service claims any more");
            self.store.remove_service(&service_key(&key))?;
            for (addr, len) in self.store.source_ranges(row) {
                self.store.forget_source(row, addr, len)?;
            }
            self.store.purge_row(row)?;
            self.free_rows.push_back(row);
        }
        for vip in std::mem::take(&mut self.adopted_vips) {
            self.vips.remove(&vip);
            self.store.remove_service(&ServiceKey::vip_marker(be(vip)))?;
        }
        let unclaimed: Vec<(BackendAddr, u32)> =
            self.backends.iter().filter(|(_, s)| s.refs == 0).map(|(a, s)| (*a, s.id)).collect();
        for (addr, id) in unclaimed {
            self.backends.remove(&addr);
            self.free_backend(id)?;
        }
        Ok(())
    }
}
