//! The load balancer's maps, all pinned by name so a restarted agent adopts them (and established
//! flows survive). Capacities here are compile-time defaults; the agent sets the real ones at load.

use aya_ebpf::{
    Global,
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use skiff_common::{
    DropReason,
    lb::{
        AffinityKey, AffinityValue, Backend, CtForward, CtKey, CtReverse, DEFAULT_MAGLEV_M,
        DEFAULT_MAX_AFFINITY, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_CT, DEFAULT_MAX_FRAGS, DEFAULT_MAX_SERVICES,
        DEFAULT_MAX_SOCKETS, DEFAULT_MAX_SOURCE_RANGES, FragKey, FragValue, LbConfig, ServiceKey,
        ServiceValue, SockFrontend, SockKey, SourceRange,
    },
    trace::{FlowStats, TRACE_RING_BYTES, TraceConfig},
};

#[map]
pub static SKIFF_SVC: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(DEFAULT_MAX_SERVICES, 0);

#[map]
pub static SKIFF_BACKENDS: HashMap<u32, Backend> = HashMap::pinned(DEFAULT_MAX_BACKENDS, 0);

/// Memory-mappable so the agent writes whole rows with plain stores instead of one syscall per
/// slot (10k frontends × M slots would be millions of syscalls).
#[map]
pub static SKIFF_MAGLEV: Array<u32> = Array::pinned(DEFAULT_MAX_SERVICES * DEFAULT_MAGLEV_M, BPF_F_MMAPABLE);

#[map]
pub static SKIFF_CT: LruHashMap<CtKey, CtForward> = LruHashMap::pinned(DEFAULT_MAX_CT, 0);

#[map]
pub static SKIFF_RNAT: LruHashMap<CtKey, CtReverse> = LruHashMap::pinned(DEFAULT_MAX_CT, 0);

#[map]
pub static SKIFF_AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(DEFAULT_MAX_AFFINITY, 0);

#[map]
pub static SKIFF_FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::pinned(DEFAULT_MAX_FRAGS, 0);

/// `loadBalancerSourceRanges`, per frontend row.
#[map]
pub static SKIFF_SRC_RANGE: LpmTrie<SourceRange, u8> = LpmTrie::pinned(DEFAULT_MAX_SOURCE_RANGES, 0);

/// Sockets the socket-level load balancer sent to a backend.
#[map]
pub static SKIFF_SOCK_RNAT: LruHashMap<SockKey, SockFrontend> = LruHashMap::pinned(DEFAULT_MAX_SOCKETS, 0);

#[map]
pub static SKIFF_DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DropReason::SLOTS, 0);

/// Client → service traffic per frontend row and per backend id (sized by the agent at load).
#[map]
pub static SKIFF_SVC_STATS: PerCpuArray<FlowStats> = PerCpuArray::pinned(DEFAULT_MAX_SERVICES, 0);

#[map]
pub static SKIFF_BE_STATS: PerCpuArray<FlowStats> = PerCpuArray::pinned(DEFAULT_MAX_BACKENDS + 1, 0);

/// `skiff trace`'s events and its switch/filter (see `crate::trace`).
#[map]
pub static SKIFF_TRACE: RingBuf = RingBuf::pinned(TRACE_RING_BYTES, 0);

#[map]
pub static SKIFF_TRACE_CFG: Array<TraceConfig> = Array::pinned(1, 0);

/// Counts a client → service packet on its frontend row and its backend.
#[inline(always)]
pub fn count_flow(svc_id: u32, backend_id: u32, len: u32, new: bool) {
    // SAFETY (both): per-CPU slots from successful lookups; no concurrent writer on this CPU.
    if let Some(s) = SKIFF_SVC_STATS.get_ptr_mut(svc_id) {
        unsafe { (*s).record(u64::from(len), new) };
    }
    if let Some(s) = SKIFF_BE_STATS.get_ptr_mut(backend_id) {
        unsafe { (*s).record(u64::from(len), new) };
    }
}

/// Patched in by the agent at load (`names::GLOBAL_LB_CONFIG`).
#[unsafe(no_mangle)]
pub static SKIFF_LB_CONFIG: Global<LbConfig> = Global::new(LbConfig::DEFAULT);

#[inline(always)]
pub fn config() -> LbConfig {
    SKIFF_LB_CONFIG.load()
}

/// Counts one dropped or rejected packet.
#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(slot) = SKIFF_DROPS.get_ptr_mut(reason.slot()) {
        // SAFETY: per-CPU slot from a successful lookup; no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Whether `addr_be` is a ClusterIP (its marker entry exists).
#[inline(always)]
pub fn is_vip(addr_be: u32) -> bool {
    SKIFF_SVC.get_ptr(ServiceKey::vip_marker(addr_be)).is_some()
}
