use std::path::PathBuf;

/// Everything that can go wrong driving the eBPF datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    #[error("loading the eBPF object needs root (CAP_BPF, CAP_NET_ADMIN)")]
    NotPrivileged(#[source] aya::EbpfError),
    #[error("program {0} is not in the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is not in the eBPF object")]
    MissingMap(&'static str),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("attaching {program} to {iface}")]
    Attach {
        program: &'static str,
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("detaching from {iface}")]
    Detach {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("reading map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("setting up the datapath log reader")]
    Logs(#[source] aya_log::Error),
    #[error("Maglev map of {entries} entries does not hold whole rows of M={m}")]
    MaglevSize { entries: u32, m: u32 },
    #[error("Maglev row {row} with {len} ids: the table has {rows} rows of M={m}")]
    MaglevRow { row: u32, len: usize, rows: u32, m: u32 },
    #[error("mapping the Maglev table")]
    Mmap(#[source] std::io::Error),
    #[error(
        "{path} is pinned with {pinned} entries but {wanted} are configured: remove it (established \
         flows are reset) or go back to the old setting"
    )]
    PinnedSize { path: PathBuf, pinned: u32, wanted: u32 },
    #[error("invalid datapath configuration: {0}")]
    Config(&'static str),
    #[error("test run of {name}")]
    TestRun {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("link of {iface}")]
    Link {
        iface: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinning {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("bpffs at {path}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the sysctl {path}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
