//! Progress output and command helpers shared by the tasks.

/// The eBPF build definition shared with `agent/build.rs`.
pub mod bpf_build {
    #![allow(dead_code)]
    include!("../../ebpf/bpf-build.rs");
}

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

/// Runs `body` as a named step, printing its start and how long it took.
pub fn step<T>(name: &str, body: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[1m==> {name}\x1b[0m");
    } else {
        eprintln!("==> {name}");
    }
    let start = Instant::now();
    let out = body().with_context(|| format!("step failed: {name}"))?;
    eprintln!("    done in {:.1}s", start.elapsed().as_secs_f64());
    Ok(out)
}

/// Runs a command with inherited output; a non-zero exit is an error.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout, or `None` if it cannot run or exits non-zero.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo` as invoked by whoever ran us (keeps the same toolchain and target dir).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// `rustup run nightly <program>` in the same clean environment `agent/build.rs` uses.
pub fn nightly(program: &str) -> Command {
    let mut cmd = bpf_build::nightly_command(program);
    cmd.current_dir(workspace_root());
    cmd
}

pub fn workspace_root() -> PathBuf {
    // xtask/ sits directly under the workspace root.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// The shared target dir.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}
