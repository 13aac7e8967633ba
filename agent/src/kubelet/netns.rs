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
    if is_mounted(&target) {
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
    let file = std::fs::File::open(&target)?;
    let up = std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)?;
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
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the netns thread panicked")));
    if let Err(e) = up {
        let _ = delete(name);
        return Err(e);
    }
    Ok(target)
}

fn is_mounted(target: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let t = target.display().to_string();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(t.as_str()))
}

/// Deletes network namespace `name` (nothing to do if it is gone).
pub fn delete(name: &str) -> std::io::Result<()> {
    let target = path(name);
    if is_mounted(&target) {
        umount2(&target, MntFlags::MNT_DETACH)?;
    }
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
