//! `cargo xtask lab up`: build, then bring up the bridge, skiff-control, the external namespace
//! and N nodes, and wait until every Node is Ready. A failed `up` tears down what it made.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    demo, down, kube, procs,
    state::{self, LabState, NodeProcs},
    status,
    topology::{self, LAB_DIR, NodeSpec},
};
use crate::{
    progress::{Progress, step_with_progress},
    step::{self, cargo, step},
};

/// The image every node's containerd holds (the pods' sandbox, and what lab pods run).
pub const IMAGE: &str = "skiff.local/busybox:local";
const BINARIES: &[&str] = &["skiff-agent", "skiff", "skiff-control", "skiff-cni"];
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Brings the lab up (or reports the one that is up) and returns its state.
pub fn run(nodes: u8, proxy_mode: &str) -> anyhow::Result<LabState> {
    skiff_tests::require_root().context("the lab needs root")?;
    if let Some(existing) = state::load()? {
        if existing.ready && status::all_alive(&existing) {
            eprintln!("The lab is already up with {} nodes; nothing changed.", existing.nodes);
            if existing.nodes != nodes {
                eprintln!("(asked for {nodes}: `cargo xtask lab down` first to change the size)");
            }
            status::summary(&existing)?;
            return Ok(existing);
        }
        bail!(
            "a lab from an earlier run is partly there ({}); run `cargo xtask lab down` first",
            state::path().display()
        );
    }
    let left = down::leftovers();
    if !left.is_empty() {
        bail!("lab leftovers without a state file: {left:?}; run `cargo xtask lab down` first");
    }
    crate::setup::run()?;
    step("build skiff-agent, skiff-control, skiff-cni (and the eBPF object)", || {
        step::run(cargo().args(["build", "--locked", "-p", "skiff-agent", "-p", "skiff-control"]).args([
            "-p",
            "skiff-cni",
            "--bins",
        ]))
    })?;
    let echo = crate::demo::build_echo()?;
    let started = Instant::now();
    let mut lab = LabState { nodes, proxy_mode: proxy_mode.to_owned(), ..LabState::default() };
    if let Err(err) = bring_up(&mut lab, &echo) {
        eprintln!("\nlab up failed: {err:#}");
        print_log_tails(&lab);
        eprintln!("tearing down what was created…");
        if let Err(e) = down::teardown() {
            eprintln!("teardown after the failure: {e:#}");
        }
        return Err(err);
    }
    eprintln!("\nThe cluster came up in {:.1}s; now the demo.", started.elapsed().as_secs_f64());
    // The cluster works from here on: a failing demo leaves it up for inspection.
    let specs: Vec<NodeSpec> = lab.node_procs.iter().map(NodeProcs::spec).collect();
    let proof = demo::deploy().and_then(|()| demo::prove(&specs)).and_then(|results| {
        if !demo::spans_nodes(&results) {
            bail!("every path was answered, but some only by pods of one node");
        }
        Ok(())
    });
    if let Err(err) = proof {
        eprintln!("\nthe demo failed: {err:#}");
        print_log_tails(&lab);
        eprintln!(
            "The lab stays up for inspection (`cargo xtask lab status`); `cargo xtask lab down` removes it."
        );
        return Err(err);
    }
    eprintln!(
        "\nThe lab is up ({:.1}s): ClusterIP and NodePort traffic reached pods on more than one node.",
        started.elapsed().as_secs_f64()
    );
    status::summary(&lab)?;
    Ok(lab)
}

fn bring_up(lab: &mut LabState, echo: &Path) -> anyhow::Result<()> {
    state::save(lab)?;
    step("copy the binaries to /run/skiff-lab/bin", copy_binaries)?;
    step(
        &format!("bridge {} with {}/{}", topology::BRIDGE, topology::HOST_IP, topology::PREFIX_LEN),
        || {
            skiff_tests::ensure_bpffs()?;
            topology::create_bridge()
        },
    )?;
    step(
        &format!("namespace {} ({}), the outside", topology::EXT_NS, topology::EXT_IP),
        topology::create_ext_ns,
    )?;
    let specs: Vec<NodeSpec> = (1..=lab.nodes).map(|index| NodeSpec { index }).collect();
    lab.node_procs = specs.iter().map(|s| NodeProcs { index: s.index, ..NodeProcs::default() }).collect();
    for node in &specs {
        step(&format!("namespace {} ({})", node.name(), node.ip()), || topology::create_node_ns(node))?;
    }
    state::save(lab)?;
    step(&format!("skiff-control on {}", topology::api_address()), || start_control(lab))?;
    let busybox = Path::new(LAB_DIR).join("busybox.tar");
    let echo_image = Path::new(LAB_DIR).join("echo.tar");
    step_with_progress("image archives: busybox, and the demo's echo image", |progress| {
        let skiff = topology::bin_dir().join("skiff");
        progress.set(format!("{}", busybox.display()));
        step::run(
            Command::new(&skiff).arg("image").arg("build-busybox").arg(&busybox).stdout(Stdio::null()),
        )?;
        progress.set(format!("{}", echo_image.display()));
        step::run(
            Command::new(&skiff)
                .args(["image", "build-echo"])
                .arg(&echo_image)
                .arg("--echo")
                .arg(echo)
                .stdout(Stdio::null()),
        )
    })?;
    for (i, node) in specs.iter().enumerate() {
        step_with_progress(&format!("{}: containerd, images imported", node.name()), |progress| {
            progress.set("starting containerd");
            let pid = start_containerd(node)?;
            lab.node_procs[i].containerd_pid = Some(pid);
            state::save(lab)?;
            for image in [&busybox, &echo_image] {
                progress.set(format!("importing {}", image.display()));
                step::run(
                    Command::new(topology::bin_dir().join("skiff"))
                        .args(["image", "import", "--containerd"])
                        .arg(node.containerd_socket())
                        .arg(image)
                        .stdout(Stdio::null()),
                )?;
            }
            Ok(())
        })?;
        step(&format!("{}: skiff-agent run", node.name()), || {
            lab.node_procs[i].agent_pid = Some(start_agent(node, &lab.proxy_mode)?);
            state::save(lab)
        })?;
    }
    step_with_progress(
        &format!("wait for {} Nodes Ready (at most {}s)", lab.nodes, READY_TIMEOUT.as_secs()),
        |progress| wait_ready(lab, progress),
    )?;
    step("host routes to the pod CIDRs", || {
        for procs in &lab.node_procs {
            if let Some(cidr) = &procs.pod_cidr {
                topology::route_to_pods(cidr, &procs.spec())?;
            }
        }
        Ok(())
    })?;
    lab.ready = true;
    state::save(lab)
}

fn copy_binaries() -> anyhow::Result<()> {
    let from = step::target_dir().join("debug");
    let to = topology::bin_dir();
    std::fs::create_dir_all(&to)?;
    for bin in BINARIES {
        std::fs::copy(from.join(bin), to.join(bin))
            .with_context(|| format!("copying {} to {}", from.join(bin).display(), to.display()))?;
    }
    Ok(())
}

/// The cluster PKI (kept if `up` ran before): the API server's certificate for the host's
/// bridge address and the admin's kubeconfig. Nodes get theirs by joining (`bootstrap_token`).
fn init_pki() -> anyhow::Result<()> {
    let mut cmd = Command::new(topology::bin_dir().join("skiff-control"));
    cmd.arg("init")
        .arg("--pki-dir")
        .arg(topology::pki_dir())
        .args(["--apiserver-advertise-address", &topology::HOST_IP.to_string()])
        .args(["--secure-port", &topology::API_PORT.to_string()]);
    step::run(cmd.stdout(Stdio::null()))?;
    // The admin kubeconfig where the lab has always kept it (0600, like the original).
    let admin = std::fs::read(topology::pki_dir().join("admin.conf")).context("reading admin.conf")?;
    std::fs::write(topology::kubeconfig(), admin).context("writing the lab kubeconfig")?;
    std::fs::set_permissions(topology::kubeconfig(), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .context("restricting the lab kubeconfig")
}

/// skiff-control's data dir in the lab.
pub fn control_data() -> std::path::PathBuf {
    Path::new(LAB_DIR).join("control")
}

fn start_control(lab: &mut LabState) -> anyhow::Result<()> {
    std::fs::create_dir_all(control_data())?;
    init_pki()?;
    serve_control(lab)?;
    bootstrap_token()
}

/// Starts skiff-control on the lab's data dir and waits until the API answers.
pub fn serve_control(lab: &mut LabState) -> anyhow::Result<()> {
    let data = control_data();
    let mut cmd = Command::new(topology::bin_dir().join("skiff-control"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--bind-address", &topology::api_address()])
        .args(["--cluster-cidr", topology::CLUSTER_CIDR])
        .args(["--load-balancer-pool", topology::LB_POOL])
        .arg("--pki-dir")
        .arg(topology::pki_dir());
    let pid = procs::spawn_detached(&mut cmd, &Path::new(LAB_DIR).join("control.log"))?;
    lab.control_pid = Some(pid);
    state::save(lab)?;
    poll("the API server answering", Duration::from_secs(30), || {
        if !procs::alive(pid, LAB_DIR) {
            bail!("skiff-control exited (see {LAB_DIR}/control.log)");
        }
        Ok(topology::kubeconfig().exists() && kube::run(&["get", "--raw", "/version"]).is_ok())
    })
}

/// A bootstrap token and the kubeconfig holding it, which every agent joins with: each makes its
/// own key and has the control plane sign `system:node:<name>`; no node key is copied around.
fn bootstrap_token() -> anyhow::Result<()> {
    step::run(
        Command::new(topology::bin_dir().join("skiff-control"))
            .args(["token", "create", "--ttl-hours", "24"])
            .arg("--pki-dir")
            .arg(topology::pki_dir())
            .arg("--write-bootstrap-kubeconfig")
            .arg(topology::bootstrap_kubeconfig())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// One containerd per node: its own root, state and sockets under the node's dir, so a node's
/// containers, snapshots and shims are its own and go with it.
fn start_containerd(node: &NodeSpec) -> anyhow::Result<u32> {
    let dir = node.containerd_dir();
    std::fs::create_dir_all(&dir)?;
    let d = dir.display();
    let config = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{d}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
         [debug]\n  address = \"{d}/debug.sock\"\n"
    );
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config)?;
    let pid = procs::spawn_detached(
        Command::new("containerd").arg("--config").arg(&config_path),
        &dir.join("containerd.log"),
    )?;
    let socket = node.containerd_socket();
    poll("containerd's socket", Duration::from_secs(20), || {
        if !procs::alive(pid, LAB_DIR) {
            bail!("containerd exited (see {d}/containerd.log)");
        }
        Ok(std::os::unix::net::UnixStream::connect(&socket).is_ok())
    })?;
    Ok(pid)
}

/// `skiff-agent run` inside the node's network namespace (only that one: the mount namespace, and
/// with it bpffs and /run/netns, stays the host's), its pod CIDR from skiff-control.
pub fn start_agent(node: &NodeSpec, proxy_mode: &str) -> anyhow::Result<u32> {
    let dir = node.dir();
    for sub in ["net.d", "ipam", "manifests"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::create_dir_all(node.pin_dir())?;
    let mut cmd = Command::new(topology::bin_dir().join("skiff-agent"));
    procs::in_netns(&mut cmd, &node.netns_path())?;
    cmd.arg("run")
        .arg("--bootstrap-kubeconfig")
        .arg(topology::bootstrap_kubeconfig())
        .arg("--kubeconfig")
        .arg(node.kubeconfig())
        .args(["--node-name", &node.name(), "--node-ip", &node.ip().to_string()])
        .args(["--proxy-mode", proxy_mode, "--cluster-cidr", topology::CLUSTER_CIDR])
        .arg("--containerd")
        .arg(node.containerd_socket())
        .arg("--root-dir")
        .arg(node.agent_root())
        .arg("--cni-conf-dir")
        .arg(dir.join("net.d"))
        .arg("--cni-ipam-dir")
        .arg(dir.join("ipam"))
        .arg("--cni-bin-dir")
        .arg(topology::bin_dir())
        .args(["--cni-bin-dir", "/usr/lib/cni"])
        .arg("--pin-dir")
        .arg(node.pin_dir())
        .arg("--status-socket")
        .arg(node.status_socket())
        .args(["--cgroup-root", &node.cgroup_root()])
        .arg("--pod-manifest-path")
        .arg(dir.join("manifests"))
        .env("RUST_LOG", "info");
    procs::spawn_detached(&mut cmd, &dir.join("agent.log"))
}

fn wait_ready(lab: &mut LabState, progress: &Progress) -> anyhow::Result<()> {
    poll("every Node Ready", READY_TIMEOUT, || {
        for procs in &lab.node_procs {
            if !procs.agent_pid.is_some_and(|pid| procs::alive(pid, LAB_DIR)) {
                bail!(
                    "{}'s skiff-agent exited (see {}/agent.log)",
                    procs.spec().name(),
                    procs.spec().dir().display()
                );
            }
        }
        let nodes = kube::nodes().unwrap_or_default();
        let ready: Vec<&kube::NodeView> = nodes.iter().filter(|n| n.ready && n.pod_cidr.is_some()).collect();
        progress.set(format!("{}/{} Nodes Ready", ready.len(), lab.nodes));
        for procs in &mut lab.node_procs {
            procs.pod_cidr =
                ready.iter().find(|n| n.name == procs.spec().name()).and_then(|n| n.pod_cidr.clone());
        }
        Ok(ready.len() == usize::from(lab.nodes))
    })
}

/// Calls `check` every 250 ms until it returns true; an error from it ends the wait at once.
pub fn poll(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The end of each log, so a failure explains itself before teardown removes the files.
pub fn print_log_tails(lab: &LabState) {
    let mut logs = vec![Path::new(LAB_DIR).join("control.log")];
    for procs in &lab.node_procs {
        logs.push(procs.spec().dir().join("agent.log"));
        logs.push(procs.spec().containerd_dir().join("containerd.log"));
    }
    for log in logs {
        let Ok(text) = std::fs::read_to_string(&log) else { continue };
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- last lines of {} ---", log.display());
        for line in &lines[lines.len().saturating_sub(15)..] {
            eprintln!("{line}");
        }
    }
}
