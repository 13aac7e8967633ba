//! skiff's privileged test harness, also used by `cargo xtask lab`.
//!
//! - [`NetNs`]: a uniquely named network namespace, removed on drop (also on panic); closures run
//!   inside it on a dedicated OS thread.
//! - [`PairTopology`]: two namespaces joined by a veth pair, quiet by construction (no IPv6, static
//!   neighbours) so packet counts are exact.
//! - [`PinDir`]: a private bpffs directory (bpffs mounted when missing).
//! - [`Containerd`]: a private containerd daemon (own root, state and sockets).
//! - [`Registry`]: a private OCI registry on loopback, and pushing to it with skopeo.
//! - [`traffic`]: UDP echo server and lock-step client.
//! - [`wire`]: making a veth behave like a wire for XDP (complete checksums, a polling peer).
//! - [`pktgen`]: whole Ethernet frames handed to an interface's driver (`AF_PACKET`, no qdisc).
//! - [`napi`]: threaded NAPI, so an interface's receive work has a CPU time of its own.
//! - [`poll_until`]: wait for a condition with a deadline instead of sleeping.
//! - [`sweep_stale`]: removes what killed test runs left behind.
//!
//! Everything that needs privileges returns [`Error::NotRoot`] when not run as root, so a test
//! fails loudly instead of skipping.

mod bpffs;
mod cmd;
mod containerd;
mod error;
pub mod napi;
mod netns;
pub mod packet;
pub mod pktgen;
mod poll;
mod registry;
mod stale;
mod topology;
pub mod traffic;
pub mod wire;

pub use bpffs::{PinDir, ensure_bpffs};
pub use containerd::{CONTAINERD_ROOT, Containerd, teardown as remove_daemon_dir};
pub use error::{Error, Result};
pub use netns::NetNs;
pub use poll::poll_until;
pub use registry::Registry;
pub use stale::{leftovers, sweep_stale};
pub use topology::{PairTopology, Pod, StarTopology};

/// Name prefix of everything the harness creates for tests; [`sweep_stale`] owns this prefix.
pub const TEST_PREFIX: &str = "skt-";

/// Fails unless running as root: privileged tests must fail, never skip.
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() { Ok(()) } else { Err(Error::NotRoot) }
}

/// A name unique to this process and call: `skt-<pid>-<seq>-<label>`.
pub(crate) fn unique_name(label: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{TEST_PREFIX}{}-{seq}-{label}", std::process::id())
}
