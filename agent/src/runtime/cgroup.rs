//! cgroup directories the runtime leaves behind: runc removes a container's own cgroup, not the
//! parents its `cgroupsPath` created (the pod's). Works on cgroup v1 (one tree per controller
//! under /sys/fs/cgroup) and v2 (one tree).

use std::path::Path;

const ROOT: &str = "/sys/fs/cgroup";

/// Removes the (empty) cgroup `path` (absolute within the hierarchy, e.g. `/skiff/pod-<uid>`)
/// from every hierarchy; missing directories are fine.
pub fn remove(path: &str) -> std::io::Result<()> {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return Ok(());
    }
    let mut trees = vec![Path::new(ROOT).to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(ROOT) {
        trees.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for tree in trees {
        let dir = tree.join(relative);
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {}
            // A v1 tree root (cgroup.procs in it) that is not this path's hierarchy.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTDIR as i32) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
