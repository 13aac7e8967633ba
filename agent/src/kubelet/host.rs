//! What the host has: CPUs, memory, disk, kernel, and whether memory or disk runs short — read
//! from /proc and statvfs, as the kubelet reports them.

use std::path::Path;

/// kubelet's default hard eviction thresholds: `memory.available<100Mi`, `nodefs.available<10%`.
pub const MEMORY_PRESSURE_BYTES: u64 = 100 << 20;
pub const DISK_PRESSURE_PERCENT: u64 = 10;

/// A snapshot of the host's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_bytes: u64,
    pub disk_available_bytes: u64,
}

impl Host {
    /// Reads the host; `disk` is the filesystem pods' data lives on.
    pub fn read(disk: &Path) -> std::io::Result<Self> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let field = |name: &str| -> u64 {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let fs = nix::sys::statvfs::statvfs(disk).map_err(std::io::Error::from)?;
        let block = fs.fragment_size();
        Ok(Self {
            cpus,
            memory_bytes: field("MemTotal:"),
            memory_available_bytes: field("MemAvailable:"),
            disk_bytes: fs.blocks() * block,
            disk_available_bytes: fs.blocks_available() * block,
        })
    }

    pub fn memory_pressure(&self) -> bool {
        self.memory_available_bytes < MEMORY_PRESSURE_BYTES
    }

    pub fn disk_pressure(&self) -> bool {
        self.disk_bytes > 0 && self.disk_available_bytes * 100 < self.disk_bytes * DISK_PRESSURE_PERCENT
    }
}

/// The kernel release (`uname -r`).
pub fn kernel_version() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default()
}

/// PRETTY_NAME from /etc/os-release.
pub fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
        })
        .unwrap_or_else(|| "Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_reads_sensibly() {
        let h = Host::read(Path::new("/")).expect("host");
        assert!(h.cpus >= 1 && h.memory_bytes > h.memory_available_bytes.min(h.memory_bytes) / 2);
        assert!(h.disk_bytes >= h.disk_available_bytes && h.disk_bytes > 0);
        let tight = Host { memory_available_bytes: 50 << 20, disk_available_bytes: 5, disk_bytes: 100, ..h };
        assert!(tight.memory_pressure() && tight.disk_pressure());
        assert!(!kernel_version().is_empty());
    }
}
