//! Pod network namespaces pinned under /run/netns (where `ip netns` finds them), made the way
//! `ip netns add` makes them: a thread unshares its network namespace and bind-mounts it onto a
//! file, which keeps it alive without any process in it.

use std::path::{Path, PathBuf};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
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
    let bind = target.clone();
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(Some(own.as_str()), &bind, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the netns thread panicked")));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&target);
        return Err(e);
    }
    // Loopback up, as every runtime does.
    let up = on_thread(Some(target.clone()), || -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        rt.block_on(async {
            use futures::TryStreamExt as _;
            let (connection, handle, _) = rtnetlink::new_connection()?;
            let task = tokio::spawn(connection);
            let lo = handle.link().get().match_name("lo").execute().try_next().await;
            let result = match lo {
                Ok(Some(link)) => handle
                    .link()
                    .set(rtnetlink::LinkUnspec::new_with_index(link.header.index).up().build())
                    .execute()
                    .await
                    .map_err(std::io::Error::other),
                Ok(None) => Err(std::io::Error::other("no loopback in the new namespace")),
                Err(e) => Err(std::io::Error::other(e)),
            };
            task.abort();
            result
        })
    })
    .and_then(|r| r);
    if let Err(e) = up {
        let _ = delete(name);
        return Err(e);
    }
    Ok(target)
}

/// Runs `f` on a fresh OS thread that first enters the network namespace at `netns` (stays in
/// this process's with `None`). The thread ends with `f`, so no pooled thread is ever left in
/// another namespace.
pub fn on_thread<T: Send + 'static>(
    netns: Option<PathBuf>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    std::thread::spawn(move || -> std::io::Result<T> {
        if let Some(ns) = netns {
            let file = std::fs::File::open(&ns)
                .map_err(|e| std::io::Error::new(e.kind(), format!("opening {}: {e}", ns.display())))?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)?;
        }
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
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
