//! `skiff svc`, `ct`, `trace` and `explain` against the real chain: skiff-control in-process
//! holding Services and EndpointSlices, the agent's service proxy watching them and programming
//! a loaded datapath attached to pod veths, the agent's status socket, and the `skiff` binary
//! run as an operator would, inside the node's namespace, while pods send real traffic.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddrV4},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Arc,
    time::Duration,
};

use aya::maps::{Array, HashMap, Map, MapData};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};
use skiff_agent::{
    datapath::{Datapath, DatapathConfig, LbCapacity, LogLevel},
    inspect::{
        self,
        trace::{Filter, Session},
    },
    proxy::{ProxyContext, ServiceProxy, watch},
    status::{self, Status},
};
use skiff_common::{
    lb::{LbConfig, ServiceKey, ServiceValue},
    names,
    trace::{TraceConfig, Verdict},
};
use skiff_control::local::LocalServer;
use skiff_tests::{
    NetNs, PinDir, StarTopology, poll_until,
    traffic::{TcpClient, TcpIdentity, UdpServer, udp_ask},
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn skiff_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe.parent().and_then(|d| d.parent()).expect("target dir").join("skiff");
    assert!(bin.exists(), "{} is missing: build the workspace first", bin.display());
    bin
}

/// `skiff args…` run inside `ns` (its network namespace only, so bpffs stays visible).
fn skiff_in(ns: &NetNs, args: &[&str]) -> Command {
    let file = std::fs::File::open(ns.path()).expect("open netns");
    let mut cmd = Command::new(skiff_bin());
    cmd.args(args);
    // SAFETY: only setns(2) runs between fork and exec; `file` outlives the spawn (moved in).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// A node namespace with a client pod and two backend pods (TCP :8080 and UDP :5353 servers),
/// the datapath attached to every pod veth, skiff-control, and the agent's status socket.
struct Node {
    topo: StarTopology,
    pins: PinDir,
    /// Lent to the proxy thread by [`Node::with_proxy`].
    dp: Option<Datapath>,
    rt: tokio::runtime::Runtime,
    _server: LocalServer,
    client: Client,
    status: Arc<Status>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    _servers: (Vec<TcpIdentity>, Vec<UdpServer>),
}

impl Node {
    fn new(label: &str) -> Node {
        let topo = StarTopology::new(label, 3).expect("topology");
        let pins = PinDir::new(label).expect("pin dir");
        let lb = LbCapacity {
            config: LbConfig { maglev_m: 251, ..LbConfig::DEFAULT },
            max_services: 32,
            max_backends: 64,
            max_ct: 4096,
            max_affinity: 256,
            max_frags: 64,
        };
        let config = DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, lb };
        let mut dp = Datapath::load(&config).expect("load datapath");
        let ifaces: Vec<String> = topo.pods.iter().map(|p| p.node_iface.clone()).collect();
        topo.node
            .run(|| ifaces.iter().try_for_each(|iface| dp.attach_lb(iface)))
            .expect("enter node")
            .expect("attach");
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for (i, pod) in topo.pods.iter().enumerate().skip(1) {
            let name = format!("b{i}");
            tcp.push(
                TcpIdentity::start(&pod.ns, SocketAddrV4::new(pod.ip, 8080), &name).expect("tcp server"),
            );
            udp.push(
                UdpServer::identity(&pod.ns, SocketAddrV4::new(pod.ip, 5353), &name).expect("udp server"),
            );
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio");
        let dir = tempfile::tempdir().expect("tmp");
        let (server, client, status, socket) = rt.block_on(async {
            let server = LocalServer::start(dir.path(), 1000).await.expect("skiff-control");
            let client = server.client().await.expect("admin client");
            let status = Status::new("obs", "ebpf", Some(pins.path().to_owned()), Some(client.clone()));
            // The proxy works in the node namespace, as an agent run with --node-netns does.
            status.set_node_netns(Some(topo.node.path()));
            let socket = dir.path().join("agent.sock");
            let listener = status::bind_unix(&socket).expect("status socket");
            tokio::spawn(status::serve_unix(listener, status.clone(), std::future::pending()));
            (server, client, status, socket)
        });
        Node {
            topo,
            pins,
            dp: Some(dp),
            rt,
            _server: server,
            client,
            status,
            socket,
            _dir: dir,
            _servers: (tcp, udp),
        }
    }

    fn backend_ips(&self) -> Vec<Ipv4Addr> {
        self.topo.pods[1..].iter().map(|p| p.ip).collect()
    }

    /// Creates Service `name` (ports as `[(name, port, targetPort, protocol)]`) and its
    /// EndpointSlice over `endpoints`; returns its ClusterIP.
    fn service(&self, name: &str, ports: &[(&str, u16, u16, &str)], endpoints: &[Ipv4Addr]) -> Ipv4Addr {
        let svc_ports: Vec<Value> = ports
            .iter()
            .map(|(n, p, t, proto)| json!({"name": n, "port": p, "targetPort": t, "protocol": proto}))
            .collect();
        let slice_ports: Vec<Value> =
            ports.iter().map(|(n, _, t, proto)| json!({"name": n, "port": t, "protocol": proto})).collect();
        let eps: Vec<Value> = endpoints
            .iter()
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
            .collect();
        self.rt.block_on(async {
            let services: Api<k8s_openapi::api::core::v1::Service> =
                Api::namespaced(self.client.clone(), "default");
            let svc = services
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "metadata": {"name": name},
                        "spec": {"ports": svc_ports},
                    }))
                    .expect("service"),
                )
                .await
                .expect("create service");
            let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
                Api::namespaced(self.client.clone(), "default");
            slices
                .create(&PostParams::default(), &serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "ports": slice_ports,
                    "endpoints": eps,
                })).expect("slice"))
                .await
                .expect("create slice");
            svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP").parse().expect("IPv4")
        })
    }

    /// Runs `body` while the service proxy watches the API and programs the datapath, as the
    /// agent's does (on its own thread and runtime), once it has applied every one of `services`.
    fn with_proxy<R>(&mut self, services: &[&str], body: impl FnOnce(&Node) -> R) -> R {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let kubeconfig = self._server.kubeconfig.clone();
        let status = self.status.clone();
        let mut dp = self.dp.take().expect("datapath");
        let dataplane = dp.dataplane();
        let node: &Node = self;
        let out = std::thread::scope(|s| {
            let proxy = s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
                rt.block_on(async move {
                    let raw = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig");
                    let config = kube::Config::from_custom_kubeconfig(raw, &Default::default())
                        .await
                        .expect("admin config");
                    let client = Client::try_from(config).expect("client");
                    let ctx = ProxyContext { node_name: "obs".into(), ..ProxyContext::default() };
                    let mut feeder =
                        watch::Feeder::new(ServiceProxy::new(ctx, dataplane)).with_status(status);
                    tokio::select! {
                        result = watch::run(client, &mut feeder) => panic!("the proxy stopped: {result:?}"),
                        _ = stopped => {}
                    }
                });
            });
            // Stops the proxy however the body ends (a panic too), so the scope can join it.
            let _stop = StopOnDrop(Some(stop));
            poll_until("the proxy to apply the Services", Duration::from_secs(20), || {
                let state = node.status.state();
                let applied =
                    |svc: &&str| state.frontends.iter().any(|f| f.service == format!("default/{svc}"));
                (state.ready && services.iter().all(applied)).then_some(())
            })
            .expect("proxy ready");
            let out = body(node);
            drop(_stop);
            proxy.join().expect("proxy thread");
            out
        });
        self.dp = Some(dp);
        out
    }

    fn pin_dir(&self) -> String {
        self.pins.path().display().to_string()
    }

    fn socket(&self) -> String {
        self.socket.display().to_string()
    }

    /// `skiff <args> --pin-dir … --agent-socket …` in the node namespace.
    fn skiff(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let (pins, socket) = (self.pin_dir(), self.socket());
        all.extend(["--pin-dir", &pins, "--agent-socket", &socket]);
        skiff_in(&self.topo.node, &all).output().expect("run skiff")
    }

    fn skiff_ok(&self, args: &[&str]) -> String {
        let out = self.skiff(args);
        assert!(out.status.success(), "skiff {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn client_pod(&self) -> &skiff_tests::Pod {
        &self.topo.pods[0]
    }
}

struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

fn json_rows(text: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(text).expect("json").as_array().expect("a list").clone()
}

fn frontend<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter().find(|r| r["frontend"] == name).unwrap_or_else(|| panic!("no {name} in {rows:?}"))
}

#[test]
fn svc_list_and_ct_agree_with_the_proxy_and_diff_reports_injected_drift() {
    let mut node = Node::new("obs-svc");
    let backends = node.backend_ips();
    let web = node.service("web", &[("http", 80, 8080, "TCP")], &backends);
    let empty = node.service("empty", &[("http", 80, 8080, "TCP")], &[]);
    let not_yet =
        inspect::agent::get(&node.socket, "/readyz").expect_err("not ready before the first listing");
    assert!(not_yet.to_string().contains("503"), "{not_yet}");
    node.with_proxy(&["web", "empty"], |node| {
        // Six connections through the ClusterIP, each held open so conntrack shows it.
        let clients: Vec<TcpClient> = (0..6)
            .map(|_| {
                TcpClient::connect(&node.client_pod().ns, SocketAddrV4::new(web, 80), TIMEOUT)
                    .expect("connect")
            })
            .collect();

        let rows = json_rows(&node.skiff_ok(&["svc", "list", "-o", "json"]));
        let w = frontend(&rows, &format!("{web}:80/TCP"));
        assert_eq!(w["service"], "default/web");
        assert_eq!(w["kind"], "ClusterIP");
        let mut got: Vec<String> = w["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| b["address"].as_str().expect("a string").to_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = backends.iter().map(|ip| format!("{ip}:8080/TCP")).collect();
        want.sort();
        assert_eq!(got, want, "the backends the proxy programmed");
        let slots: u64 = w["backends"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|b| b["slots"].as_u64().expect("a number"))
            .sum();
        assert_eq!(slots, 251, "the Maglev row is split between them");
        let new_flows: u64 = w["backends"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|b| b["traffic"]["new_flows"].as_u64().expect("a number"))
            .sum();
        assert_eq!(new_flows, 6, "one new flow per connection: {w}");
        assert_eq!(w["traffic"]["new_flows"], 6);
        assert!(w["traffic"]["packets"].as_u64().expect("a number") >= 12, "SYN and ACK at least: {w}");
        let e = frontend(&rows, &format!("{empty}:80/TCP"));
        assert_eq!(
            (e["service"].as_str(), e["backends"].as_array().map(Vec::len)),
            (Some("default/empty"), Some(0))
        );
        let table = node.skiff_ok(&["svc", "list", "--svc", "default/empty"]);
        assert!(table.contains("(none: rejected)") && !table.contains("default/web"), "{table}");

        // The agent's metrics say the same, and it is ready.
        inspect::agent::get(&node.socket, "/readyz").expect("ready");
        let metrics = String::from_utf8(inspect::agent::get(&node.socket, "/metrics").expect("metrics"))
            .expect("utf-8");
        let sample = |name: &str, labels: &str| -> Option<f64> {
            metrics
                .lines()
                .find(|l| l.starts_with(name) && l.contains(labels))?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        };
        let web_labels = format!("frontend=\"{web}:80/TCP\",namespace=\"default\",service=\"web\"");
        assert_eq!(sample("skiff_service_new_connections_total{", &web_labels), Some(6.0), "{metrics}");
        assert_eq!(sample("skiff_drops_total{", "reason=\"NoEndpoints\""), Some(0.0), "{metrics}");
        assert_eq!(sample("skiff_conntrack_entries", ""), Some(6.0), "{metrics}");
        assert_eq!(sample("skiff_ready", ""), Some(1.0));
        assert!(sample("skiff_reconcile_duration_seconds_count", "").is_some_and(|n| n >= 1.0), "{metrics}");
        assert!(metrics.contains("skiff_map_capacity{map=\"SKIFF_CT\"} 4096"), "{metrics}");

        // Conntrack holds the six flows; flushing one pod's flows leaves the others.
        let flows = json_rows(&node.skiff_ok(&["ct", "list", "--svc", "default/web", "-o", "json"]));
        assert_eq!(flows.len(), 6, "{flows:?}");
        assert!(
            flows.iter().all(|f| f["frontend"] == format!("{web}:80") && f["state"] == "established"),
            "{flows:?}"
        );
        let on_first = flows.iter().filter(|f| f["backend"] == format!("{}:8080/TCP", backends[0])).count();
        let flushed: Value = serde_json::from_str(&node.skiff_ok(&[
            "ct",
            "flush",
            "--pod",
            &backends[0].to_string(),
            "-o",
            "json",
        ]))
        .expect("json");
        assert_eq!(flushed[0]["conntrack"].as_u64(), Some(on_first as u64), "{flushed}");
        let left = json_rows(&node.skiff_ok(&["ct", "list", "-o", "json"]));
        assert_eq!(left.len(), 6 - on_first);
        let refused = node.skiff(&["ct", "flush"]);
        assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--all"));
        drop(clients);

        // In sync: exit 0.
        let out = node.skiff(&["svc", "diff"]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Drift injected behind the agent's back: web's entry removed, a stray frontend added.
        let mut svc_map: HashMap<MapData, ServiceKey, ServiceValue> = HashMap::try_from(Map::HashMap(
            MapData::from_pin(node.pins.path().join(names::MAP_SERVICES)).expect("pin"),
        ))
        .expect("SKIFF_SVC");
        let web_key = ServiceKey::new(u32::from_ne_bytes(web.octets()), 80u16.to_be(), 6);
        svc_map.remove(&web_key).expect("remove web");
        let stray = ServiceKey::new(u32::from_ne_bytes([10, 99, 0, 1]), 443u16.to_be(), 6);
        svc_map.insert(stray, ServiceValue { id: 30, ..ServiceValue::default() }, 0).expect("stray");
        let out = node.skiff(&["svc", "diff", "-o", "json"]);
        assert_eq!(out.status.code(), Some(1), "drift exits 1");
        let drift = json_rows(&String::from_utf8_lossy(&out.stdout));
        let kinds: Vec<(String, String)> = drift
            .iter()
            .map(|d| {
                (
                    d["frontend"].as_str().expect("a string").to_owned(),
                    d["kind"].as_str().expect("a string").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (format!("{web}:80/TCP"), "missing".to_owned()),
                ("10.99.0.1:443/TCP".to_owned(), "unexpected".to_owned())
            ],
            "{drift:?}"
        );
    });
}

/// The trace switch as the datapath sees it.
fn trace_config(pins: &Path) -> TraceConfig {
    let map: Array<MapData, TraceConfig> =
        Array::try_from(Map::Array(MapData::from_pin(pins.join(names::MAP_TRACE_CFG)).expect("pin")))
            .expect("array");
    map.get(&0, 0).expect("read")
}

/// `skiff trace …` in the background; returns its JSON events once it has printed `count` or
/// `act` has run and it stops by itself.
fn trace_while(node: &Node, args: &[&str], act: impl FnOnce()) -> Vec<Value> {
    let (pins, socket) = (node.pin_dir(), node.socket());
    let mut all =
        vec!["trace", "-o", "json", "--timeout", "15", "--pin-dir", &pins, "--agent-socket", &socket];
    all.extend_from_slice(args);
    let mut child = skiff_in(&node.topo.node, &all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skiff trace");
    let pid = child.id();
    poll_until("the trace session to start", Duration::from_secs(10), || {
        let cfg = trace_config(node.pins.path());
        (cfg.enabled != 0 && cfg.owner_pid == pid).then_some(())
    })
    .expect("session on");
    act();
    let stdout = child.stdout.take().expect("stdout");
    let lines: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("json line"))
        .collect();
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(status.success(), "skiff trace: {status}: {stderr}");
    assert!(!stderr.contains("no Service names"), "{stderr}");
    assert_eq!(trace_config(node.pins.path()), TraceConfig::default(), "tracing left on after the session");
    lines
}

#[test]
fn trace_shows_translations_and_drop_reasons_and_filters_in_the_kernel() {
    let mut node = Node::new("obs-trace");
    let backends = node.backend_ips();
    let web = node.service("web", &[("http", 80, 8080, "TCP")], &backends);
    let dns = node.service("dns", &[("dns", 53, 5353, "UDP")], &backends);
    let empty = node.service("empty", &[("http", 80, 8080, "TCP")], &[]);
    node.with_proxy(&["web", "dns", "empty"], |node| {
        let client = node.client_pod();
        // A connection's first packet: original and translated tuples, the backend, the Service.
        let mut greeted = String::new();
        let events =
            trace_while(node, &["--dst", &web.to_string(), "--proto", "tcp", "--count", "1"], || {
                greeted = TcpClient::connect(&client.ns, SocketAddrV4::new(web, 80), TIMEOUT)
                    .expect("connect")
                    .identity;
            });
        let syn = &events[0];
        assert_eq!(
            (syn["hook"].as_str(), syn["verdict"].as_str(), syn["ct"].as_str()),
            (Some("tc-pod"), Some("forward"), Some("new"))
        );
        assert_eq!(syn["interface"], client.node_iface.as_str());
        assert_eq!(syn["service"], "default/web", "{syn}");
        let original = syn["original"].as_str().expect("a string");
        assert!(
            original.starts_with(&format!("{}:", client.ip)) && original.ends_with(&format!("-> {web}:80")),
            "{syn}"
        );
        let answered = &node.topo.pods[greeted.trim_start_matches('b').parse::<usize>().expect("b<i>")];
        let translated = syn["translated"].as_str().expect("a string");
        assert!(
            translated.ends_with(&format!("-> {}:8080", answered.ip)),
            "the backend that answered: {syn}"
        );
        assert_eq!(syn["backend"], format!("{}:8080/TCP", answered.ip));

        // Drops only: web traffic is filtered out in the kernel, the empty Service's reject shows.
        let events = trace_while(node, &["--drops-only", "--count", "1"], || {
            TcpClient::connect(&client.ns, SocketAddrV4::new(web, 80), TIMEOUT).expect("connect");
            let refused = TcpClient::connect(&client.ns, SocketAddrV4::new(empty, 80), TIMEOUT);
            assert!(refused.is_err(), "a Service without endpoints refuses");
        });
        let reject = &events[0];
        assert_eq!(
            (reject["verdict"].as_str(), reject["reason"].as_str()),
            (Some("reject"), Some("NoEndpoints")),
            "{reject}"
        );
        assert_eq!(reject["service"], "default/empty");
        assert!(reject["reason_detail"].as_str().expect("a string").contains("no endpoints"));

        // --svc follows both directions of the Service's flows, and nothing else.
        let events = trace_while(node, &["--svc", "default/dns", "--count", "2"], || {
            TcpClient::connect(&client.ns, SocketAddrV4::new(web, 80), TIMEOUT).expect("connect");
            udp_ask(&client.ns, None, SocketAddrV4::new(dns, 53), TIMEOUT).expect("ns").expect("dns answers");
        });
        let verdicts: Vec<&str> = events.iter().map(|e| e["verdict"].as_str().expect("a string")).collect();
        assert_eq!(verdicts, ["forward", "reply"], "{events:?}");
        assert!(
            events[1]["translated"]
                .as_str()
                .expect("a string")
                .starts_with(&format!("{dns}:53 -> {}:", client.ip))
        );
    });
}

#[test]
fn a_filtered_session_writes_nothing_for_other_traffic() {
    let mut node = Node::new("obs-kfilter");
    let backends = node.backend_ips();
    let web = node.service("web", &[("http", 80, 8080, "TCP")], &backends);
    let dns = node.service("dns", &[("dns", 53, 5353, "UDP")], &backends);
    node.with_proxy(&["web", "dns"], |node| {
        let client = node.client_pod();
        let filter = Filter { port: Some(53), ..Filter::default() };
        let mut session = Session::start(node.pins.path(), &filter).expect("session");
        // Web traffic: the kernel filter keeps it out of the ring buffer entirely.
        for _ in 0..5 {
            TcpClient::connect(&client.ns, SocketAddrV4::new(web, 80), TIMEOUT).expect("connect");
        }
        assert!(
            session.next(Duration::from_millis(200)).expect("poll").is_none(),
            "web events reached the ring"
        );
        udp_ask(&client.ns, None, SocketAddrV4::new(dns, 53), TIMEOUT).expect("ns").expect("dns answers");
        let event = session.next(Duration::from_secs(2)).expect("poll").expect("the DNS query");
        assert_eq!(event.verdict, Verdict::Forward as u8);
        assert_eq!(u16::from_be(event.orig.dport_be), 53);
        drop(session);
        assert_eq!(trace_config(node.pins.path()).enabled, 0, "off once the session ends");

        // explain agrees with where conntrack put a real flow.
        let c = TcpClient::connect(&client.ns, SocketAddrV4::new(web, 80), TIMEOUT).expect("connect");
        let answered = &node.topo.pods[c.identity.trim_start_matches('b').parse::<usize>().expect("b<i>")];
        let flows = json_rows(&node.skiff_ok(&["ct", "list", "--pod", &client.ip.to_string(), "-o", "json"]));
        // The earlier connections are closing; the open one is the established flow.
        let open: Vec<&Value> = flows.iter().filter(|f| f["state"] == "established").collect();
        assert_eq!(open.len(), 1, "{flows:?}");
        let port: &str = open[0]["client"].as_str().expect("a string").rsplit(':').next().expect("a part");
        let out: Value = serde_json::from_str(&node.skiff_ok(&[
            "explain",
            &client.ip.to_string(),
            &format!("{web}:80"),
            "--sport",
            port,
            "-o",
            "json",
        ]))
        .expect("json");
        assert_eq!(out[0]["backend"], format!("{}:8080/TCP", answered.ip), "{out}");
        let fresh: Value = serde_json::from_str(&node.skiff_ok(&[
            "explain",
            &client.ip.to_string(),
            "default/web",
            "--sport",
            "50001",
            "-o",
            "json",
        ]))
        .expect("json");
        let steps: Vec<&str> = fresh[0]["steps"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|s| s["step"].as_str().expect("a string"))
            .collect();
        assert_eq!(steps, ["program", "frontend", "conntrack", "maglev", "route"], "{fresh}");
        assert!(
            fresh[0]["steps"][0]["finding"].as_str().expect("a string").contains(&client.node_iface),
            "{fresh}"
        );
        drop(c);
    });
}

#[test]
fn tracing_off_at_load_leaves_the_trace_path_out_of_the_program() {
    let size = |tracing: u32| {
        let pins = PinDir::new(&format!("obs-size-{tracing}")).expect("pin dir");
        let lb = LbCapacity { config: LbConfig { tracing, ..LbConfig::DEFAULT }, ..LbCapacity::default() };
        let config = DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, lb };
        let _dp = Datapath::load(&config).expect("load datapath");
        let info =
            aya::programs::ProgramInfo::from_pin(pins.path().join(names::PIN_PROGS_DIR).join(names::PROG_LB))
                .expect("pinned skiff_lb");
        info.size_translated().expect("translated size")
    };
    let (without, with) = (size(0), size(1));
    // The verifier drops the branch behind the constant: what "compiled out" means in the
    // trace benchmark.
    assert!(without < with, "tracing=0 left {without} bytes, tracing=1 has {with}");
}
