//! `cargo xtask ci`: exactly what `.ci/run` runs.

use std::{path::Path, time::SystemTime};

use anyhow::{Context as _, bail};

use crate::{
    lab,
    step::{self, cargo, step},
};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    step("rustfmt", || step::run(cargo().args(["fmt", "--all", "--", "--check"])))?;
    step("clippy (host crates)", || {
        step::run(cargo().args(["clippy", "--locked", "--all-targets", "--", "-D", "warnings"]))
    })?;
    // The host clippy run built the eBPF object (agent/build.rs); nothing below may rebuild it.
    let object = step::target_dir().join("ebpf/bpfel-unknown-none/release/skiff-ebpf");
    let built_at = modified(&object)?;
    step("clippy (eBPF crate, bpfel-unknown-none)", clippy_ebpf)?;
    // tests/tests/echo_pod.rs runs the static binary inside the demo image.
    crate::demo::build_echo()?;
    step("tests (unit, integration, privileged)", || step::run(&mut nextest(&["--no-fail-fast"])))?;
    step("no test state left behind", || {
        let left = skiff_tests::leftovers();
        if !left.is_empty() {
            bail!("tests left namespaces or pin dirs behind: {left:?}");
        }
        Ok(())
    })?;
    step("privileged tests again (a second run must pass too)", || {
        step::run(&mut nextest(&["--package", "skiff-tests", "--package", "skiff-cni"]))
    })?;
    crate::bench::dataplane_quick()?;
    step("lab smoke run", || lab::smoke(&lab::SmokeArgs::default()))?;
    step("lab e2e (two nodes, pods, traffic across them, down)", lab::e2e)?;
    step("eBPF object built once", || {
        if modified(&object)? != built_at {
            bail!("{} was rebuilt although nothing in ebpf/ changed", object.display());
        }
        Ok(())
    })
}

/// `cargo nextest run` with the project's nextest config; `--run-ignored all`: nothing is skipped.
fn nextest(extra: &[&str]) -> std::process::Command {
    let mut cmd = cargo();
    cmd.args(["nextest", "run", "--locked", "--run-ignored", "all", "--config-file"])
        .arg(step::workspace_root().join(".cargo/nextest.toml"))
        .args(extra)
        .env("SKIFF_PYTHON", crate::setup::python_venv().join("bin/python"));
    cmd
}

fn modified(path: &Path) -> anyhow::Result<SystemTime> {
    let meta = std::fs::metadata(path).with_context(|| format!("{} missing", path.display()))?;
    meta.modified().with_context(|| format!("mtime of {}", path.display()))
}

/// Lints the kernel-side crate for its real target, driven exactly like `agent/build.rs` drives
/// its build (same environment, flags and target dir).
fn clippy_ebpf() -> anyhow::Result<()> {
    let target_dir = step::target_dir().join("ebpf");
    let mut cmd =
        step::bpf_build::ebpf_cargo("clippy", &step::workspace_root(), &target_dir, std::env::consts::ARCH);
    step::run(cmd.args(["--", "-D", "warnings"]))
}
