//! Names of every map and program in the eBPF object: the one place both sides look them up.
//!
//! The kernel side names its statics and functions exactly like these constants (the `#[map]` and
//! program macros take the identifier as the ELF symbol name); a unit test in `skiff-agent` checks
//! that each one exists in the built object. Kernel object names are cut at 15 bytes, so every
//! name here stays within that.

/// Per-CPU packet/byte counters, one slot per [`crate::Hook`].
pub const MAP_COUNTERS: &str = "SKIFF_COUNTERS";
/// Frontends: `ServiceKey` → `ServiceValue`.
pub const MAP_SERVICES: &str = "SKIFF_SVC";
/// Backends: backend id → `Backend`.
pub const MAP_BACKENDS: &str = "SKIFF_BACKENDS";
/// Maglev rows, `M` backend ids per frontend.
pub const MAP_MAGLEV: &str = "SKIFF_MAGLEV";
/// Conntrack, client → frontend direction (LRU).
pub const MAP_CT: &str = "SKIFF_CT";
/// Reverse NAT, keyed by the reply tuple (LRU).
pub const MAP_RNAT: &str = "SKIFF_RNAT";
/// Session affinity (LRU).
pub const MAP_AFFINITY: &str = "SKIFF_AFFINITY";
/// Non-first fragments of translated datagrams (LRU).
pub const MAP_FRAGS: &str = "SKIFF_FRAGS";
/// `loadBalancerSourceRanges`: LPM trie of (frontend row, client prefix).
pub const MAP_SRC_RANGES: &str = "SKIFF_SRC_RANGE";
/// Sockets the socket-level load balancer sent to a backend (LRU): for getpeername and recvmsg.
pub const MAP_SOCK_RNAT: &str = "SKIFF_SOCK_RNAT";
/// Per-CPU drop/reject counters indexed by `DropReason`.
pub const MAP_DROPS: &str = "SKIFF_DROPS";
/// Per-CPU `FlowStats` per frontend row (client → service traffic).
pub const MAP_SVC_STATS: &str = "SKIFF_SVC_STATS";
/// Per-CPU `FlowStats` per backend id.
pub const MAP_BE_STATS: &str = "SKIFF_BE_STATS";
/// Ring buffer of `TraceEvent`s for `skiff trace`.
pub const MAP_TRACE: &str = "SKIFF_TRACE";
/// The trace session's switch and filter (one `TraceConfig`).
pub const MAP_TRACE_CFG: &str = "SKIFF_TRACE_CFG";
/// aya-log's ring buffer (defined by `aya-log-ebpf`; listed so the name check covers it).
pub const MAP_LOGS: &str = "AYA_LOGS";

/// XDP program for a node's uplink or a test veth.
pub const PROG_XDP: &str = "skiff_xdp";
/// XDP program on a node's uplink: NodePort / externalIPs / load-balancer frontends and the replies
/// of flows sent to other nodes' backends.
pub const PROG_UPLINK: &str = "skiff_uplink";
/// Socket-level load balancing of the node's own processes (cgroup sock_addr hooks on the root
/// cgroup): connect(), sendmsg() and recvmsg() of UDP, getpeername().
pub const PROG_CONNECT4: &str = "skiff_connect4";
pub const PROG_SENDMSG4: &str = "skiff_sendmsg4";
pub const PROG_RECVMSG4: &str = "skiff_recvmsg4";
pub const PROG_GETPEER4: &str = "skiff_getpeer4";
/// Prefix of the socket-level load balancer's pinned cgroup links: `links/sock-<program>`.
pub const LINK_SOCK_PREFIX: &str = "sock-";
/// TC (tcx) program for the ingress direction.
pub const PROG_TC_INGRESS: &str = "skiff_tc_in";
/// TC (tcx) program for the egress direction.
pub const PROG_TC_EGRESS: &str = "skiff_tc_out";

/// TC program on the host side of each pod veth (ingress = packets the pod sends): ClusterIP
/// load balancing and reverse NAT.
pub const PROG_LB: &str = "skiff_lb";

/// Global holding `lb::LbConfig`, patched in at load.
pub const GLOBAL_LB_CONFIG: &str = "SKIFF_LB_CONFIG";
/// Global patched by user space before load to set the datapath's log level (aya-log's symbol).
pub const GLOBAL_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

/// The bpffs directory the agent pins its maps, programs and links under (by default).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/skiff";
/// Under the pin directory: programs pinned by the agent for others to attach (the CNI plugin
/// attaches `progs/skiff_lb` to each new pod veth).
pub const PIN_PROGS_DIR: &str = "progs";
/// Under the pin directory: one pinned tcx link per attachment.
pub const PIN_LINKS_DIR: &str = "links";
/// Prefix of the pinned link of [`PROG_LB`] on an interface: `links/lb-<iface>`.
pub const LINK_LB_PREFIX: &str = "lb-";
/// Prefix of the pinned XDP link of [`PROG_UPLINK`] on an interface: `links/uplink-<iface>`.
pub const LINK_UPLINK_PREFIX: &str = "uplink-";

/// tc priority of [`PROG_LB`]'s filter on a pod veth attached by the CNI plugin (clsact ingress,
/// direct action); with [`LB_TC_HANDLE`] it addresses the filter the agent replaces on upgrade.
pub const LB_TC_PRIORITY: u16 = 1;
/// tc handle (minor) of that filter.
pub const LB_TC_HANDLE: u16 = 1;

/// Every map name, for existence checks.
pub const MAPS: &[&str] = &[
    MAP_COUNTERS,
    MAP_SERVICES,
    MAP_BACKENDS,
    MAP_MAGLEV,
    MAP_CT,
    MAP_RNAT,
    MAP_AFFINITY,
    MAP_FRAGS,
    MAP_SRC_RANGES,
    MAP_SOCK_RNAT,
    MAP_DROPS,
    MAP_SVC_STATS,
    MAP_BE_STATS,
    MAP_TRACE,
    MAP_TRACE_CFG,
    MAP_LOGS,
];
/// Every program name, for existence checks.
pub const PROGRAMS: &[&str] = &[
    PROG_XDP,
    PROG_TC_INGRESS,
    PROG_TC_EGRESS,
    PROG_LB,
    PROG_UPLINK,
    PROG_CONNECT4,
    PROG_SENDMSG4,
    PROG_RECVMSG4,
    PROG_GETPEER4,
];

const _: () = {
    let mut i = 0;
    while i < MAPS.len() {
        assert!(MAPS[i].len() <= 15, "map name longer than the kernel keeps");
        i += 1;
    }
    let mut i = 0;
    while i < PROGRAMS.len() {
        assert!(PROGRAMS[i].len() <= 15, "program name longer than the kernel keeps");
        i += 1;
    }
};
