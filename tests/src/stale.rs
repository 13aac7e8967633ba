//! Cleaning up after killed runs: everything the harness creates is named `skt-<pid>-…`, so
//! anything whose pid is no longer alive is a leftover.

use std::{fs, path::Path, sync::Once};

use crate::{Result, TEST_PREFIX, bpffs::PIN_ROOT, cmd};

/// The pid encoded in a harness name, if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(TEST_PREFIX)?.split('-').next()?.parse().ok()
}

fn is_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn stale_entries(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| owner_pid(name).is_some_and(|pid| !is_alive(pid)))
        .collect()
}

/// Deletes network namespaces and bpffs pin dirs left by dead harness processes; returns what it
/// removed.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in stale_entries(Path::new("/run/netns")) {
        cmd::run("ip", &["netns", "delete", &name])?;
        removed.push(name);
    }
    for name in stale_entries(Path::new(PIN_ROOT)) {
        let path = Path::new(PIN_ROOT).join(&name);
        fs::remove_dir_all(&path).map_err(|source| crate::Error::Path {
            what: "removing stale pin dir",
            path,
            source,
        })?;
        removed.push(name);
    }
    Ok(removed)
}

/// Sweeps once per process, before the first thing is created; failures only warn, because a
/// leftover never collides with the unique names created afterwards.
pub(crate) fn sweep_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(err) = sweep_stale() {
            eprintln!("warning: sweeping stale test state: {err}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_owner_pid() {
        assert_eq!(owner_pid("skt-4242-7-counters"), Some(4242));
        assert_eq!(owner_pid("skt-x-7"), None);
        assert_eq!(owner_pid("skiff-lab-node"), None);
    }
}
