//! `cargo xtask setup`: installs what building and testing need, skipping whatever is present.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::step::{self, nightly, output, step};

/// Debian packages: (package, a file that proves what it provides is there, why skiff needs it).
/// A package is installed only when its file is missing.
const APT_PACKAGES: &[(&str, &str, &str)] = &[
    ("tzdata", "/usr/share/zoneinfo/UTC", "time zones of CronJob schedules (spec.timeZone)"),
    ("iproute2", "/usr/sbin/ip", "network namespaces, veth pairs and addresses for tests and the lab"),
    ("util-linux", "/usr/bin/nsenter", "entering pod and node namespaces in the lab's checks"),
    ("iputils-ping", "/usr/bin/ping", "the lab's host-to-pod reachability check"),
    ("ethtool", "/usr/sbin/ethtool", "making the lab's and tests' veths behave like wires for XDP"),
    ("bpftool", "/usr/sbin/bpftool", "inspecting loaded programs and maps by hand"),
    ("iptables", "/usr/sbin/iptables", "the iptables proxy mode, skiff's benchmark baseline"),
    ("conntrack", "/usr/sbin/conntrack", "the iptables mode deleting the flows of removed endpoints"),
    ("iperf3", "/usr/bin/iperf3", "the dataplane benchmark's throughput runs"),
    ("protobuf-compiler", "/usr/bin/protoc", "containerd API bindings"),
    (
        "containerd",
        "/usr/bin/containerd",
        "the container runtime the agent drives (tests start private daemons)",
    ),
    ("runc", "/usr/sbin/runc", "containerd's OCI runtime"),
    ("busybox-static", "/bin/busybox", "the locally built test and lab image"),
    ("docker-registry", "/usr/bin/docker-registry", "a private registry the image pull tests push to"),
    ("skopeo", "/usr/bin/skopeo", "pushing test images to that registry"),
    (
        "containernetworking-plugins",
        "/usr/lib/cni/portmap",
        "the reference CNI plugins (portmap, loopback) chained after skiff-cni",
    ),
    (
        "etcd-server",
        "/usr/bin/etcd",
        "etcd, the store several skiff-control processes share (tests start their own)",
    ),
    (
        "etcd-client",
        "/usr/bin/etcdctl",
        "etcdctl snapshot restore, behind skiff-control restore of an etcd backup",
    ),
    ("curl", "/usr/bin/curl", "an HTTPS client with client certificates for the agent endpoint tests"),
    ("systemd", "/usr/bin/systemd-analyze", "systemd-analyze verify, which checks deploy/systemd's units"),
    // This machine kind ships a current kubectl at /usr/bin/kubectl; Debian's is the fallback.
    ("kubernetes-client", "/usr/bin/kubectl", "kubectl, a real client the API server is tested with"),
];

/// bpf-linker built from the crate registry against the nightly toolchain's own libLLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    step("apt packages", apt_packages)?;
    step("nightly toolchain with rust-src", nightly_rust_src)?;
    step("bpf-linker", bpf_linker)?;
    step("cargo-nextest", nextest)?;
    step("Python kubernetes client (venv)", python_client)?;
    step("bpffs at /sys/fs/bpf", || skiff_tests::ensure_bpffs().context("mounting bpffs"))
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, file, _)| !std::path::Path::new(file).exists())
        .map(|(pkg, _, _)| *pkg)
        .collect();
    if missing.is_empty() {
        eprintln!("    all present: {}", APT_PACKAGES.iter().map(|p| p.0).collect::<Vec<_>>().join(", "));
        return Ok(());
    }
    for (pkg, _, why) in APT_PACKAGES.iter().filter(|p| missing.contains(&p.0)) {
        eprintln!("    installing {pkg}: {why}");
    }
    skiff_tests::require_root().context("installing apt packages needs root")?;
    step::run(Command::new("apt-get").args(["update", "-q"]))?;
    step::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn nightly_rust_src() -> anyhow::Result<()> {
    if output(nightly("rustc").arg("--version")).is_none() {
        bail!(
            "the nightly Rust toolchain is missing (this machine kind ships it); \
             install it with `rustup toolchain install nightly`"
        );
    }
    let components =
        output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .unwrap_or_default();
    if components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("    rust-src present");
        return Ok(());
    }
    step::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("skiff")
}

/// What bpf-linker must match: the nightly compiler build and its LLVM.
fn nightly_identity() -> anyhow::Result<String> {
    let verbose = output(nightly("rustc").arg("-vV")).context("rustc +nightly -vV failed")?;
    let mut identity: Vec<&str> =
        verbose.lines().filter(|l| l.starts_with("commit-hash") || l.starts_with("LLVM version")).collect();
    let linker = format!("bpf-linker {BPF_LINKER_VERSION}");
    identity.push(&linker);
    Ok(identity.join("\n"))
}

fn bpf_linker() -> anyhow::Result<()> {
    let identity = nightly_identity()?;
    let stamp = cache_dir().join("bpf-linker.stamp");
    let works = output(Command::new("bpf-linker").arg("--version")).is_some();
    if works && fs::read_to_string(&stamp).ok().as_deref() == Some(identity.as_str()) {
        eprintln!("    bpf-linker present, built for the current nightly LLVM");
        return Ok(());
    }

    let llvm_major = identity
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV names no LLVM version")?
        .to_owned();
    let sysroot = output(nightly("rustc").args(["--print", "sysroot"])).context("nightly sysroot")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let libllvm = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .with_context(|| {
            format!("no libLLVM.so.* in {}: the nightly toolchain lacks its shared LLVM", lib_dir.display())
        })?;

    // bpf-linker's rpath points into this prefix, so it must outlive the build: keep it in the cache.
    let prefix = cache_dir().join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib).with_context(|| format!("creating {}", prefix_lib.display()))?;
    let soname = libllvm.file_name().context("libLLVM path has no file name")?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(soname)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("symlinking {}", link.display()))?;
    }
    eprintln!(
        "    building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm_major} ({})",
        libllvm.display()
    );
    step::run(
        nightly("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force"])
            .args(["--no-default-features", "--features", &format!("llvm-{llvm_major}")])
            .env("LLVM_PREFIX", &prefix),
    )?;
    fs::write(&stamp, identity).with_context(|| format!("writing {}", stamp.display()))
}

/// The official Python client from PyPI, pinned, in a venv the API server's tests use.
const PYTHON_KUBERNETES: &str = "kubernetes==33.1.0";

/// Where the venv lives; `SKIFF_PYTHON` in the tests' environment points at its interpreter.
pub fn python_venv() -> PathBuf {
    cache_dir().join("pyvenv")
}

fn python_client() -> anyhow::Result<()> {
    let venv = python_venv();
    let python = venv.join("bin/python");
    let stamp = venv.join("skiff-requirements");
    if python.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(PYTHON_KUBERNETES) {
        eprintln!("    {PYTHON_KUBERNETES} present in {}", venv.display());
        return Ok(());
    }
    step::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    step::run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        PYTHON_KUBERNETES,
    ]))?;
    fs::write(&stamp, PYTHON_KUBERNETES).with_context(|| format!("writing {}", stamp.display()))
}

fn nextest() -> anyhow::Result<()> {
    if output(step::cargo().args(["nextest", "--version"])).is_some() {
        eprintln!("    cargo-nextest present");
        return Ok(());
    }
    step::run(step::cargo().args(["install", "cargo-nextest", "--locked"]))
}
