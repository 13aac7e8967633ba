//! `cargo xtask lab smoke`: the datapath's counter programs in a namespace pair.
//!
//! A client namespace and a node namespace joined by a veth; the real `skiff-agent datapath` runs
//! in the node namespace with XDP and TC egress attached to its interface; UDP echo traffic
//! crosses; the agent's counters are printed and checked. CI runs it next to `lab e2e`.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddrV4,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use skiff_common::Hook;
use skiff_tests::{PairTopology, traffic};

use crate::step::{self, cargo, step};

const CLIENT_NS: &str = "skiff-smoke-client";
const NODE_NS: &str = "skiff-smoke-node";
const PIN_DIR: &str = "/sys/fs/bpf/skiff-smoke";
const ECHO_PORT: u16 = 7000;
const PAYLOAD: usize = 64;
const AGENT_READY: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct SmokeArgs {
    /// UDP datagrams to send from the client to the node.
    #[arg(long, default_value_t = 10)]
    pub datagrams: usize,
    /// Keep the namespaces and the agent up after the traffic, until Enter is pressed, to poke at
    /// them with `ip netns exec`, `bpftool` and friends.
    #[arg(long)]
    pub hold: bool,
}

impl Default for SmokeArgs {
    fn default() -> Self {
        Self { datagrams: 10, hold: false }
    }
}

pub fn run(args: &SmokeArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    step("build skiff-agent (and its eBPF object)", || {
        step::run(cargo().args(["build", "--locked", "--package", "skiff-agent"]))
    })?;
    let topo = step("create namespaces skiff-smoke-client ── veth ── skiff-smoke-node", || {
        skiff_tests::ensure_bpffs()?;
        // Fresh counters for every run.
        if Path::new(PIN_DIR).exists() {
            std::fs::remove_dir_all(PIN_DIR).with_context(|| format!("removing {PIN_DIR}"))?;
        }
        Ok(PairTopology::with_names(CLIENT_NS, NODE_NS)?)
    })?;
    let result =
        step("start skiff-agent in skiff-smoke-node", || start_agent(&topo)).and_then(|mut agent| {
            let result = exchange(&topo, args.datagrams).and_then(|()| {
                if args.hold {
                    hold();
                }
                report(&mut agent, args.datagrams)
            });
            if result.is_err() {
                let _ = agent.child.kill();
                let _ = agent.child.wait();
            }
            result
        });
    let _ = std::fs::remove_dir_all(PIN_DIR);
    result
}

struct Agent {
    child: Child,
    stdout: mpsc::Receiver<String>,
}

fn start_agent(topo: &PairTopology) -> anyhow::Result<Agent> {
    let binary = step::target_dir().join("debug").join("skiff-agent");
    let iface = PairTopology::IFACE;
    // nsenter switches only the network namespace, so the agent pins into the host's bpffs.
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", topo.server.path().display()))
        .arg(&binary)
        .args(["datapath", "--xdp", iface, "--tc-egress", iface, "--pin-dir", PIN_DIR])
        .args(["--datapath-log-level", "debug"])
        .env("RUST_LOG", "info,skiff_ebpf=debug")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let out = child.stdout.take().context("agent stdout")?;
    let (tx, stdout) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut agent = Agent { child, stdout };
    match agent.stdout.recv_timeout(AGENT_READY) {
        Ok(line) if line.starts_with("attached") => {
            eprintln!("    {line}");
            Ok(agent)
        }
        other => {
            let _ = agent.child.kill();
            let _ = agent.child.wait();
            bail!("skiff-agent did not report `attached` within {AGENT_READY:?} (got {other:?})")
        }
    }
}

fn exchange(topo: &PairTopology, datagrams: usize) -> anyhow::Result<()> {
    step(&format!("send {datagrams} UDP datagrams client → node:{ECHO_PORT} and back"), || {
        let echo = traffic::UdpServer::echo(&topo.server, SocketAddrV4::new(topo.server_ip, ECHO_PORT))?;
        let answered =
            traffic::udp_ping(&topo.client, echo.addr(), datagrams, PAYLOAD, Duration::from_secs(2))?;
        echo.stop();
        if answered != datagrams {
            bail!("only {answered} of {datagrams} echoes came back");
        }
        Ok(())
    })
}

fn hold() {
    eprintln!(
        "\nThe lab is up. Try:\n  \
         ip netns exec {NODE_NS} ip link show {iface}\n  \
         bpftool prog show name skiff_xdp\n  \
         bpftool map dump pinned {PIN_DIR}/SKIFF_COUNTERS\n\
         Press Enter to tear it down.",
        iface = PairTopology::IFACE
    );
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn report(agent: &mut Agent, datagrams: usize) -> anyhow::Result<()> {
    let table = step("stop skiff-agent and read its counters", || {
        kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGTERM).context("SIGTERM to skiff-agent")?;
        let status = agent.child.wait().context("waiting for skiff-agent")?;
        if !status.success() {
            bail!("skiff-agent exited with {status}");
        }
        // Ends when the reader thread hits EOF, so nothing the agent printed is lost.
        Ok(agent.stdout.iter().collect::<Vec<_>>())
    })?;
    println!("\n{}", table.join("\n"));
    check_counts(&table, datagrams)?;
    println!(
        "\nEvery request entered the node through XDP and every echo left through TC egress.\n\
         Next: `cargo xtask lab smoke --hold` to keep it up and inspect it, `skiff-agent datapath --help`,\n\
         and README.md's \"Debugging the packet path\"."
    );
    Ok(())
}

/// The agent's table has a row per hook: `<hook> <packets> <bytes>`.
fn check_counts(table: &[String], datagrams: usize) -> anyhow::Result<()> {
    let frame = PairTopology::UDP_FRAME_OVERHEAD + PAYLOAD;
    for hook in [Hook::Xdp.as_str(), Hook::TcEgress.as_str()] {
        let row = table.iter().find(|l| l.split_whitespace().next() == Some(hook));
        let fields: Vec<usize> = row
            .map(|r| r.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect())
            .unwrap_or_default();
        if fields != [datagrams, datagrams * frame] {
            bail!(
                "{hook}: expected {datagrams} packets / {} bytes, agent reported {row:?}",
                datagrams * frame
            );
        }
    }
    Ok(())
}
