//! A private containerd for a test: its own root, state, sockets and log under
//! `/run/skiff-test/skt-<pid>-<n>-<label>/`, the CRI plugin off. Dropping it (also on panic)
//! kills its shims and the daemon, unmounts whatever it left mounted and removes the directory;
//! a killed run's daemon is swept like the harness's other leftovers.

use std::{
    io::Write as _,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{Error, Result, poll_until, require_root, unique_name};

/// Where test daemons live.
pub const CONTAINERD_ROOT: &str = "/run/skiff-test";

#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts a daemon and waits until its socket answers.
    pub fn start(label: &str) -> Result<Self> {
        require_root()?;
        crate::stale::sweep_once();
        let dir = Path::new(CONTAINERD_ROOT).join(unique_name(label));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Path {
            what: "creating containerd dir",
            path: dir.clone(),
            source,
        })?;
        let mut daemon = Containerd { dir, child: None };
        let config = daemon.dir.join("config.toml");
        let d = daemon.dir.display();
        let text = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             [debug]\n  address = \"{d}/debug.sock\"\n"
        );
        let mut file = std::fs::File::create(&config).map_err(|source| Error::Path {
            what: "writing config",
            path: config.clone(),
            source,
        })?;
        file.write_all(text.as_bytes()).map_err(|source| Error::Path {
            what: "writing config",
            path: config.clone(),
            source,
        })?;
        let log_path = daemon.dir.join("containerd.log");
        let log = std::fs::File::create(&log_path).map_err(|source| Error::Path {
            what: "creating log",
            path: log_path.clone(),
            source,
        })?;
        let err = log.try_clone().map_err(|e| Error::io("log", e))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| Error::io("starting containerd (cargo xtask setup installs it)", e))?;
        daemon.child = Some(child);
        let socket = daemon.socket();
        poll_until("containerd's socket", Duration::from_secs(20), || {
            UnixStream::connect(&socket).ok().map(drop)
        })?;
        Ok(daemon)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        teardown(&self.dir);
    }
}

/// Kills every process whose command line mentions `dir` (a daemon, its shims), unmounts
/// everything under it (deepest first) and removes it. Also what `cargo xtask lab down` does
/// with the lab's directory.
pub fn teardown(dir: &Path) {
    let needle = dir.display().to_string();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) && pid != std::process::id() as i32 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut under: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&needle)).collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    if let Err(err) = std::fs::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: could not remove {}: {err}", dir.display());
    }
}
