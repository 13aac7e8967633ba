//! The ClusterIP datapath with real sockets: one client pod and three backend pods around a node
//! namespace, skiff_lb on every pod veth's node end, real TCP and UDP servers in the backends.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use skiff_agent::{
    datapath::{Datapath, DatapathConfig, LbCapacity, LogLevel},
    proxy::{BackendAddr, Dataplane, Frontend, FrontendKey, Protocol, ServiceRef},
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

struct Cluster {
    topo: StarTopology,
    pins: PinDir,
    dp: Option<Datapath>,
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
    }
}

impl Cluster {
    /// Pod 0 is the client, pods 1..=3 the backends (TCP :8080 and UDP :5353, named b1..b3).
    fn new(label: &str) -> Cluster {
        let topo = StarTopology::new(label, 1 + BACKENDS).expect("topology");
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
        let mut cluster = Cluster { topo, pins, dp: None, _servers: (tcp, udp) };
        cluster.start_agent();
        cluster
    }

    /// What the service proxy applies once it has listed Services and EndpointSlices.
    fn program(&mut self) {
        let web = self.backends(8080, Protocol::Tcp);
        let dns = self.backends(5353, Protocol::Udp);
        let dataplane = self.dp().dataplane();
        dataplane.upsert(key(WEB, Protocol::Tcp), &frontend("web", &web, false)).expect("web");
        dataplane.upsert(key(DNS, Protocol::Udp), &frontend("dns", &dns, false)).expect("dns");
        dataplane.upsert(key(EMPTY, Protocol::Tcp), &frontend("empty", &[], false)).expect("empty");
        dataplane.upsert(key(STICKY, Protocol::Tcp), &frontend("sticky", &web, true)).expect("sticky");
        dataplane.sweep_unclaimed().expect("sweep");
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

    /// What an agent does at start: load (adopting pinned maps), attach to every pod veth, apply
    /// the listed Services.
    fn start_agent(&mut self) {
        let mut dp = Datapath::load(&self.config()).expect("load datapath");
        let ifaces: Vec<String> = self.topo.pods.iter().map(|p| p.node_iface.clone()).collect();
        self.topo
            .node
            .run(|| ifaces.iter().try_for_each(|iface| dp.attach_lb(iface)))
            .expect("enter node")
            .expect("attach");
        self.dp = Some(dp);
        self.program();
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

    fn stop_agent(&mut self) {
        self.dp = None;
    }

    fn dp(&mut self) -> &mut Datapath {
        self.dp.as_mut().expect("agent running")
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

#[test]
fn tcp_and_udp_connections_reach_every_backend_about_evenly() {
    let cluster = Cluster::new("spread");
    let conns: Vec<TcpClient> = (0..240).map(|_| cluster.connect(WEB)).collect();
    let tcp = tally(conns.iter().map(|c| c.identity.as_str()));
    assert_eq!(tcp.len(), BACKENDS, "TCP reached {tcp:?}");
    // 80 expected each; Maglev over ephemeral ports keeps every backend well inside 50..110.
    assert!(tcp.values().all(|n| (50..=110).contains(n)), "TCP spread {tcp:?}");

    let answers: Vec<String> = (0..90)
        .map(|_| udp_ask(&cluster.client().ns, None, DNS, TIMEOUT).expect("netns").expect("UDP answer"))
        .collect();
    let udp = tally(answers.iter().map(String::as_str));
    assert_eq!(udp.len(), BACKENDS, "UDP reached {udp:?}");
    assert!(udp.values().all(|n| (15..=50).contains(n)), "UDP spread {udp:?}");
}

#[test]
fn session_affinity_sends_a_client_to_one_backend() {
    let cluster = Cluster::new("sticky");
    let seen = tally(
        (0..30).map(|_| cluster.connect(STICKY).identity).collect::<Vec<_>>().iter().map(String::as_str),
    );
    assert_eq!(seen.len(), 1, "affinity broken: {seen:?}");
}

#[test]
fn removing_a_backend_ends_its_flows_and_leaves_the_others_alone() {
    let mut cluster = Cluster::new("remove");
    let mut conns: Vec<TcpClient> = (0..24).map(|_| cluster.connect(WEB)).collect();
    let victim = "b2";
    assert!(conns.iter().any(|c| c.identity == victim), "no connection landed on {victim}");
    // What the proxy does when b2's endpoint leaves the web Service's EndpointSlice.
    let remaining: Vec<BackendAddr> = cluster
        .backends(8080, Protocol::Tcp)
        .into_iter()
        .filter(|b| b.ip != cluster.topo.pods[2].ip)
        .collect();
    cluster
        .dp()
        .dataplane()
        .upsert(key(WEB, Protocol::Tcp), &frontend("web", &remaining, false))
        .expect("upsert");

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

#[test]
fn an_open_connection_survives_an_agent_restart() {
    let mut cluster = Cluster::new("restart");
    let mut conn = cluster.connect(WEB);
    assert_eq!(conn.echo("before").expect("echo"), "before");
    let before = cluster.lb_programs();
    let rows_before = cluster.dp().lb().services();
    cluster.stop_agent();
    // The pinned links keep the old programs running while no agent is up.
    assert_eq!(cluster.lb_programs(), before, "the load balancer went away with the agent");
    cluster.start_agent();
    let after = cluster.lb_programs();
    for ((iface, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(new.len(), 1, "{iface}: expected exactly one program, got {new:?}");
        assert_ne!(old, new, "{iface}: program was not replaced");
    }
    assert_eq!(conn.echo("after").expect("echo after restart"), "after");
    let mut rows_after = cluster.dp().lb().services();
    let mut rows_before = rows_before;
    rows_before.sort_by_key(|(k, _)| *k);
    rows_after.sort_by_key(|(k, _)| *k);
    assert_eq!(rows_after, rows_before, "the restarted agent moved frontends to other rows");
    // And the restarted agent still balances new connections.
    let fresh = cluster.connect(WEB);
    assert!(fresh.identity.starts_with('b'));
}

#[test]
fn a_service_without_endpoints_is_refused_at_once() {
    let cluster = Cluster::new("refuse");
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

#[test]
fn a_pod_reaching_itself_through_its_service_works() {
    let mut cluster = Cluster::new("hairpin");
    // Backend b1 asks the DNS Service from a port whose flow Maglev sends back to b1 itself.
    let me = cluster.topo.pods[1].ip;
    let be = |ip: Ipv4Addr| u32::from_ne_bytes(ip.octets());
    let lb = cluster.dp().lb();
    let svc = lb.service(&ServiceKey::new(be(*DNS.ip()), DNS.port().to_be(), 17)).expect("dns frontend");
    let row = lb.maglev_row(svc.id).expect("row");
    let port = (20000u16..30000)
        .find(|p| {
            let h = flow_hash(be(me), be(*DNS.ip()), p.to_be(), DNS.port().to_be(), 17);
            lb.backend(row[(h % 251) as usize]).is_some_and(|b| b.addr_be == be(me))
        })
        .expect("a self-landing port");
    let answer = poll_until("hairpin answer", TIMEOUT, || {
        udp_ask(&cluster.topo.pods[1].ns, Some(SocketAddrV4::new(me, port)), DNS, TIMEOUT).ok()?.ok()
    })
    .expect("hairpin");
    assert_eq!(answer, "b1");
}
