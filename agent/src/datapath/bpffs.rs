//! The BPF filesystem: mounted on demand, like Cilium's agent does, because a fresh host may not
//! have it.

use std::{fs, io, path::Path};

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use super::DatapathError;

/// Where bpffs lives by convention.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Whether `path` is on a mounted bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs at [`BPFFS_ROOT`] if it is not mounted yet.
pub fn ensure_mounted() -> Result<(), DatapathError> {
    let root = Path::new(BPFFS_ROOT);
    if is_bpffs(root) {
        return Ok(());
    }
    let err = |source| DatapathError::Bpffs { path: root.to_path_buf(), source };
    fs::create_dir_all(root).map_err(err)?;
    mount(
        Some("bpf"),
        root,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|errno| err(io::Error::from(errno)))
}

/// Makes sure `dir` exists on bpffs, mounting bpffs at its usual place first when needed. A `dir`
/// outside bpffs is refused before anything is created.
pub fn ensure_dir(dir: &Path) -> Result<(), DatapathError> {
    if dir.starts_with(BPFFS_ROOT) {
        ensure_mounted()?;
    }
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if !is_bpffs(existing) {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "not on a bpf filesystem");
        return Err(DatapathError::Bpffs { path: dir.to_path_buf(), source });
    }
    fs::create_dir_all(dir).map_err(|source| DatapathError::Bpffs { path: dir.to_path_buf(), source })
}
