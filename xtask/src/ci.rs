//! `cargo xtask ci`: exactly what `.ci/run` runs.

use std::{path::Path, time::SystemTime};

use anyhow::{Context as _, bail};

use crate::{
    lab,
    step::{self, cargo, nightly, step},
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
    step("tests (unit, integration, privileged)", || {
        // --run-ignored all: nothing may be skipped in CI.
        step::run(cargo().args(["nextest", "run", "--locked", "--no-fail-fast", "--run-ignored", "all"]))
    })?;
    step("privileged tests again: nothing left over from the first run", || {
        step::run(cargo().args([
            "nextest",
            "run",
            "--locked",
            "--package",
            "skiff-tests",
            "--run-ignored",
            "all",
        ]))
    })?;
    step("lab smoke run", || lab::run(&lab::LabArgs::default()))?;
    step("eBPF object built once", || {
        if modified(&object)? != built_at {
            bail!("{} was rebuilt although nothing in ebpf/ changed", object.display());
        }
        Ok(())
    })
}

fn modified(path: &Path) -> anyhow::Result<SystemTime> {
    let meta = std::fs::metadata(path).with_context(|| format!("{} missing", path.display()))?;
    meta.modified().with_context(|| format!("mtime of {}", path.display()))
}

/// Lints the kernel-side crate for its real target, with the flags `agent/build.rs` builds it with,
/// into the same target dir so the two share `core`.
fn clippy_ebpf() -> anyhow::Result<()> {
    let target_dir = step::target_dir().join("ebpf");
    step::run(
        nightly("cargo")
            .args(["clippy", "--locked", "--release", "--package", "skiff-ebpf"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(target_dir)
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!(
                    "--cfg=bpf_target_arch=\"{}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
                    std::env::consts::ARCH
                ),
            )
            .args(["--", "-D", "warnings"]),
    )
}
