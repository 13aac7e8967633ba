//! Cleaning up after killed runs: everything the harness creates is named `skt-<pid>-…`, so
//! anything whose pid is no longer alive is a leftover.

use std::{fs, io, path::Path, sync::Once};

use crate::{Error, Result, TEST_PREFIX, bpffs::PIN_ROOT, cmd, containerd::CONTAINERD_ROOT};

const NETNS_DIR: &str = "/run/netns";

/// The pid encoded in a harness name, if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(TEST_PREFIX)?.split('-').next()?.parse().ok()
}

fn is_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Harness entries in `dir`.
fn entries(dir: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| owner_pid(n).is_some())
        .collect()
}

fn stale_entries(dir: &str) -> Vec<String> {
    entries(dir).into_iter().filter(|name| owner_pid(name).is_some_and(|pid| !is_alive(pid))).collect()
}

/// Leftovers: harness entries (`skt-…`) in /run/netns and the test pin root whose owning process
/// has exited. Entries of processes still running (another test run) are not leftovers.
pub fn leftovers() -> Vec<String> {
    let mut all = stale_entries(NETNS_DIR);
    all.extend(stale_entries(PIN_ROOT));
    all.extend(stale_entries(CONTAINERD_ROOT));
    all
}

/// Deletes network namespaces and bpffs pin dirs left by dead harness processes; returns what it
/// removed. Test processes sweep concurrently, so an entry another sweeper removed first is not an
/// error; the first real failure is returned after every entry has been tried.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut first_err = None;
    for name in stale_entries(NETNS_DIR) {
        match cmd::run("ip", &["netns", "delete", &name]) {
            Ok(_) => removed.push(name),
            Err(_) if !Path::new(NETNS_DIR).join(&name).exists() => {}
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    for name in stale_entries(PIN_ROOT) {
        let path = Path::new(PIN_ROOT).join(&name);
        match fs::remove_dir_all(&path) {
            Ok(()) => removed.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                first_err.get_or_insert(Error::Path { what: "removing stale pin dir", path, source });
            }
        }
    }
    for name in stale_entries(CONTAINERD_ROOT) {
        crate::containerd::teardown(&Path::new(CONTAINERD_ROOT).join(&name));
        removed.push(name);
    }
    first_err.map_or(Ok(removed), Err)
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
