//! Names of every map and program in the eBPF object: the one place both sides look them up.
//!
//! The kernel side names its statics and functions exactly like these constants (the `#[map]` and
//! program macros take the identifier as the ELF symbol name); a unit test in `skiff-agent` checks
//! that each one exists in the built object. Kernel object names are cut at 15 bytes, so every
//! name here stays within that.

/// Per-CPU packet/byte counters, one slot per [`crate::Hook`].
pub const MAP_COUNTERS: &str = "SKIFF_COUNTERS";
/// aya-log's ring buffer (defined by `aya-log-ebpf`; listed so the name check covers it).
pub const MAP_LOGS: &str = "AYA_LOGS";

/// XDP program for a node's uplink or a test veth.
pub const PROG_XDP: &str = "skiff_xdp";
/// TC (tcx) program for the ingress direction.
pub const PROG_TC_INGRESS: &str = "skiff_tc_in";
/// TC (tcx) program for the egress direction.
pub const PROG_TC_EGRESS: &str = "skiff_tc_out";

/// Global patched by user space before load to set the datapath's log level (aya-log's symbol).
pub const GLOBAL_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

/// Every map name, for existence checks.
pub const MAPS: &[&str] = &[MAP_COUNTERS, MAP_LOGS];
/// Every program name, for existence checks.
pub const PROGRAMS: &[&str] = &[PROG_XDP, PROG_TC_INGRESS, PROG_TC_EGRESS];

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
