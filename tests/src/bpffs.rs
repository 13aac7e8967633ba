//! bpffs for tests: mounted when missing, one private pin directory per test.

use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result, cmd, require_root, unique_name};

const BPFFS: &str = "/sys/fs/bpf";
/// Parent of every test pin dir.
pub(crate) const PIN_ROOT: &str = "/sys/fs/bpf/skiff-test";

/// Mounts bpffs at /sys/fs/bpf unless it is mounted there already. Test processes run in
/// parallel, so check-and-mount holds a lock: two racing mounts would stack two bpffs instances.
pub fn ensure_bpffs() -> Result<()> {
    require_root()?;
    let lock_path = Path::new("/run/skiff-test-bpffs.lock");
    let file = std::fs::File::create(lock_path).map_err(|source| Error::Path {
        what: "creating lock",
        path: lock_path.to_owned(),
        source,
    })?;
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::io("locking /run/skiff-test-bpffs.lock", errno.into()))?;
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| Error::io("reading /proc/self/mounts", e))?;
    let mounted = mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        fields.nth(1) == Some(BPFFS) && fields.next() == Some("bpf")
    });
    if !mounted {
        cmd::run("mount", &["-t", "bpf", "bpf", BPFFS])?;
    }
    Ok(())
}

/// A private directory on bpffs for a test's pinned maps; removed with its pins on drop.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    pub fn new(label: &str) -> Result<Self> {
        ensure_bpffs()?;
        crate::stale::sweep_once();
        let path = Path::new(PIN_ROOT).join(unique_name(label));
        std::fs::create_dir_all(&path).map_err(|source| Error::Path {
            what: "creating pin dir",
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove pin dir {}: {err}", self.path.display());
        }
    }
}
