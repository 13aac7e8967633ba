//! Network namespaces named under /run/netns (so `ip netns` and humans can see them).

use std::{
    fs::File,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

use crate::{Error, Result, cmd, require_root, unique_name};

const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, deleted on drop (unwinding included). Interfaces inside it go
/// with it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `skt-<pid>-<seq>-<label>`, with loopback up. Sweeps leftovers of killed runs first.
    pub fn new(label: &str) -> Result<Self> {
        require_root()?;
        crate::stale::sweep_once();
        Self::create(unique_name(label))
    }

    /// Creates a namespace with exactly this name, replacing a leftover of the same name (for
    /// singletons such as the lab's namespaces).
    pub fn with_name(name: &str) -> Result<Self> {
        require_root()?;
        if Path::new(NETNS_DIR).join(name).exists() {
            cmd::run("ip", &["netns", "delete", name])?;
        }
        Self::create(name.to_owned())
    }

    fn create(name: String) -> Result<Self> {
        cmd::run("ip", &["netns", "add", &name])?;
        // From here on, drop cleans up even if the rest fails.
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n <ns> args…` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace; the thread ends with `f`, so
    /// no other code ever runs in the wrong namespace. A panic in `f` is re-raised here.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.open()?;
        thread::scope(|s| {
            let handle = s.spawn(move || enter(&file).map(|()| f()));
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Writes a sysctl under /proc/sys inside this namespace (`key` like `net/ipv4/ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = Path::new("/proc/sys").join(key);
        self.run(move || {
            std::fs::write(&path, value).map_err(|source| Error::Path {
                what: "writing sysctl",
                path,
                source,
            })
        })?
    }

    /// Waits until `iface` reports operstate UP. The kernel sets it from its link-watch work, in
    /// the same step that swaps the device's no-op qdisc for a real one, up to a second after
    /// `ip link set up`; a packet sent before that is dropped, which made exact-count tests flaky.
    pub fn wait_link_up(&self, iface: &str) -> Result<()> {
        crate::poll::poll_until(&format!("{iface} in {} to be up", self.name), Duration::from_secs(5), || {
            let out = self.ip(&["-o", "link", "show", "dev", iface]).ok()?;
            out.contains(" state UP ").then_some(())
        })
    }

    /// The MAC address of `iface`.
    pub fn mac(&self, iface: &str) -> Result<[u8; 6]> {
        let out = self.ip(&["-o", "link", "show", "dev", iface])?;
        let text = out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1);
        let mut mac = [0u8; 6];
        let mut parts = text.map(|t| t.split(':')).into_iter().flatten();
        for b in &mut mac {
            *b = parts.next().and_then(|p| u8::from_str_radix(p, 16).ok()).ok_or_else(|| {
                Error::io(format!("MAC address of {iface}"), std::io::Error::other(out.trim().to_owned()))
            })?;
        }
        Ok(mac)
    }

    /// Whether an XDP program is attached to `iface` (any mode).
    pub fn xdp_attached(&self, iface: &str) -> Result<bool> {
        let out = self.ip(&["link", "show", "dev", iface])?;
        Ok(out.contains("prog/xdp"))
    }

    fn open(&self) -> Result<File> {
        let path = self.path();
        File::open(&path).map_err(|source| Error::Path { what: "opening netns", path, source })
    }
}

fn enter(file: &File) -> Result<()> {
    setns(file, CloneFlags::CLONE_NEWNET).map_err(|errno| Error::io("setns(CLONE_NEWNET)", errno.into()))
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = cmd::run("ip", &["netns", "delete", &self.name]) {
            // Drop cannot fail; say so loudly so a leak is never silent.
            eprintln!("warning: could not delete netns {}: {err}", self.name);
        }
    }
}
