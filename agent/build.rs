//! Builds the kernel-side crate (`ebpf/skiff-ebpf`) for `bpfel-unknown-none` with the nightly
//! toolchain and hands the object to `src/datapath/object.rs` through `OUT_DIR`.
//!
//! Why not `aya-build`: it puts the inner cargo's target dir under `OUT_DIR`, which differs between
//! `cargo build`, `cargo clippy` and `cargo test`, so each of them recompiled `core` and the programs
//! from scratch. Here the inner build uses one fixed dir, `<target>/ebpf`, so its own fingerprints
//! make a rebuild with nothing changed in `ebpf/` a no-op.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

const EBPF_PACKAGE: &str = "skiff-ebpf";
const BPF_TARGET: &str = "bpfel-unknown-none";
const TOOLCHAIN: &str = "nightly";
/// The only variables the inner cargo sees, besides its rustflags.
const PASS_THROUGH: &[&str] = &["PATH", "HOME", "RUSTUP_HOME", "CARGO_HOME", "TERM", "TMPDIR"];

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
    let ebpf_dir = workspace.join("ebpf");

    // Rerun when anything under ebpf/ (programs or shared types) or the lock file changes.
    println!("cargo::rerun-if-changed={}", ebpf_dir.display());
    println!("cargo::rerun-if-changed={}", workspace.join("Cargo.lock").display());

    let target_dir = cargo_target_dir(&out_dir)?.join("ebpf");
    check_toolchain()?;

    let mut cmd = Command::new("rustup");
    cmd.args(["run", TOOLCHAIN, "cargo", "build", "--release", "--locked"])
        .args(["--package", EBPF_PACKAGE, "--bin", EBPF_PACKAGE])
        .args(["--target", BPF_TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace)
        // A clean environment: the outer cargo's differs between build, clippy and test
        // (clippy-driver as wrapper, LD_LIBRARY_PATH, the stable toolchain choice), and any of that
        // reaching the inner cargo would make it rebuild everything.
        .env_clear()
        .envs(env::vars_os().filter(|(key, _)| PASS_THROUGH.iter().any(|k| key == k)))
        .env("CARGO_ENCODED_RUSTFLAGS", bpf_rustflags());
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

fn bpf_rustflags() -> OsString {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_owned());
    // aya-ebpf reads bpf_target_arch for pt_regs layouts; BTF needs full debuginfo and --btf.
    let flags =
        [format!("--cfg=bpf_target_arch=\"{arch}\""), "-Cdebuginfo=2".into(), "-Clink-arg=--btf".into()];
    flags.join("\x1f").into()
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
    let rustc_ok = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !rustc_ok {
        return Err(missing("the nightly Rust toolchain"));
    }
    let linker_ok = Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| o.status.success());
    if !linker_ok {
        return Err(missing("bpf-linker"));
    }
    Ok(())
}

fn env_var(key: &str) -> Result<String, String> {
    env::var(key).map_err(|_| format!("{key} not set by cargo"))
}
