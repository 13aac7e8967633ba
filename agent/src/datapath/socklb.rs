//! The socket-level load balancer's side of the datapath: the four cgroup hooks attached to the
//! root cgroup (the node's own processes; the programs themselves keep to the node's network
//! namespace), each through a pinned link, and the namespace cookie they are given.

use std::{
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use aya::programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink};
use skiff_common::names;

use super::{DatapathError, pinned};

/// The root of the cgroup v2 hierarchy, where the hooks go: `/sys/fs/cgroup` on a unified
/// system, `/sys/fs/cgroup/unified` on a hybrid one (from /proc/self/mounts).
pub fn root_cgroup() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, path, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(path))
    })
}

/// The socket-level load balancer's programs.
pub const PROGRAMS: [&str; 4] =
    [names::PROG_CONNECT4, names::PROG_SENDMSG4, names::PROG_RECVMSG4, names::PROG_GETPEER4];

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE, Linux ≥ 5.14).
pub fn netns_cookie() -> std::io::Result<u64> {
    let socket =
        std::net::UdpSocket::bind("127.0.0.1:0").or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))?;
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, a live u64.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if ret == 0 { Ok(cookie) } else { Err(std::io::Error::last_os_error()) }
}

/// Attaches `prog` (one of [`PROGRAMS`]) to the cgroup at `cgroup` through the link pinned at
/// `pin`. A link a previous agent pinned there is replaced by attaching the new one first and only
/// then unpinning the old (the hooks allow several programs; for a moment both run, and the second
/// finds a backend address, no frontend, and leaves it): no connect() goes untranslated.
pub(super) fn attach(
    prog: &mut CgroupSockAddr,
    name: &'static str,
    cgroup: &Path,
    pin: &Path,
) -> Result<(), DatapathError> {
    let err = |source| DatapathError::Attach { program: name, iface: cgroup.display().to_string(), source };
    let file = std::fs::File::open(cgroup)
        .map_err(|source| DatapathError::Bpffs { path: cgroup.to_owned(), source })?;
    // A bpf link (Linux ≥ 5.7): several programs may share the hook; the kernel takes no flags
    // for links (it refuses ALLOW_MULTI there), hence the default mode.
    let id = prog.attach(&file, CgroupAttachMode::default()).map_err(err)?;
    let link: FdLink = prog
        .take_link(id)
        .map_err(err)?
        .try_into()
        .map_err(|source| DatapathError::Link { iface: cgroup.display().to_string(), source })?;
    // bpffs refuses names with a dot.
    let fresh = PathBuf::from(format!("{}-new", pin.display()));
    let _ = std::fs::remove_file(&fresh);
    link.pin(&fresh).map_err(|source| DatapathError::Pin { path: fresh.clone(), source })?;
    pinned::unpin(pin).map_err(err)?;
    std::fs::rename(&fresh, pin).map_err(|source| DatapathError::Bpffs { path: pin.to_owned(), source })
}
