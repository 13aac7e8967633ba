//! Giving an interface's receive processing a kernel thread of its own, so its CPU time can be
//! read apart from everything else on the machine: with threaded NAPI the kernel polls each
//! receive queue in a `napi/<iface>-<id>` thread, and what the queue's frames cost (an XDP
//! program, or building skbs and the whole IP stack with netfilter) runs in that thread, as it
//! runs on a NIC queue's core on a real machine. Its scheduler runtime is then that work's CPU
//! time, in nanoseconds.
//!
//! Anything downstream that would otherwise run as a softirq inside that thread (the next veth's
//! receive, say) must be threaded too, or it is counted in.

use std::{collections::BTreeSet, time::Duration};

use crate::{Error, NetNs, Result, cmd};

/// One NAPI poll thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NapiThread {
    pub pid: i32,
}

impl NapiThread {
    /// Time the thread has run so far (the scheduler's sum, nanosecond resolution).
    pub fn cpu_time(self) -> Result<Duration> {
        let path = format!("/proc/{}/schedstat", self.pid);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Path {
            what: "reading schedstat",
            path: path.clone().into(),
            source,
        })?;
        let ns = text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok());
        ns.map(Duration::from_nanos)
            .ok_or_else(|| Error::io(path, std::io::Error::other("unparsable schedstat")))
    }
}

/// The NAPI threads that exist now.
fn napi_threads() -> BTreeSet<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return BTreeSet::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        comm.starts_with("napi/").then_some(pid)
    })
    .collect()
}

/// Writes `value` to `/sys/class/net/<iface>/<attr>` inside `ns` (through `ip netns exec`, which
/// mounts that namespace's sysfs).
fn write_sysfs(ns: &NetNs, iface: &str, attr: &str, value: &str) -> Result<()> {
    let script = format!("echo {value} > /sys/class/net/{iface}/{attr}");
    cmd::run("ip", &["netns", "exec", ns.name(), "sh", "-c", &script]).map(drop)
}

/// Turns GRO on or off on `iface` in `ns`. On a veth, GRO on also makes the receive side a NAPI
/// poller without an XDP program, as a NIC driver is.
pub fn set_gro(ns: &NetNs, iface: &str, on: bool) -> Result<()> {
    let v = if on { "on" } else { "off" };
    cmd::run("ip", &["netns", "exec", ns.name(), "ethtool", "-K", iface, "gro", v]).map(drop)
}

/// Makes `iface`'s NAPI polling (in `ns`) threaded and returns its new threads. The interface
/// must poll already (a native XDP program, or GRO on a veth). Call it for one interface at a
/// time: the threads are told apart by appearing.
pub fn threaded(ns: &NetNs, iface: &str) -> Result<Vec<NapiThread>> {
    let before = napi_threads();
    write_sysfs(ns, iface, "threaded", "1")?;
    let new: Vec<NapiThread> = napi_threads().difference(&before).map(|&pid| NapiThread { pid }).collect();
    if new.is_empty() {
        return Err(Error::io(
            format!("threaded NAPI on {iface} in {}", ns.name()),
            std::io::Error::other("no NAPI thread appeared (does the interface poll?)"),
        ));
    }
    Ok(new)
}

/// Back to polling in softirq context.
pub fn unthreaded(ns: &NetNs, iface: &str) -> Result<()> {
    write_sysfs(ns, iface, "threaded", "0")
}
