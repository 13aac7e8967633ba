//! The benchmark's cluster, built the same way for each mode: a switch namespace (a bridge)
//! joining an external client namespace and two node namespaces, whose pods are wired by the real
//! skiff-cni; skiff-echo in every backend pod; and the mode's dataplane, made afresh for each
//! Service count.
//!
//! ```text
//!  ext 10.120.0.200 ──┐
//!  node1 10.120.0.11 ─┼── bridge (switch ns)      node1 pods: client, b1…b4 (10.244.1.0/24)
//!  node2 10.120.0.12 ─┘                           node2 pods: r1, r2       (10.244.2.0/24)
//! ```
//!
//! Every veth end facing the bridge is a wire for XDP (`skiff_tests::wire`), as in the lab.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use serde_json::{Value, json};
use skiff_agent::{
    datapath::{Datapath, DatapathConfig, LbCapacity, LogLevel, socklb},
    proxy::{
        ProxyContext, ServiceProxy, ServiceRef,
        desired::service_frontends,
        health::HealthChecks,
        iptables::{self, Iptables, IptablesDataplane, RuleConfig, Variant},
        mode::{self, ModeArgs, Proxy, ProxyMode},
    },
};
use skiff_common::lb::LbConfig;
use skiff_tests::{NetNs, PinDir, wire};

pub const EXT_IP: Ipv4Addr = Ipv4Addr::new(10, 120, 0, 200);
pub const NODE_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 120, 0, 11), Ipv4Addr::new(10, 120, 0, 12)];
const POD_CIDRS: [&str; 2] = ["10.244.1.0/24", "10.244.2.0/24"];
/// skiff-echo's ports.
pub const ECHO_PORT: u16 = 7000;
pub const SINK_PORT: u16 = 9000;
pub const IPERF_PORT: u16 = 5201;
/// NodePorts of the remote-backend Service: TCP echo and the UDP sink.
pub const NODE_PORT_TCP: u16 = 30700;
pub const NODE_PORT_UDP: u16 = 30701;
/// Maglev row size for the benchmark: prime, and small enough that 100k frontend slots fit
/// (100k × 251 × 8 bytes ≈ 200 MB; the default 1021 would take 800 MB).
const MAGLEV_M: u32 = 251;

/// A pod: its namespace and address.
pub struct PodNs {
    pub ns: NetNs,
    pub ip: Ipv4Addr,
}

/// A process in a pod (skiff-echo, iperf3), killed on drop.
pub struct PodProcess(Child);

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program args` started inside `ns`, with `env`.
pub fn spawn_in(ns: &NetNs, program: &Path, args: &[&str], env: &[(&str, &str)]) -> PodProcess {
    let file = std::fs::File::open(ns.path()).expect("pod namespace");
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setns is one system call, safe between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    PodProcess(cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", program.display())))
}

pub struct Cluster {
    pub mode: ProxyMode,
    bins: PathBuf,
    /// Holds the bridge; the other namespaces' veths go with it.
    pub switch: NetNs,
    pub ext: NetNs,
    pub nodes: [NetNs; 2],
    pins: [PinDir; 2],
    /// The pass programs on the switch's ports sw-ext, sw-n1 and sw-n2 (`None` while another
    /// program stands in).
    pub wires: Vec<Option<wire::XdpPass>>,
    pub client: PodNs,
    /// b1…b4 on node 1, r1, r2 on node 2.
    pub local: Vec<PodNs>,
    pub remote: Vec<PodNs>,
    _servers: Vec<PodProcess>,
    cni_dirs: tempfile::TempDir,
    proxies: [Option<Proxy>; 2],
    health: [HealthChecks; 2],
    /// Runs the health-check listeners.
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    pub fn new(mode: ProxyMode, bins: &Path) -> Cluster {
        let label = match mode {
            ProxyMode::Ebpf => "bench-ebpf",
            ProxyMode::Iptables => "bench-ipt",
        };
        let switch = NetNs::new(&format!("{label}-sw")).expect("switch");
        switch.ip(&["link", "add", "br0", "type", "bridge"]).expect("bridge");
        switch.ip(&["link", "set", "br0", "up"]).expect("bridge up");
        let ext = NetNs::new(&format!("{label}-ext")).expect("ext");
        let nodes = [
            NetNs::new(&format!("{label}-n1")).expect("node 1"),
            NetNs::new(&format!("{label}-n2")).expect("node 2"),
        ];
        let mut wires = Vec::new();
        for (ns, ip, port) in
            [(&ext, EXT_IP, "sw-ext"), (&nodes[0], NODE_IPS[0], "sw-n1"), (&nodes[1], NODE_IPS[1], "sw-n2")]
        {
            for key in [
                "net/ipv6/conf/all/disable_ipv6",
                "net/ipv6/conf/default/disable_ipv6",
                "net/ipv4/ip_forward",
            ] {
                ns.sysctl(key, "1").expect("sysctl");
            }
            for key in ["net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"] {
                ns.sysctl(key, "0").expect("sysctl");
            }
            switch
                .ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()])
                .expect("veth");
            switch.ip(&["link", "set", port, "master", "br0", "up"]).expect("port");
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]).expect("address");
            ns.ip(&["link", "set", "eth0", "up"]).expect("up");
            wire::checksums_complete(Some(ns.name()), "eth0").expect("checksums");
            wires.push(Some(
                switch.run(|| wire::XdpPass::attach(port)).expect("switch thread").expect("pass program"),
            ));
        }
        // Each node routes the other's pods and keeps its neighbour entry resolved, as the agent
        // does (XDP can read a neighbour, never resolve one).
        for (i, node) in nodes.iter().enumerate() {
            let other = NODE_IPS[1 - i].to_string();
            node.ip(&["route", "add", POD_CIDRS[1 - i], "via", &other]).expect("route");
            node.ip(&["neigh", "replace", &other, "dev", "eth0", "managed"]).expect("managed neighbour");
        }
        // The outside reaches node 2's pods through node 1 too: plain forwarding by node 1's kernel,
        // the floor the NodePort paths are compared with.
        ext.ip(&["route", "add", POD_CIDRS[1], "via", &NODE_IPS[0].to_string()]).expect("route");
        let pins = [
            PinDir::new(&format!("{label}-n1")).expect("pins"),
            PinDir::new(&format!("{label}-n2")).expect("pins"),
        ];
        let cni_dirs = tempfile::tempdir().expect("cni dirs");
        let mut cluster = Cluster {
            mode,
            bins: bins.to_owned(),
            switch,
            ext,
            nodes,
            pins,
            wires,
            client: PodNs {
                ns: NetNs::new(&format!("{label}-client")).expect("pod"),
                ip: Ipv4Addr::UNSPECIFIED,
            },
            local: Vec::new(),
            remote: Vec::new(),
            _servers: Vec::new(),
            cni_dirs,
            proxies: [None, None],
            health: [HealthChecks::new(Ipv4Addr::UNSPECIFIED), HealthChecks::new(Ipv4Addr::UNSPECIFIED)],
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime"),
        };
        // The dataplane first: in eBPF mode skiff-cni attaches the pinned load balancer to each veth.
        cluster.fresh_dataplane(0);
        cluster.fresh_dataplane(1);
        cluster.client.ip = cluster.cni_add(0, "client", &cluster.client.ns.path());
        // Tens of thousands of connect-request-close cycles in minutes: every port, and TIME_WAIT
        // ports reused, or connect() itself slows down hunting for a free port.
        for ns in [&cluster.client.ns, &cluster.ext] {
            ns.sysctl("net/ipv4/ip_local_port_range", "1024 65535").expect("port range");
            ns.sysctl("net/ipv4/tcp_tw_reuse", "1").expect("tw reuse");
        }
        for i in 1..=4 {
            let ns = NetNs::new(&format!("{label}-b{i}")).expect("pod");
            let ip = cluster.cni_add(0, &format!("b{i}"), &ns.path());
            cluster.local.push(PodNs { ns, ip });
        }
        for i in 1..=2 {
            let ns = NetNs::new(&format!("{label}-r{i}")).expect("pod");
            let ip = cluster.cni_add(1, &format!("r{i}"), &ns.path());
            cluster.remote.push(PodNs { ns, ip });
        }
        let echo = bins.join("skiff-echo");
        let mut servers = Vec::new();
        let names = ["b1", "b2", "b3", "b4", "r1", "r2"];
        for (pod, name) in cluster.local.iter().chain(&cluster.remote).zip(names) {
            let node = if name.starts_with('b') { "node1" } else { "node2" };
            let env = [("POD_NAME", name), ("NODE_NAME", node)];
            servers.push(spawn_in(
                &pod.ns,
                &echo,
                &["--tcp", "7000", "--http", "8080", "--udp", "7001"],
                &env,
            ));
        }
        servers.push(spawn_in(
            &cluster.local[0].ns,
            Path::new("iperf3"),
            &["-s", "-p", &IPERF_PORT.to_string()],
            &[],
        ));
        cluster._servers = servers;
        cluster
    }

    /// Runs skiff-cni ADD on node `n` for container `id` in `netns`; the pod's address.
    fn cni_add(&self, n: usize, id: &str, netns: &Path) -> Ipv4Addr {
        let conf = json!({
            "cniVersion": "1.1.0", "name": "bench", "type": "skiff-cni",
            "bpfPinDir": self.pins[n].path(),
            "loadBalancer": self.mode == ProxyMode::Ebpf,
            "ipam": {"subnet": POD_CIDRS[n], "dataDir": self.cni_dirs.path().join(format!("n{n}"))},
        });
        let file = std::fs::File::open(self.nodes[n].path()).expect("node namespace");
        let mut cmd = Command::new(self.bins.join("skiff-cni"));
        // SAFETY: setns is one system call, safe between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
            ])
            .env("CNI_NETNS", netns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("skiff-cni");
        child.stdin.take().expect("stdin").write_all(conf.to_string().as_bytes()).expect("config");
        let out = child.wait_with_output().expect("skiff-cni ran");
        let result: Value = serde_json::from_slice(&out.stdout).expect("CNI result");
        assert!(out.status.success(), "CNI ADD {id}: {result}");
        let addr = result["ips"][0]["address"].as_str().expect("address");
        addr.split('/').next().and_then(|a| a.parse().ok()).expect("IPv4")
    }

    fn datapath_config(&self, n: usize) -> DatapathConfig {
        let netns_cookie =
            self.nodes[n].run(socklb::netns_cookie).expect("node thread").expect("netns cookie");
        let lb = LbCapacity {
            config: LbConfig {
                maglev_m: MAGLEV_M,
                node_addr_be: u32::from_ne_bytes(NODE_IPS[n].octets()),
                netns_cookie,
                ..LbConfig::DEFAULT
            },
            // 50k ClusterIP frontends, their markers, and the NodePort/extra frontends.
            max_services: 102_400,
            max_backends: 1024,
            max_ct: 262_144,
            max_affinity: 1024,
            max_frags: 1024,
        };
        DatapathConfig { pin_dir: self.pins[n].path().to_owned(), log_level: LogLevel::Off, lb }
    }

    /// Replaces node `n`'s dataplane with an empty one of the cluster's mode (the other mode's
    /// state and the previous one's removed, as an agent starting afresh does).
    pub fn fresh_dataplane(&mut self, n: usize) {
        self.proxies[n] = None;
        let netns = self.nodes[n].path();
        let ipt = Iptables::new(Variant::System, Some(netns.clone()));
        iptables::cleanup(&ipt).expect("iptables cleanup");
        let proxy = match self.mode {
            ProxyMode::Ebpf => {
                // Through the iptables mode first: that unpins everything (a new, empty datapath).
                let wipe = ModeArgs {
                    proxy_mode: ProxyMode::Iptables,
                    iptables: Variant::System,
                    cluster_cidr: None,
                };
                drop(mode::prepare(&wipe, &self.datapath_config(n), Some(&netns), vec![]).expect("wipe"));
                let args =
                    ModeArgs { proxy_mode: ProxyMode::Ebpf, iptables: Variant::System, cluster_cidr: None };
                let mut proxy =
                    mode::prepare(&args, &self.datapath_config(n), Some(&netns), vec![NODE_IPS[n]])
                        .expect("eBPF dataplane");
                if let Proxy::Ebpf(dp) = &mut proxy {
                    self.nodes[n].run(|| dp.attach_uplink("eth0")).expect("node thread").expect("uplink");
                    // The node's own processes (a test thread in its namespace) get the
                    // socket-level load balancer, as an agent's node does.
                    let cgroup = socklb::root_cgroup().expect("a cgroup v2 hierarchy");
                    dp.attach_socket_lb(&cgroup).expect("socket-level load balancer");
                    dp.end_udp_sockets_in(Some(netns.clone()));
                }
                proxy
            }
            ProxyMode::Iptables => {
                let rules = RuleConfig {
                    nodeport_addresses: vec![NODE_IPS[n]],
                    cluster_cidr: Some("10.244.0.0/16".into()),
                };
                Proxy::Iptables(IptablesDataplane::new(ipt, rules))
            }
        };
        self.proxies[n] = Some(proxy);
    }

    /// Node `n`'s service proxy applies `services` (each with its slices) and commits: what an
    /// agent does with its first listing.
    pub fn program(&mut self, n: usize, services: &[(Service, EndpointSlice)]) {
        let node_name = format!("node{}", n + 1);
        let ctx = ProxyContext { node_name, proxy_name: None, nodeport_addresses: vec![NODE_IPS[n]] };
        let proxy = self.proxies[n].as_mut().expect("dataplane");
        let mut sp = ServiceProxy::new(ctx.clone(), proxy.dataplane());
        for (svc, slice) in services {
            sp.sync_service(svc, &[slice]).expect("sync");
        }
        sp.commit().expect("commit");
        // Health-check node ports, bound in the node's namespace as an agent there binds them.
        let health = self.health[n].clone();
        let _rt = self.runtime.enter();
        let handle = self.runtime.handle().clone();
        self.nodes[n]
            .run(move || {
                let _rt = handle.enter();
                for (svc, slice) in services {
                    let desired = service_frontends(svc, &[slice], &ctx);
                    let sref = ServiceRef {
                        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
                        name: svc.metadata.name.clone().unwrap_or_default(),
                    };
                    health.set(&sref, desired.health);
                }
            })
            .expect("node thread");
    }

    /// Node `n`'s datapath (eBPF mode).
    #[allow(
        dead_code,
        reason = "tests/tests/north_south.rs reads drop counters through it; the benchmark does not"
    )]
    pub fn datapath(&mut self, n: usize) -> &mut Datapath {
        match self.proxies[n].as_mut() {
            Some(Proxy::Ebpf(dp)) => dp,
            _ => panic!("node {n} runs no eBPF datapath"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in 0..2 {
            self.proxies[n] = None;
            if self.mode == ProxyMode::Ebpf {
                let wipe = ModeArgs {
                    proxy_mode: ProxyMode::Iptables,
                    iptables: Variant::System,
                    cluster_cidr: None,
                };
                let netns = self.nodes[n].path();
                let _ = mode::prepare(&wipe, &self.datapath_config(n), Some(&netns), vec![]);
            }
        }
    }
}

/// The ClusterIP of Service `i` (10.96.0.1 up).
pub fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i)
}

/// Service `i` with one port (`port` → `target`, `proto`) and its slice over `endpoints` (with
/// their nodes); `node_port` makes it a NodePort Service.
pub fn service(
    i: u32,
    port: u16,
    target: u16,
    proto: &str,
    endpoints: &[(Ipv4Addr, &str)],
    node_port: Option<u16>,
) -> (Service, EndpointSlice) {
    let name = format!("s{i}");
    let mut port_spec = json!({"name": "p", "port": port, "targetPort": target, "protocol": proto});
    if let Some(np) = node_port {
        port_spec["nodePort"] = json!(np);
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
                 "clusterIP": vip(i).to_string(), "ports": [port_spec]},
    }))
    .expect("service");
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip.to_string()], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "bench", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": target, "protocol": proto}],
        "endpoints": eps,
    }))
    .expect("slice");
    (svc, slice)
}

/// How long programming may take before the benchmark gives up on a mode at some N.
pub const PROGRAMMING_LIMIT: Duration = Duration::from_secs(600);
