//! `cargo xtask bench <what>`: runs a benchmark and puts its table in the README.

use std::process::Stdio;

use anyhow::{Context as _, bail};

use crate::step::{self, cargo, step};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Bench {
    /// The ClusterIP load balancer: per-packet cost by frontend count, programming and reconcile latency.
    Lb,
    /// Tracing's cost per packet: compiled out vs in but off vs on (unrelated and matching traffic).
    Trace,
    /// The API server on the embedded store and on etcd, side by side: durable creates/s, list
    /// latency, watch fan-out, memory (`control` is the same).
    #[value(alias = "control")]
    Api,
    /// The CNI plugin: ADD/DEL latency over 200 pods, beside the reference ptp plugin.
    Cni,
    /// Pods: startup latency through the real agent and containerd, agent memory.
    Pods,
    /// The control loops: scheduling throughput (1,000 nodes, 10,000 pods), endpoint propagation.
    Loops,
    /// The Service dataplane, eBPF vs iptables vs direct: latency, programming, CPU, throughput,
    /// NodePort forwarding, at 10 to 50k Services.
    Dataplane,
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Lb => "lb",
            Bench::Trace => "trace",
            Bench::Api => "api",
            Bench::Cni => "cni",
            Bench::Pods => "pods",
            Bench::Loops => "loops",
            Bench::Dataplane => "dataplane",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Bench::Lb => "skiff-agent",
            Bench::Trace => "skiff-agent",
            Bench::Api => "skiff-control",
            Bench::Cni => "skiff-cni",
            Bench::Pods => "skiff-tests",
            Bench::Loops => "skiff-control",
            Bench::Dataplane => "skiff-tests",
        }
    }
}

/// Where the dataplane benchmark's chart is kept, so the README can show it.
const DATAPLANE_CHART: &str = "tests/benches/dataplane/chart.svg";

/// `cargo xtask bench dataplane --quick` in CI: a dev build (what the tests built already) and the
/// smallest sizes, so the harness keeps working; the README is left alone.
pub fn dataplane_quick() -> anyhow::Result<()> {
    step("dataplane benchmark, quick (harness check; numbers not kept)", || {
        step::run(cargo().args(["build", "--locked", "-p", "skiff-cni", "-p", "skiff-echo"]))?;
        step::run(
            cargo()
                .args([
                    "bench",
                    "--locked",
                    "--profile",
                    "dev",
                    "--package",
                    "skiff-tests",
                    "--bench",
                    "dataplane",
                ])
                .args(["--", "--quick"])
                .env("SKIFF_BIN_DIR", step::target_dir().join("debug"))
                .env("SKIFF_BENCH_OUT", step::target_dir().join("bench-quick"))
                .stdout(Stdio::null()),
        )
    })
}

pub fn run(which: Bench, quick: bool) -> anyhow::Result<()> {
    crate::setup::run()?;
    if matches!(which, Bench::Dataplane) {
        if quick {
            return dataplane_quick();
        }
        step("build skiff-cni and skiff-echo (release)", || {
            step::run(cargo().args(["build", "--locked", "--release", "-p", "skiff-cni", "-p", "skiff-echo"]))
        })?;
    } else if quick {
        bail!("--quick is only for the dataplane benchmark");
    }
    if matches!(which, Bench::Pods) {
        step("build skiff-agent and skiff-cni (release)", || {
            step::run(cargo().args([
                "build",
                "--locked",
                "--release",
                "-p",
                "skiff-agent",
                "-p",
                "skiff-cni",
            ]))
        })?;
    }
    let table = step(&format!("benchmark {} (release build, then measuring)", which.name()), || {
        let out = cargo()
            .args(["bench", "--locked", "--package", which.package(), "--bench", which.name()])
            .env("SKIFF_BIN_DIR", step::target_dir().join("release"))
            .env("SKIFF_BENCH_OUT", step::target_dir().join("bench"))
            .stderr(Stdio::inherit())
            .output()
            .context("running cargo bench")?;
        if !out.status.success() {
            bail!("benchmark failed: {}", out.status);
        }
        let stdout = String::from_utf8(out.stdout).context("benchmark output is not UTF-8")?;
        Ok(stdout.lines().filter(|l| l.starts_with('|')).collect::<Vec<_>>().join("\n"))
    })?;
    println!("{table}");
    if matches!(which, Bench::Dataplane) {
        let chart = step::target_dir().join("bench/dataplane.svg");
        std::fs::copy(&chart, step::workspace_root().join(DATAPLANE_CHART))
            .with_context(|| format!("copying {}", chart.display()))?;
        eprintln!("raw numbers: {}", step::target_dir().join("bench/dataplane.json").display());
    }
    step("update the README's table", || update_readme(which.name(), &table))
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in README.md.
fn update_readme(name: &str, table: &str) -> anyhow::Result<()> {
    let path = step::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&path).context("reading README.md")?;
    let (open, close) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let (Some(start), Some(end)) = (readme.find(&open), readme.find(&close)) else {
        bail!("README.md has no {open} … {close} section");
    };
    let updated = format!("{}{open}\n{table}\n{}", &readme[..start], &readme[end..]);
    std::fs::write(&path, updated).context("writing README.md")
}
