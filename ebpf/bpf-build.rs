// How the kernel-side crate is built and linted: one definition, `include!`d by `agent/build.rs`
// (which builds it) and `xtask` (which runs clippy on it), so both drive the inner nightly cargo
// identically and share its fingerprints in `target/ebpf`.

/// The kernel-side package and its target.
pub const EBPF_PACKAGE: &str = "skiff-ebpf";
pub const BPF_TARGET: &str = "bpfel-unknown-none";

/// The only environment the inner cargo sees besides its rustflags. The outer cargo's differs
/// between build, clippy and test (clippy-driver as wrapper, LD_LIBRARY_PATH, the stable toolchain
/// choice); any of it leaking in made the inner cargo rebuild `core` and the programs.
const EBPF_ENV_PASS_THROUGH: &[&str] = &["PATH", "HOME", "RUSTUP_HOME", "CARGO_HOME", "TERM", "TMPDIR"];

/// `rustup run nightly cargo <subcommand>` for the eBPF crate, in a clean environment.
/// `bpf_target_arch` is the host's arch (aya-ebpf reads it for pt_regs layouts); BTF needs full
/// debuginfo on every crate, `core` included, and bpf-linker's `--btf`.
pub fn ebpf_cargo(
    subcommand: &str,
    workspace: &std::path::Path,
    target_dir: &std::path::Path,
    bpf_target_arch: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", subcommand, "--release", "--locked"])
        .args(["--package", EBPF_PACKAGE, "--target", BPF_TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace)
        .env_clear()
        .envs(std::env::vars_os().filter(|(key, _)| EBPF_ENV_PASS_THROUGH.iter().any(|k| key == k)))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{bpf_target_arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        );
    cmd
}

/// Like [`ebpf_cargo`] but for any nightly program (rustc, cargo install), same clean environment.
pub fn nightly_command(program: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("rustup");
    cmd.args(["run", "nightly", program])
        .env_clear()
        .envs(std::env::vars_os().filter(|(key, _)| EBPF_ENV_PASS_THROUGH.iter().any(|k| key == k)));
    cmd
}
