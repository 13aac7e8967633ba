//! Pod network namespaces pinned under /run/netns (where `ip netns` finds them), made the way
//! `ip netns add` makes them: a thread unshares its network namespace and bind-mounts it onto a
//! file, which keeps it alive without any process in it.

use std::path::{Path, PathBuf};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};
use skiff_cni::{
    netlink,
    spec::error::{CniError, code},
};

pub const NETNS_DIR: &str = "/run/netns";

/// The path of the named namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates network namespace `name` (an existing one of that name is kept).
pub fn create(name: &str) -> std::io::Result<PathBuf> {
    let target = path(name);
    if is_mount_point(&target) {
        return Ok(target);
    }
    std::fs::create_dir_all(NETNS_DIR)?;
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&target)?;
    // A fresh thread unshares (its namespace ends with it unless pinned), pins the namespace
    // onto the file and brings the loopback up, as every runtime does.
    let made = on_thread(None, || -> std::io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(Some(own.as_str()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        netlink::run(async |handle| {
            let lo = netlink::link_index(handle, "lo")
                .await?
                .ok_or_else(|| CniError::new(code::IO, "no loopback in the new namespace"))?;
            netlink::set_up(handle, lo).await
        })
        .map_err(std::io::Error::other)
    })
    .and_then(|r| r);
    if let Err(e) = made {
        let _ = delete(name);
        return Err(e);
    }
    Ok(target)
}

/// Runs `f` on a fresh OS thread that first enters the network namespace at `netns`. With
/// `None` it stays in this process's namespace but still gets a fresh thread ([`create`] relies
/// on that: its unshare must end with the thread). The thread ends with `f`, so no pooled thread
/// is ever left in another namespace.
pub fn on_thread<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let file = netns
        .map(|ns| {
            std::fs::File::open(ns)
                .map_err(|e| std::io::Error::new(e.kind(), format!("opening {}: {e}", ns.display())))
        })
        .transpose()?;
    netlink::on_thread(file.as_ref(), f)
}

/// Whether `path` is a mount point (in this process's mount namespace).
pub fn is_mount_point(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = path.display().to_string();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// Deletes network namespace `name` (nothing to do if it is gone).
pub fn delete(name: &str) -> std::io::Result<()> {
    let target = path(name);
    if is_mount_point(&target) {
        umount2(&target, MntFlags::MNT_DETACH)?;
    }
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
