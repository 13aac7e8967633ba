//! `cargo xtask lab down`: removes everything `up` made, in an order that lets each component
//! clean up after itself first — pods deleted through the API while the agents run (sandboxes,
//! CNI DEL, pod namespaces, cgroups), then the agents, the containerds' tasks and the daemons,
//! skiff-control — and then sweeps by name whatever is still there (a killed lab). Finally it
//! checks that nothing is left and fails, naming each leftover, if anything is.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;

use super::{
    kube, procs,
    state::{self, LabState},
    topology::{self, LAB_DIR, NAME_PREFIX, NodeSpec, PIN_ROOT, VETH_PREFIX},
};
use crate::step::{output, step};

const POD_DELETE_TIMEOUT: Duration = Duration::from_secs(45);
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub fn run() -> anyhow::Result<()> {
    skiff_tests::require_root()?;
    let started = Instant::now();
    teardown()?;
    eprintln!("\nThe lab is gone ({:.1}s); nothing of it is left.", started.elapsed().as_secs_f64());
    Ok(())
}

/// Removes the lab, whatever state it is in, then verifies nothing is left.
pub fn teardown() -> anyhow::Result<()> {
    let lab = state::load().unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; sweeping by name");
        None
    });
    let lab = lab.unwrap_or_default();
    let nodes = node_specs(&lab);
    let control_alive = lab.control_pid.is_some_and(|pid| procs::alive(pid, LAB_DIR));
    // Pods go through the API only while agents run to tear them down.
    let agents_alive =
        lab.node_procs.iter().any(|p| p.agent_pid.is_some_and(|pid| procs::alive(pid, LAB_DIR)));
    // Before the agents remove their records: the pods whose namespaces must be gone at the end.
    let pod_uids = pod_uids(&nodes);
    let runtime_files: Vec<PathBuf> = nodes.iter().flat_map(runtime_files).collect();
    if control_alive && agents_alive {
        step("delete workloads and pods through the API (agents tear them down)", delete_pods)
            .unwrap_or_else(|e| eprintln!("    {e:#}; going on"));
    }
    step("stop the agents", || {
        for p in &lab.node_procs {
            if let Some(pid) = p.agent_pid {
                procs::stop(pid, LAB_DIR, Duration::from_secs(10));
            }
        }
        Ok(())
    })?;
    step("remove containers and stop the containerds", || {
        for node in &nodes {
            remove_tasks(node);
        }
        for p in &lab.node_procs {
            if let Some(pid) = p.containerd_pid {
                procs::stop(pid, LAB_DIR, Duration::from_secs(10));
            }
        }
        Ok(())
    })?;
    step("stop skiff-control", || {
        if let Some(pid) = lab.control_pid {
            procs::stop(pid, LAB_DIR, Duration::from_secs(10));
        }
        Ok(())
    })?;
    step("sweep: processes, cgroups, pod namespaces, mounts", || {
        for (pid, cmd) in procs::kill_stragglers() {
            eprintln!("    killed straggler {pid}: {cmd}");
        }
        kill_cgroup(Path::new(NAME_PREFIX));
        for uid in &pod_uids {
            delete_netns(&format!("skiff-{uid}"));
        }
        // Left only when a shim was killed instead of deleting its task (a crashed lab).
        for file in &runtime_files {
            let _ = std::fs::remove_dir_all(file).or_else(|_| std::fs::remove_file(file));
        }
        Ok(())
    })?;
    step("namespaces, bridge, iptables rule, pins, /run/skiff-lab", || {
        for ns in lab_netns() {
            delete_netns(&ns);
        }
        for link in host_links() {
            let _ = Command::new("ip").args(["link", "delete", &link]).stderr(Stdio::null()).status();
        }
        while Command::new("iptables")
            .args(topology::iptables_rule("-D"))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {}
        if Path::new(PIN_ROOT).exists() {
            std::fs::remove_dir_all(PIN_ROOT).unwrap_or_else(|e| eprintln!("    removing {PIN_ROOT}: {e}"));
        }
        // Kills what still mentions the dir, unmounts what is under it, removes it.
        skiff_tests::remove_daemon_dir(Path::new(LAB_DIR));
        Ok(())
    })?;
    step("check that nothing is left", || {
        let mut left = leftovers();
        left.extend(pod_uids.iter().map(|u| format!("skiff-{u}")).filter(|ns| netns_exists(ns)));
        left.extend(runtime_files.iter().filter(|f| f.exists()).map(|f| f.display().to_string()));
        if !left.is_empty() {
            bail!("the lab left these behind:\n  {}", left.join("\n  "));
        }
        Ok(())
    })
}

/// Nodes from the state file and from what exists (dirs, namespaces), for a lab whose state file
/// is missing or behind.
fn node_specs(lab: &LabState) -> Vec<NodeSpec> {
    let mut indices: Vec<u8> = lab.node_procs.iter().map(|p| p.index).collect();
    let from_names =
        lab_netns().into_iter().filter_map(|n| n.strip_prefix("skiff-lab-n")?.parse::<u8>().ok());
    let from_dirs = std::fs::read_dir(LAB_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix('n')?.parse().ok());
    indices.extend(from_names.chain(from_dirs));
    indices.sort_unstable();
    indices.dedup();
    indices.into_iter().map(|index| NodeSpec { index }).collect()
}

/// Workloads go first, orphaning their pods (so nothing replaces a deleted pod, and pods do not
/// go with their 30 s default grace through the garbage collector); then the pods, with a 1 s
/// grace (busybox `sleep` as PID 1 ignores SIGTERM).
fn delete_pods() -> anyhow::Result<()> {
    kube::run(&[
        "delete",
        "deployments,replicasets,daemonsets",
        "--all",
        "--all-namespaces",
        "--cascade=orphan",
        "--wait=true",
    ])?;
    kube::run(&["delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false"])?;
    let deadline = Instant::now() + POD_DELETE_TIMEOUT;
    loop {
        let left = kube::pods()?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} pods still there after {}s", left.len(), POD_DELETE_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Pods a node's agent has state for (`<root>/pods/<uid>`): their namespaces are `skiff-<uid>`.
fn pod_uids(nodes: &[NodeSpec]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| std::fs::read_dir(n.agent_root().join("pods")).into_iter().flatten().flatten())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// What a node's containers keep outside the lab dir: runc's state
/// (`/run/containerd/runc/<ns>/<id>`) and the shim's socket (`/run/containerd/s/<sha256 of
/// address/ns/id>`, containerd 1.6's naming), from the task bundles under the daemon's state dir.
fn runtime_files(node: &NodeSpec) -> Vec<PathBuf> {
    let tasks = node.containerd_dir().join("state/io.containerd.runtime.v2.task");
    let socket = node.containerd_socket();
    let mut files = Vec::new();
    for ns in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
        let ns = ns.file_name().to_string_lossy().into_owned();
        for id in std::fs::read_dir(tasks.join(&ns)).into_iter().flatten().flatten() {
            let id = id.file_name().to_string_lossy().into_owned();
            files.push(Path::new("/run/containerd/runc").join(&ns).join(&id));
            let key = socket.join(&ns).join(&id).display().to_string();
            if let Some(hash) = sha256_hex(&key) {
                files.push(Path::new("/run/containerd/s").join(hash));
            }
        }
    }
    files
}

fn sha256_hex(text: &str) -> Option<String> {
    use std::io::Write as _;
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).split_whitespace().next()?.to_owned())
}

/// Kills and deletes every task and container of a node's containerd (so each shim exits and
/// removes its socket), in every containerd namespace.
fn remove_tasks(node: &NodeSpec) {
    let socket = node.containerd_socket();
    if std::os::unix::net::UnixStream::connect(&socket).is_err() {
        return;
    }
    let ctr = |args: &[&str]| {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&socket).args(args);
        output(&mut cmd).unwrap_or_default()
    };
    for ns in ctr(&["namespaces", "list", "-q"]).lines() {
        for task in ctr(&["-n", ns, "tasks", "list", "-q"]).lines() {
            ctr(&["-n", ns, "tasks", "delete", "--force", task]);
        }
        for container in ctr(&["-n", ns, "containers", "list", "-q"]).lines() {
            ctr(&["-n", ns, "containers", "delete", container]);
        }
    }
}

/// SIGKILLs every process in the cgroup `rel` (all hierarchies) and removes it, deepest first.
fn kill_cgroup(rel: &Path) {
    for tree in cgroup_trees() {
        let top = tree.join(rel);
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for dir in &dirs {
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn cgroup_trees() -> Vec<PathBuf> {
    let mut trees = vec![PathBuf::from(CGROUP_ROOT)];
    if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
        trees.extend(entries.flatten().map(|e| e.path()).filter(|p| p.join("cgroup.procs").exists()));
    }
    trees
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_owned());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn delete_netns(name: &str) {
    if netns_exists(name) {
        let _ = Command::new("ip").args(["netns", "delete", name]).stderr(Stdio::null()).status();
    }
}

/// Network namespaces named like the lab's.
fn lab_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(NAME_PREFIX))
        .collect()
}

/// Host links named like the lab's (the bridge, the host ends of the veths).
fn host_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(NAME_PREFIX) || n.starts_with(VETH_PREFIX))
        .collect()
}

/// Everything of a lab that exists now, named: what `down` must leave empty and `up` refuses
/// to start over. (Pod namespaces, `skiff-<uid>`, are told apart from other runs' only by the
/// uids the lab's agents recorded; `teardown` checks those.)
pub fn leftovers() -> Vec<String> {
    let mut left: Vec<String> = lab_netns().into_iter().map(|n| format!("netns {n}")).collect();
    left.extend(host_links().into_iter().map(|l| format!("link {l}")));
    if Path::new(PIN_ROOT).exists() {
        left.push(format!("pin dir {PIN_ROOT}"));
    }
    if Path::new(LAB_DIR).exists() {
        left.push(format!("dir {LAB_DIR}"));
    }
    left.extend(procs::mentioning_lab().into_iter().map(|(pid, cmd)| format!("process {pid}: {cmd}")));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    left.extend(
        mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(LAB_DIR) || m.starts_with(PIN_ROOT))
            .map(|m| format!("mount {m}")),
    );
    for tree in cgroup_trees() {
        let dir = tree.join(NAME_PREFIX);
        if dir.exists() {
            left.push(format!("cgroup {}", dir.display()));
        }
    }
    let rules = output(Command::new("iptables").args(["-S", "FORWARD"])).unwrap_or_default();
    left.extend(
        rules.lines().filter(|r| r.contains(topology::IPTABLES_COMMENT)).map(|r| format!("iptables {r}")),
    );
    left
}
