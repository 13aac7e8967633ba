//! Builds the kernel-side crate (`ebpf/skiff-ebpf`) for `bpfel-unknown-none` with the nightly
//! toolchain and hands the object to `src/datapath/object.rs` through `OUT_DIR`.
//!
//! Why not `aya-build`: it puts the inner cargo's target dir under `OUT_DIR`, which differs between
//! `cargo build`, `cargo clippy` and `cargo test`, so each of them recompiled `core` and the programs
//! from scratch. Here the inner build uses one fixed dir, `<target>/ebpf`, so its own fingerprints
//! make a rebuild with nothing changed in `ebpf/` a no-op.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

include!("../ebpf/bpf-build.rs");

fn main() {
    if let Err(msg) = run() {
        // One clear line; cargo shows build-script stderr on failure.
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.parent().ok_or("agent crate has no parent dir")?;
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);

    // Rerun when the programs, the shared types, their dependencies or build settings change.
    for input in ["ebpf", "Cargo.lock", "Cargo.toml", ".cargo/config.toml"] {
        println!("cargo::rerun-if-changed={}", workspace.join(input).display());
    }

    let target_dir = cargo_target_dir(&out_dir)?.join("ebpf");
    check_toolchain()?;

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_owned());
    let mut cmd = ebpf_cargo("build", workspace, &target_dir, &arch);
    cmd.args(["--bin", EBPF_PACKAGE]);
    // Build-script stdout carries cargo directives; the inner cargo's chatter goes to stderr.
    cmd.stdout(std::io::stderr());
    let status = cmd.status().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!("eBPF build failed ({status}): {cmd:?}"));
    }

    let built = target_dir.join(BPF_TARGET).join("release").join(EBPF_PACKAGE);
    let object = out_dir.join("skiff-ebpf.o");
    fs::copy(&built, &object).map_err(|e| format!("copy {}: {e}", built.display()))?;
    Ok(())
}

/// Finds the workspace target dir by walking up from OUT_DIR to the dir cargo tags with CACHEDIR.TAG.
fn cargo_target_dir(out_dir: &Path) -> Result<PathBuf, String> {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no CACHEDIR.TAG above OUT_DIR {}", out_dir.display()))
}

fn check_toolchain() -> Result<(), String> {
    let missing =
        |what: &str| format!("{what} is missing; run `cargo xtask setup` to install the eBPF toolchain");
    let works = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    if !works(nightly_command("rustc").arg("--version")) {
        return Err(missing("the nightly Rust toolchain"));
    }
    if !works(Command::new("bpf-linker").arg("--version")) {
        return Err(missing("bpf-linker"));
    }
    Ok(())
}

fn env_var(key: &str) -> Result<String, String> {
    env::var(key).map_err(|_| format!("{key} not set by cargo"))
}
