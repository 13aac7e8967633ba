//! The Service datapath with real sockets, one suite run against both backends: one client pod
//! and three backend pods around a node namespace, real TCP and UDP servers in the backends, and
//! the service proxy's frontends applied by the eBPF dataplane (skiff_lb on every pod veth's node
//! end) or by the iptables one (kube-proxy's rules in the node's nat and filter tables). Each test
//! exists once per backend: `ebpf::…` and `iptables::…`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use skiff_agent::{
    datapath::{Datapath, DatapathConfig, LbCapacity, LogLevel},
    proxy::{
        BackendAddr, Dataplane, Frontend, FrontendKey, Protocol, ServiceRef,
        iptables::{Iptables, IptablesDataplane, RuleConfig, Variant},
    },
};
use skiff_common::lb::{LbConfig, ServiceKey, flow_hash};
use skiff_tests::{
    PinDir, StarTopology, poll_until,
    traffic::{TcpClient, TcpIdentity, UdpServer, udp_ask},
};

const WEB: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 10), 80);
const DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 10), 53);
const EMPTY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 20), 80);
const STICKY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 30), 80);
const TIMEOUT: Duration = Duration::from_secs(3);
const BACKENDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ebpf,
    Iptables,
}

/// The agent's dataplane in one mode.
enum Agent {
    Ebpf(Box<Datapath>),
    Iptables(IptablesDataplane),
}

impl Agent {
    fn dataplane(&mut self) -> &mut dyn Dataplane {
        match self {
            Agent::Ebpf(dp) => dp.dataplane(),
            Agent::Iptables(ipt) => ipt,
        }
    }
}

struct Cluster {
    mode: Mode,
    topo: StarTopology,
    pins: PinDir,
    agent: Option<Agent>,
    _servers: (Vec<TcpIdentity>, Vec<UdpServer>),
}

fn key(frontend: SocketAddrV4, proto: Protocol) -> FrontendKey {
    FrontendKey { vip: *frontend.ip(), port: frontend.port(), proto }
}

/// A frontend over `backends`, as the service proxy would build it.
fn frontend(name: &str, backends: &[BackendAddr], affinity: bool) -> Frontend {
    Frontend {
        service: ServiceRef { namespace: "default".into(), name: name.into() },
        port_name: String::new(),
        active: backends.iter().copied().collect(),
        draining: BTreeSet::new(),
        affinity_timeout_s: affinity.then_some(10800),
        local_only: false,
        external: false,
        source_ranges: BTreeSet::new(),
    }
}

impl Cluster {
    /// Pod 0 is the client, pods 1..=3 the backends (TCP :8080 and UDP :5353, named b1..b3).
    fn new(label: &str, mode: Mode) -> Cluster {
        let topo = StarTopology::new(label, 1 + BACKENDS).expect("topology");
        if mode == Mode::Iptables {
            // A node forwards Service traffic toward its uplink until a rule takes it; the
            // filter table's REJECT for a frontend without endpoints sits on that path.
            topo.node
                .ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0-peer"])
                .expect("uplink");
            topo.node.ip(&["addr", "add", "198.18.200.1/24", "dev", "up0"]).expect("uplink address");
            for iface in ["up0", "up0-peer"] {
                topo.node.ip(&["link", "set", iface, "up"]).expect("uplink up");
            }
            topo.node.ip(&["route", "add", "default", "via", "198.18.200.254"]).expect("default route");
        }
        let pins = PinDir::new(label).expect("pin dir");
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for (i, pod) in topo.pods.iter().enumerate().skip(1) {
            tcp.push(
                TcpIdentity::start(&pod.ns, SocketAddrV4::new(pod.ip, 8080), &format!("b{i}"))
                    .expect("tcp server"),
            );
            udp.push(
                UdpServer::identity(&pod.ns, SocketAddrV4::new(pod.ip, 5353), &format!("b{i}"))
                    .expect("udp server"),
            );
        }
        let mut cluster = Cluster { mode, topo, pins, agent: None, _servers: (tcp, udp) };
        cluster.start_agent();
        cluster
    }

    /// What the service proxy applies once it has listed Services and EndpointSlices.
    fn program(&mut self) {
        let web = self.backends(8080, Protocol::Tcp);
        let dns = self.backends(5353, Protocol::Udp);
        let dataplane = self.dataplane();
        dataplane.upsert(key(WEB, Protocol::Tcp), &frontend("web", &web, false)).expect("web");
        dataplane.upsert(key(DNS, Protocol::Udp), &frontend("dns", &dns, false)).expect("dns");
        dataplane.upsert(key(EMPTY, Protocol::Tcp), &frontend("empty", &[], false)).expect("empty");
        dataplane.upsert(key(STICKY, Protocol::Tcp), &frontend("sticky", &web, true)).expect("sticky");
        dataplane.sweep_unclaimed().expect("sweep");
        dataplane.commit().expect("commit");
    }

    fn backends(&self, port: u16, proto: Protocol) -> Vec<BackendAddr> {
        self.topo.pods[1..].iter().map(|p| BackendAddr::remote(p.ip, port, proto)).collect()
    }

    fn config(&self) -> DatapathConfig {
        let lb = LbCapacity {
            config: LbConfig { maglev_m: 251, ..LbConfig::DEFAULT },
            max_services: 32,
            max_backends: 64,
            max_ct: 4096,
            max_affinity: 256,
            max_frags: 64,
        };
        DatapathConfig { pin_dir: self.pins.path().to_owned(), log_level: LogLevel::Off, lb }
    }

    /// What an agent does at start: eBPF — load (adopting pinned maps) and attach to every pod
    /// veth; iptables — adopt the chains a previous agent left; then apply the listed Services.
    fn start_agent(&mut self) {
        let agent = match self.mode {
            Mode::Ebpf => {
                let mut dp = Datapath::load(&self.config()).expect("load datapath");
                let ifaces: Vec<String> = self.topo.pods.iter().map(|p| p.node_iface.clone()).collect();
                self.topo
                    .node
                    .run(|| ifaces.iter().try_for_each(|iface| dp.attach_lb(iface)))
                    .expect("enter node")
                    .expect("attach");
                Agent::Ebpf(Box::new(dp))
            }
            Mode::Iptables => {
                let ipt = Iptables::new(Variant::System, Some(self.topo.node.path()));
                Agent::Iptables(IptablesDataplane::new(ipt, RuleConfig::default()))
            }
        };
        self.agent = Some(agent);
        self.program();
    }

    fn stop_agent(&mut self) {
        self.agent = None;
    }

    fn dataplane(&mut self) -> &mut dyn Dataplane {
        self.agent.as_mut().expect("agent running").dataplane()
    }

    fn datapath(&mut self) -> &mut Datapath {
        match self.agent.as_mut() {
            Some(Agent::Ebpf(dp)) => dp,
            _ => panic!("not the eBPF mode"),
        }
    }

    /// Program ids at tcx ingress of every pod veth.
    fn lb_programs(&self) -> Vec<(String, Vec<u32>)> {
        let ifaces: Vec<String> = self.topo.pods.iter().map(|p| p.node_iface.clone()).collect();
        self.topo
            .node
            .run(|| {
                ifaces
                    .iter()
                    .map(|iface| {
                        let (_, progs) =
                            SchedClassifier::query_tcx(iface, TcAttachType::Ingress).expect("query tcx");
                        (iface.clone(), progs.iter().map(|p| p.id()).collect())
                    })
                    .collect()
            })
            .expect("enter node")
    }

    fn client(&self) -> &skiff_tests::Pod {
        &self.topo.pods[0]
    }

    fn connect(&self, to: SocketAddrV4) -> TcpClient {
        TcpClient::connect(&self.client().ns, to, TIMEOUT).expect("connect through the ClusterIP")
    }
}

fn tally<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for n in names {
        *t.entry(n.to_owned()).or_insert(0) += 1;
    }
    t
}

fn tcp_and_udp_connections_reach_every_backend_about_evenly(mode: Mode) {
    let cluster = Cluster::new("spread", mode);
    let conns: Vec<TcpClient> = (0..240).map(|_| cluster.connect(WEB)).collect();
    let tcp = tally(conns.iter().map(|c| c.identity.as_str()));
    assert_eq!(tcp.len(), BACKENDS, "TCP reached {tcp:?}");
    // 80 expected each: Maglev over ephemeral ports, or iptables' random choice, keep every
    // backend well inside 45..115 (more than 4 standard deviations of a fair random choice).
    assert!(tcp.values().all(|n| (45..=115).contains(n)), "TCP spread {tcp:?}");

    let answers: Vec<String> = (0..90)
        .map(|_| udp_ask(&cluster.client().ns, None, DNS, TIMEOUT).expect("netns").expect("UDP answer"))
        .collect();
    let udp = tally(answers.iter().map(String::as_str));
    assert_eq!(udp.len(), BACKENDS, "UDP reached {udp:?}");
    assert!(udp.values().all(|n| (10..=55).contains(n)), "UDP spread {udp:?}");
}

fn session_affinity_sends_a_client_to_one_backend(mode: Mode) {
    let cluster = Cluster::new("sticky", mode);
    let seen = tally(
        (0..30).map(|_| cluster.connect(STICKY).identity).collect::<Vec<_>>().iter().map(String::as_str),
    );
    assert_eq!(seen.len(), 1, "affinity broken: {seen:?}");
}

fn removing_a_backend_ends_its_flows_and_leaves_the_others_alone(mode: Mode) {
    let mut cluster = Cluster::new("remove", mode);
    let mut conns: Vec<TcpClient> = (0..24).map(|_| cluster.connect(WEB)).collect();
    let victim = "b2";
    assert!(conns.iter().any(|c| c.identity == victim), "no connection landed on {victim}");
    // What the proxy does when b2's endpoint leaves the web Service's EndpointSlice.
    let remaining: Vec<BackendAddr> = cluster
        .backends(8080, Protocol::Tcp)
        .into_iter()
        .filter(|b| b.ip != cluster.topo.pods[2].ip)
        .collect();
    let dataplane = cluster.dataplane();
    dataplane.upsert(key(WEB, Protocol::Tcp), &frontend("web", &remaining, false)).expect("upsert");
    dataplane.commit().expect("commit");

    for conn in conns.iter_mut() {
        let started = Instant::now();
        let result = conn.echo("still there?");
        if conn.identity == victim {
            // Ended promptly with a reset, not left to time out.
            let err = result.expect_err("flow to a removed backend kept working");
            assert!(matches!(err.kind(), ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof), "{err}");
            assert!(started.elapsed() < TIMEOUT / 2, "took {:?} to notice", started.elapsed());
        } else {
            assert_eq!(result.expect("flow to a surviving backend"), "still there?");
        }
    }
    let after =
        tally((0..30).map(|_| cluster.connect(WEB).identity).collect::<Vec<_>>().iter().map(String::as_str));
    assert!(!after.contains_key(victim), "new connections still reach {victim}: {after:?}");
}

fn an_open_connection_survives_an_agent_restart(mode: Mode) {
    let mut cluster = Cluster::new("restart", mode);
    let mut conn = cluster.connect(WEB);
    assert_eq!(conn.echo("before").expect("echo"), "before");
    let ebpf_before =
        (mode == Mode::Ebpf).then(|| (cluster.lb_programs(), cluster.datapath().lb().services()));
    cluster.stop_agent();
    if let Some((programs, _)) = &ebpf_before {
        // The pinned links keep the old programs running while no agent is up.
        assert_eq!(&cluster.lb_programs(), programs, "the load balancer went away with the agent");
    }
    assert_eq!(conn.echo("between").expect("echo with no agent running"), "between");
    cluster.start_agent();
    assert_eq!(conn.echo("after").expect("echo after restart"), "after");
    if let Some((before, mut rows_before)) = ebpf_before {
        let after = cluster.lb_programs();
        for ((iface, old), (_, new)) in before.iter().zip(&after) {
            assert_eq!(new.len(), 1, "{iface}: expected exactly one program, got {new:?}");
            assert_ne!(old, new, "{iface}: program was not replaced");
        }
        let mut rows_after = cluster.datapath().lb().services();
        rows_before.sort_by_key(|(k, _)| *k);
        rows_after.sort_by_key(|(k, _)| *k);
        assert_eq!(rows_after, rows_before, "the restarted agent moved frontends to other rows");
    }
    // And the restarted agent still balances new connections.
    let fresh = cluster.connect(WEB);
    assert!(fresh.identity.starts_with('b'));
}

fn a_service_without_endpoints_is_refused_at_once(mode: Mode) {
    let cluster = Cluster::new("refuse", mode);
    let started = Instant::now();
    let err = TcpClient::connect(&cluster.client().ns, EMPTY, TIMEOUT).expect_err("connected to nothing");
    let kind = match &err {
        skiff_tests::Error::Io { source, .. } => source.kind(),
        other => panic!("unexpected error {other}"),
    };
    assert_eq!(kind, ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < TIMEOUT / 2, "refusal took {:?}", started.elapsed());
    let udp =
        udp_ask(&cluster.client().ns, None, SocketAddrV4::new(*EMPTY.ip(), 80), TIMEOUT).expect("netns");
    let udp_err = udp.expect_err("UDP to a ClusterIP port without a Service answered");
    assert_eq!(udp_err.kind(), ErrorKind::ConnectionRefused, "{udp_err}");
}

/// A source port of `me` whose flow to DNS goes back to `me` itself: predicted from Maglev in
/// eBPF mode; with iptables' random choice, found by asking until `me` answers.
fn a_pod_reaching_itself_through_its_service_works(mode: Mode) {
    let mut cluster = Cluster::new("hairpin", mode);
    let me = cluster.topo.pods[1].ip;
    let answer = match mode {
        Mode::Ebpf => {
            let be = |ip: Ipv4Addr| u32::from_ne_bytes(ip.octets());
            let lb = cluster.datapath().lb();
            let svc =
                lb.service(&ServiceKey::new(be(*DNS.ip()), DNS.port().to_be(), 17)).expect("dns frontend");
            let row = lb.maglev_row(svc.id).expect("row");
            let port = (20000u16..30000)
                .find(|p| {
                    let h = flow_hash(be(me), be(*DNS.ip()), p.to_be(), DNS.port().to_be(), 17);
                    lb.backend(row[(h % 251) as usize]).is_some_and(|b| b.addr_be == be(me))
                })
                .expect("a self-landing port");
            poll_until("hairpin answer", TIMEOUT, || {
                udp_ask(&cluster.topo.pods[1].ns, Some(SocketAddrV4::new(me, port)), DNS, TIMEOUT).ok()?.ok()
            })
            .expect("hairpin")
        }
        // Each ask is a new flow (new port); one in three lands on b1 itself. An answer to it
        // proves the hairpin path (a broken one would time out those asks instead).
        Mode::Iptables => (0..60)
            .filter_map(|_| {
                udp_ask(&cluster.topo.pods[1].ns, None, DNS, Duration::from_millis(500)).ok()?.ok()
            })
            .find(|a| a == "b1")
            .expect("no answer from b1 to itself in 60 asks"),
    };
    assert_eq!(answer, "b1");
}

/// Each test once per mode.
macro_rules! suite {
    ($($test:ident),+ $(,)?) => {
        mod ebpf {
            $( #[test] fn $test() { super::$test(super::Mode::Ebpf) } )+
        }
        mod iptables {
            $( #[test] fn $test() { super::$test(super::Mode::Iptables) } )+
        }
    };
}

suite!(
    tcp_and_udp_connections_reach_every_backend_about_evenly,
    session_affinity_sends_a_client_to_one_backend,
    removing_a_backend_ends_its_flows_and_leaves_the_others_alone,
    an_open_connection_survives_an_agent_restart,
    a_service_without_endpoints_is_refused_at_once,
    a_pod_reaching_itself_through_its_service_works,
);
