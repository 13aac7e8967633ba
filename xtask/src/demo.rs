//! The lab's demo workload: `skiff-echo` built as a static binary (it runs as PID 1 in a
//! busybox-static image with no libc) and the `skiff.local/echo:<version>` OCI archive around it.
//!
//! Static means the gnu target with `+crt-static` (glibc's `libc.a` comes with libc6-dev). The flag
//! goes in `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS` together with an explicit `--target`:
//! it then applies to that target's artifacts only, under their own `target/<triple>/` directory,
//! so the host build cache (build scripts, proc macros, `target/debug`) stays valid. `RUSTFLAGS`
//! would override it, so it is removed from the child's environment.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};

use crate::step::{self, cargo, step};

/// The target the static binary is built for (the host's, made static).
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds `skiff-echo` as a static release binary and checks it needs no dynamic loader.
pub fn build_echo() -> anyhow::Result<PathBuf> {
    step("build skiff-echo (static, release)", || {
        step::run(
            cargo()
                .args(["build", "--locked", "--release", "--package", "skiff-echo", "--target", TARGET])
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", "-C target-feature=+crt-static"),
        )?;
        let binary = step::target_dir().join(TARGET).join("release").join("skiff-echo");
        ensure_static(&binary)?;
        Ok(binary)
    })
}

/// Builds the demo image archive at `out` (busybox-static plus `/skiff-echo` as entrypoint) with
/// the agent's `skiff image build-echo`, so the tar/OCI writing lives in one place.
pub fn build_echo_image(out: &Path) -> anyhow::Result<PathBuf> {
    let binary = build_echo()?;
    step(&format!("write the echo image archive {}", out.display()), || {
        step::run(
            cargo()
                .args(["run", "--locked", "--quiet", "--package", "skiff-agent", "--bin", "skiff", "--"])
                .args(["image", "build-echo"])
                .arg(out)
                .arg("--echo")
                .arg(&binary),
        )?;
        Ok(out.to_owned())
    })
}

/// `cargo xtask echo-image`: the archive, at `out` or under the target dir.
pub fn run(out: Option<PathBuf>) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| step::target_dir().join("skiff-echo-image.tar"));
    let out = build_echo_image(&out)?;
    eprintln!("Import it on a node with `skiff image import {}`.", out.display());
    Ok(())
}

/// Fails unless `path` is an x86-64 ELF executable without a `PT_INTERP` program header (which
/// names the dynamic loader; a static or static-pie binary has none).
pub fn ensure_static(path: &Path) -> anyhow::Result<()> {
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let what = path.display();
    ensure!(elf.len() >= 64 && elf[..4] == *b"\x7fELF", "{what}: not an ELF file");
    ensure!(elf[4] == 2 && elf[5] == 1, "{what}: not a 64-bit little-endian ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&elf[0x20..0x28]);
    let phoff = usize::try_from(u64::from_le_bytes(phoff)).context("program header offset")?;
    let (entsize, count) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
    ensure!(count > 0 && entsize >= 4, "{what}: no program headers");
    const PT_INTERP: u32 = 3;
    for i in 0..count {
        match u32_at(phoff + i * entsize) {
            None => bail!("{what}: program header {i} is past the end of the file"),
            Some(PT_INTERP) => bail!("{what}: dynamically linked (it has an ELF interpreter)"),
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic() {
        // Debian's busybox-static is static; this test binary is not.
        ensure_static(Path::new("/bin/busybox")).expect("busybox-static is static");
        let me = std::env::current_exe().expect("exe");
        let err = ensure_static(&me).expect_err("a test binary is dynamic");
        assert!(err.to_string().contains("interpreter"), "{err}");
        let dir = std::env::temp_dir().join(format!("skiff-xtask-elf-{}", std::process::id()));
        std::fs::write(&dir, b"#!/bin/sh\n").expect("write");
        let err = ensure_static(&dir);
        let _ = std::fs::remove_file(&dir);
        assert!(err.is_err());
    }
}
