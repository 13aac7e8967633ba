//! The lab's long-running processes: started detached (own process group, output to a log file)
//! so they outlive `cargo xtask lab up`, found again by pid, and stopped.
//!
//! Every lab process mentions the lab dir on its command line (binaries run from
//! `/run/skiff-lab/bin`, containerd's config and its shims' `-address` are under it), which is
//! how `down` finds stragglers and checks that none is left.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, waitpid},
    },
    unistd::Pid,
};

use super::topology::LAB_DIR;

/// Makes `cmd` start inside the network namespace at `netns` (a bind-mounted namespace file).
///
/// The child enters it between fork and exec, so the lab's process is the binary itself from its
/// first instruction. (Through `nsenter` there were two execs, and in the moment between them the
/// pid's command line reads empty: a liveness check landing there took the agent for dead.)
pub fn in_netns(cmd: &mut Command, netns: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    // SAFETY: the closure only calls setns(2), which is async-signal-safe, on a descriptor opened
    // before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    Ok(())
}

/// Starts `cmd` in its own process group with stdin closed and stdout/stderr appended to `log`.
pub fn spawn_detached(cmd: &mut Command, log: &Path) -> anyhow::Result<u32> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    // The child is reaped by `reap` (same process) or by init once we exit.
    let pid = child.id();
    // spawn returns once exec began; the new command line appears a moment later (the kernel sets
    // it up after closing the CLOEXEC pipe std waits on), and `alive` goes by it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while cmdline(pid).is_some_and(|c| c.is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(pid)
}

/// The command line of `pid`, arguments joined by spaces; `None` when it is gone or a zombie.
pub fn cmdline(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " ").trim_end().to_owned())
}

/// Whether `pid` is alive and still the lab process it was (its command line mentions `needle`),
/// so a reused pid is never taken for ours.
pub fn alive(pid: u32, needle: &str) -> bool {
    cmdline(pid).is_some_and(|c| c.contains(needle))
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
pub fn stop(pid: u32, needle: &str, grace: Duration) {
    if !alive(pid, needle) {
        reap(pid);
        return;
    }
    let target = Pid::from_raw(pid as i32);
    let _ = kill(target, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid, needle) && Instant::now() < deadline {
        reap(pid);
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid, needle) {
        let _ = kill(target, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid, needle) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    reap(pid);
}

/// Collects the exit status of a child of this process (no-op for anyone else's).
fn reap(pid: u32) {
    let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
}

/// Live processes whose command line mentions the lab dir: (pid, command line).
pub fn mentioning_lab() -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| Some((pid, cmdline(pid)?)))
        .filter(|(_, cmd)| cmd.contains(LAB_DIR))
        .collect()
}

/// SIGKILLs every process mentioning the lab dir and waits for them to go.
pub fn kill_stragglers() -> Vec<(u32, String)> {
    let found = mentioning_lab();
    for (pid, _) in &found {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for (pid, _) in &found {
        while cmdline(*pid).is_some() && Instant::now() < deadline {
            reap(*pid);
            std::thread::sleep(Duration::from_millis(20));
        }
        reap(*pid);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_counts_as_ours_only_while_its_command_line_matches() {
        let me = std::process::id();
        let mine = cmdline(me).expect("own command line");
        assert!(alive(me, &mine));
        assert!(!alive(me, "/run/skiff-lab/definitely-not-this"));
        assert!(!alive(u32::MAX, ""), "a pid that cannot exist");
    }
}
