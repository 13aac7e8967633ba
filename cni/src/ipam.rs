//! Host-local style address allocation, persisted under `<dataDir>/<network>/`: one file per
//! allocated address (named by the address, holding the container id and interface name), a
//! `lock` file whose exclusive `flock` serialises allocators, and `last_reserved_ip` so a freed
//! address is not handed out again at once (stale conntrack entries and ARP caches age first).
//!
//! Crash safety: an allocation file appears atomically (written to a temporary name, synced, then
//! hard-linked into place, which fails if the address is taken), so a plugin killed at any moment
//! leaves either no record or a complete one; DEL and GC find complete records by attachment, and
//! leftover temporary files are swept by the next allocator.

use std::{
    fs::File,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use crate::spec::{
    config::{Attachment, Ipam},
    error::{CniError, Result, code},
};

const LOCK: &str = "lock";
const LAST: &str = "last_reserved_ip";
const TMP_PREFIX: &str = ".tmp-";

/// The pool of one network, locked for the lifetime of this value.
#[derive(Debug)]
pub struct Pool {
    dir: PathBuf,
    first: Ipv4Addr,
    last: Ipv4Addr,
    _lock: Flock<File>,
}

fn io(what: &str, path: &Path) -> impl Fn(std::io::Error) -> CniError {
    let what = format!("{what} {}", path.display());
    move |e| CniError::io(&what, e)
}

impl Pool {
    /// Opens (creating) the network's state directory and takes its lock, waiting for others.
    pub fn lock(ipam: &Ipam, network: &str) -> Result<Self> {
        let dir = ipam.data_dir.join(network);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let lock_path = dir.join(LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| CniError::io(format!("locking {}", lock_path.display()), e.into()))?;
        let pool = Self { dir, first: ipam.first, last: ipam.last, _lock: lock };
        pool.sweep_temporaries();
        Ok(pool)
    }

    fn sweep_temporaries(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Every allocation: address and owner (`None` for a record that cannot be read).
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, Option<Attachment>)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io("reading", &self.dir))?.flatten() {
            let Ok(ip) = entry.file_name().to_string_lossy().parse::<Ipv4Addr>() else { continue };
            let owner = std::fs::read_to_string(entry.path()).ok().and_then(|text| {
                let mut lines = text.lines();
                let container_id = lines.next()?.trim().to_owned();
                let ifname = lines.next()?.trim().to_owned();
                (!container_id.is_empty() && !ifname.is_empty())
                    .then_some(Attachment { container_id, ifname })
            });
            out.push((ip, owner));
        }
        out.sort();
        Ok(out)
    }

    /// The address held by `attachment`, if any.
    pub fn find(&self, attachment: &Attachment) -> Result<Option<Ipv4Addr>> {
        Ok(self.allocations()?.into_iter().find(|(_, o)| o.as_ref() == Some(attachment)).map(|(ip, _)| ip))
    }

    /// Allocates an address to `attachment` (the one it already holds, if it holds one).
    pub fn allocate(&self, attachment: &Attachment) -> Result<Ipv4Addr> {
        let taken = self.allocations()?;
        if let Some((ip, _)) = taken.iter().find(|(_, o)| o.as_ref() == Some(attachment)) {
            return Ok(*ip);
        }
        let taken: std::collections::BTreeSet<Ipv4Addr> = taken.into_iter().map(|(ip, _)| ip).collect();
        let (first, last) = (u32::from(self.first), u32::from(self.last));
        let size = last - first + 1;
        let start = std::fs::read_to_string(self.dir.join(LAST))
            .ok()
            .and_then(|t| t.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip))
            .map_or(first, |ip| if ip == last { first } else { ip + 1 });
        for i in 0..size {
            let ip = Ipv4Addr::from(first + (start - first + i) % size);
            if taken.contains(&ip) {
                continue;
            }
            if self.claim(ip, attachment)? {
                let last_path = self.dir.join(LAST);
                std::fs::write(&last_path, ip.to_string()).map_err(io("writing", &last_path))?;
                return Ok(ip);
            }
        }
        Err(CniError::new(
            code::POOL_EXHAUSTED,
            format!("no free address in {}-{} ({} allocated)", self.first, self.last, taken.len()),
        ))
    }

    /// Writes the record for `ip` atomically; `false` if the address turned out to be taken.
    fn claim(&self, ip: Ipv4Addr, attachment: &Attachment) -> Result<bool> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}-{ip}", std::process::id()));
        let mut file = File::create(&tmp).map_err(io("creating", &tmp))?;
        writeln!(file, "{}\n{}", attachment.container_id, attachment.ifname).map_err(io("writing", &tmp))?;
        file.sync_all().map_err(io("syncing", &tmp))?;
        let path = self.dir.join(ip.to_string());
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(dir) = File::open(&self.dir) {
                    let _ = dir.sync_all();
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(CniError::io(format!("recording {}", path.display()), e)),
        }
    }

    /// Releases whatever `attachment` holds; the address, if it held one.
    pub fn release(&self, attachment: &Attachment) -> Result<Option<Ipv4Addr>> {
        let Some(ip) = self.find(attachment)? else { return Ok(None) };
        self.remove(ip)?;
        Ok(Some(ip))
    }

    fn remove(&self, ip: Ipv4Addr) -> Result<()> {
        let path = self.dir.join(ip.to_string());
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CniError::io(format!("removing {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Releases every allocation not owned by one of `valid`; returns the released addresses.
    pub fn gc(&self, valid: &[Attachment]) -> Result<Vec<Ipv4Addr>> {
        let mut released = Vec::new();
        for (ip, owner) in self.allocations()? {
            if owner.as_ref().is_none_or(|o| !valid.contains(o)) {
                self.remove(ip)?;
                released.push(ip);
            }
        }
        Ok(released)
    }

    /// How many addresses are still free.
    pub fn free(&self) -> Result<usize> {
        let size = (u32::from(self.last) - u32::from(self.first) + 1) as usize;
        Ok(size.saturating_sub(self.allocations()?.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::config::Cidr;

    fn ipam(dir: &Path, first: [u8; 4], last: [u8; 4]) -> Ipam {
        Ipam {
            subnet: Cidr::parse("10.9.0.0/24").expect("cidr"),
            first: first.into(),
            last: last.into(),
            data_dir: dir.to_owned(),
        }
    }

    fn att(id: &str) -> Attachment {
        Attachment { container_id: id.into(), ifname: "eth0".into() }
    }

    #[test]
    fn allocates_reuses_rotates_releases_and_collects() {
        let dir = tempfile::tempdir().expect("tmp");
        let ipam = ipam(dir.path(), [10, 9, 0, 2], [10, 9, 0, 4]);
        let pool = Pool::lock(&ipam, "net").expect("lock");
        let a = pool.allocate(&att("a")).expect("a");
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(pool.allocate(&att("a")).expect("again"), a, "an attachment keeps its address");
        let b = pool.allocate(&att("b")).expect("b");
        assert_eq!(pool.release(&att("a")).expect("release"), Some(a));
        // Not a again at once: allocation moves on past the last one handed out.
        let c = pool.allocate(&att("c")).expect("c");
        assert_eq!(c, Ipv4Addr::new(10, 9, 0, 4));
        let d = pool.allocate(&att("d")).expect("d wraps");
        assert_eq!(d, a);
        let full = pool.allocate(&att("e")).expect_err("exhausted");
        assert_eq!(full.code, code::POOL_EXHAUSTED);
        assert_eq!(pool.release(&att("nobody")).expect("release"), None);
        // A torn record (no owner) and records of gone attachments are collected.
        std::fs::write(dir.path().join("net/10.9.0.3"), "").expect("torn");
        let mut released = pool.gc(&[att("c")]).expect("gc");
        released.sort();
        assert_eq!(released, [a, b]);
        assert_eq!(pool.allocations().expect("list").len(), 1);
        assert_eq!(pool.free().expect("free"), 2);
    }
}
