//! A node for CNI tests: a network namespace standing for the host, with skiff's datapath loaded
//! into a private pin dir, and the plugin run inside it exactly as a runtime runs it (environment,
//! configuration on stdin, result on stdout).
#![allow(dead_code)] // each test binary uses a different part

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::{Value, json};
use skiff_agent::datapath::{Datapath, DatapathConfig};
use skiff_cni::names;
use skiff_tests::{NetNs, PinDir};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_skiff-cni");

/// What one plugin call returned.
#[derive(Debug)]
pub struct Call {
    pub success: bool,
    pub output: Value,
}

impl Call {
    pub fn code(&self) -> u64 {
        self.output["code"].as_u64().unwrap_or(0)
    }
}

/// Starts `plugin` in the namespace at `netns` with `CNI_COMMAND=command` and `env`, writing
/// `stdin` to it.
pub fn spawn_plugin(netns: &Path, plugin: &str, command: &str, env: &[(&str, &str)], stdin: &Value) -> Child {
    spawn_raw(netns, plugin, command, env, stdin.to_string().as_bytes())
}

fn spawn_raw(netns: &Path, plugin: &str, command: &str, env: &[(&str, &str)], stdin: &[u8]) -> Child {
    use std::os::unix::process::CommandExt as _;
    // The child enters only the network namespace, between fork and exec, as a runtime that
    // lives in the node's namespace would run it (`ip netns exec` would also remount /sys,
    // hiding bpffs).
    let ns = std::fs::File::open(netns).expect("node namespace");
    let mut cmd = Command::new(plugin);
    // SAFETY: setns is a single system call, safe between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plugin");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write config");
    child
}

/// Runs `plugin` to completion (see [`spawn_plugin`]).
pub fn run_plugin(netns: &Path, plugin: &str, command: &str, env: &[(&str, &str)], stdin: &Value) -> Call {
    run_plugin_raw(netns, plugin, command, env, stdin.to_string().as_bytes())
}

/// Runs `plugin` `command` for the attachment (`container`, `ifname`) in the namespace at `netns`
/// (no `CNI_NETNS` when `None`), from the node namespace at `node_ns` (see [`spawn_plugin`]).
pub fn run_attachment(
    node_ns: &Path,
    plugin: &str,
    command: &str,
    container: &str,
    netns: Option<&Path>,
    ifname: &str,
    stdin: &Value,
) -> Call {
    let netns = netns.map(|p| p.display().to_string());
    let mut env = vec![("CNI_CONTAINERID", container), ("CNI_IFNAME", ifname)];
    if let Some(netns) = &netns {
        env.push(("CNI_NETNS", netns));
    }
    run_plugin(node_ns, plugin, command, &env, stdin)
}

/// Runs `plugin` with raw bytes on stdin.
pub fn run_plugin_raw(netns: &Path, plugin: &str, command: &str, env: &[(&str, &str)], stdin: &[u8]) -> Call {
    let out = spawn_raw(netns, plugin, command, env, stdin).wait_with_output().expect("plugin ran");
    let output = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{plugin} {command} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    };
    Call { success: out.status.success(), output }
}

pub struct Node {
    pub ns: NetNs,
    pub pins: PinDir,
    pub data: tempfile::TempDir,
    pub subnet: String,
    /// The node's own address (on its loopback), the source of node → pod traffic.
    pub ip: Ipv4Addr,
    dp: Option<Datapath>,
}

impl Node {
    /// A node with pod CIDR `subnet` and address `ip`, datapath loaded.
    pub fn new(label: &str, subnet: &str, ip: Ipv4Addr) -> Node {
        let ns = NetNs::new(label).expect("node namespace");
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]).expect("node address");
        ns.sysctl("net/ipv4/ip_forward", "1").expect("forwarding");
        let pins = PinDir::new(label).expect("pin dir");
        let config = DatapathConfig { pin_dir: pins.path().to_owned(), ..DatapathConfig::default() };
        let dp = Datapath::load(&config).expect("datapath");
        let data = tempfile::tempdir().expect("ipam dir");
        Node { ns, pins, data, subnet: subnet.to_owned(), ip, dp: Some(dp) }
    }

    /// A node whose datapath was never loaded (nothing pinned).
    pub fn without_datapath(label: &str, subnet: &str) -> Node {
        let ns = NetNs::new(label).expect("node namespace");
        let pins = PinDir::new(label).expect("pin dir");
        let data = tempfile::tempdir().expect("ipam dir");
        Node { ns, pins, data, subnet: subnet.to_owned(), ip: Ipv4Addr::LOCALHOST, dp: None }
    }

    /// The network configuration for cniVersion `version`.
    pub fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "skiff",
            "type": "skiff-cni",
            "mtu": 1400,
            "bpfPinDir": self.pins.path(),
            "ipam": {"subnet": self.subnet, "dataDir": self.data.path()},
            "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]},
        })
    }

    /// Runs `plugin` (skiff-cni or a reference plugin) in the node namespace.
    pub fn exec(&self, plugin: &str, command: &str, env: &[(&str, &str)], stdin: &Value) -> Call {
        run_plugin(&self.ns.path(), plugin, command, env, stdin)
    }

    /// skiff-cni `command` for (container, ifname) in `netns`.
    pub fn cni(
        &self,
        command: &str,
        container: &str,
        netns: Option<&Path>,
        ifname: &str,
        stdin: &Value,
    ) -> Call {
        run_attachment(&self.ns.path(), PLUGIN, command, container, netns, ifname, stdin)
    }

    /// The pod's address in an ADD result.
    pub fn pod_ip(result: &Value) -> Ipv4Addr {
        result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.strip_suffix("/32"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no /32 address in {result}"))
    }

    /// Host-side veths skiff-cni made here.
    pub fn veths(&self) -> Vec<String> {
        let out = self.ns.ip(&["-o", "link", "show"]).expect("links");
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with(names::HOST_PREFIX))
            .collect()
    }

    /// Addresses allocated in the pool.
    pub fn allocations(&self) -> Vec<PathBuf> {
        let dir = self.data.path().join("skiff");
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.parse::<Ipv4Addr>().is_ok())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Pinned datapath links.
    pub fn pinned_links(&self) -> Vec<String> {
        std::fs::read_dir(self.pins.path().join(skiff_common::names::PIN_LINKS_DIR))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Routes to pods (`/32`s in the node's main table).
    pub fn pod_routes(&self) -> Vec<String> {
        let out = self.ns.ip(&["route", "show"]).expect("routes");
        let dev = format!("dev {}", names::HOST_PREFIX);
        out.lines().filter(|l| l.contains(&dev)).map(str::to_owned).collect()
    }

    /// Asserts nothing of any attachment is left on this node.
    pub fn assert_clean(&self) {
        assert!(self.veths().is_empty(), "veths left: {:?}", self.veths());
        assert!(self.pod_routes().is_empty(), "routes left: {:?}", self.pod_routes());
        assert!(self.allocations().is_empty(), "allocations left: {:?}", self.allocations());
        assert!(self.pinned_links().is_empty(), "pinned links left: {:?}", self.pinned_links());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The datapath first: its links and maps go before the namespace and pin dir.
        self.dp.take();
    }
}
