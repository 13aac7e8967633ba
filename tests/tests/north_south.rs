//! North-south and host traffic through the eBPF datapath, with real packets: the benchmark's
//! two-node cluster (node namespaces on a bridge, pods wired by skiff-cni, skiff-echo in them, an
//! outside client), both nodes programmed by the real service proxy. From outside: a NodePort
//! reaches pods on both nodes; `externalTrafficPolicy: Local` keeps the client's address and the
//! health-check node port says which node can serve; `loadBalancerSourceRanges` keep other
//! clients out. From the node itself (its own processes: a thread in its namespace): ClusterIPs and
//! NodePorts, on the node address and on localhost, through the socket-level load balancer, the
//! other node's NodePort through that node's uplink program, and a
//! connected UDP socket whose backend leaves is ended, not left sending into nothing.

// The benchmark's cluster is shared so both exercise the same wiring; this
// suite uses only part of it (no sink, no bench constants).
#[allow(dead_code, reason = "shared with the dataplane benchmark, which uses the rest")]
#[path = "../benches/dataplane/cluster.rs"]
mod cluster;

use std::{
    collections::BTreeSet,
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use cluster::{Cluster, EXT_IP, NODE_IPS, vip};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use serde_json::{Value, json};
use skiff_agent::proxy::mode::ProxyMode;
use skiff_common::DropReason;
use skiff_tests::NetNs;

const TIMEOUT: Duration = Duration::from_millis(1500);
const LB_RANGED: Ipv4Addr = Ipv4Addr::new(10, 120, 0, 240);
const LB_OPEN: Ipv4Addr = Ipv4Addr::new(10, 120, 0, 241);
const HEALTH_PORT: u16 = 30900;

/// The workspace's binaries (skiff-cni, skiff-echo), beside this test's own directory.
fn bins() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_owned();
    for bin in ["skiff-cni", "skiff-echo"] {
        assert!(
            dir.join(bin).exists(),
            "{} has no {bin}: build the workspace (cargo build) first",
            dir.display()
        );
    }
    dir
}

/// A Service `name` (ClusterIP `vip(i)`) with one port 80 → 8080 (or `proto`/`target`), its
/// EndpointSlice over `endpoints`, and `spec` merged in.
fn svc(
    i: u32,
    spec: Value,
    target: u16,
    proto: &str,
    endpoints: &[(Ipv4Addr, &str)],
) -> (Service, EndpointSlice) {
    let name = format!("s{i}");
    let mut body = json!({
        "metadata": {"name": name, "namespace": "test"},
        "spec": {"clusterIP": vip(i).to_string(), "ports": [{"name": "p", "port": 80, "targetPort": target, "protocol": proto}]},
    });
    for (k, v) in spec.as_object().into_iter().flatten() {
        match k.as_str() {
            "nodePort" => body["spec"]["ports"][0]["nodePort"] = v.clone(),
            "status" => {}
            _ => body["spec"][k] = v.clone(),
        }
    }
    if let Some(status) = spec.get("status") {
        body["status"] = status.clone();
    }
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip.to_string()], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    let slice = json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "test", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": target, "protocol": proto}],
        "endpoints": eps,
    });
    (serde_json::from_value(body).expect("service"), serde_json::from_value(slice).expect("slice"))
}

/// The test's Services, as both nodes' proxies see them.
fn services(c: &Cluster, dns_endpoints: &[(Ipv4Addr, &str)]) -> Vec<(Service, EndpointSlice)> {
    let b1 = (c.local[0].ip, "node1");
    let r1 = (c.remote[0].ip, "node2");
    vec![
        svc(0, json!({"type": "NodePort", "nodePort": 30080}), 8080, "TCP", &[b1, r1]),
        svc(
            1,
            json!({"type": "LoadBalancer", "nodePort": 30081, "externalTrafficPolicy": "Local", "healthCheckNodePort": HEALTH_PORT}),
            8080,
            "TCP",
            &[b1],
        ),
        svc(
            2,
            json!({"type": "LoadBalancer", "nodePort": 30082, "loadBalancerSourceRanges": ["198.51.100.0/24"],
                   "status": {"loadBalancer": {"ingress": [{"ip": LB_RANGED.to_string()}]}}}),
            8080,
            "TCP",
            &[b1],
        ),
        svc(
            3,
            json!({"type": "LoadBalancer", "nodePort": 30083, "loadBalancerSourceRanges": ["10.120.0.0/24"],
                   "status": {"loadBalancer": {"ingress": [{"ip": LB_OPEN.to_string()}]}}}),
            8080,
            "TCP",
            &[b1],
        ),
        svc(4, json!({}), 7001, "UDP", dns_endpoints),
    ]
}

fn cluster() -> Cluster {
    let mut c = Cluster::new(ProxyMode::Ebpf, &bins());
    // Node 1 answers ARP for the load-balancer addresses, as an L2 announcer would make it.
    for lb in [LB_RANGED, LB_OPEN] {
        c.nodes[0].ip(&["addr", "add", &format!("{lb}/32"), "dev", "lo"]).expect("LB address");
    }
    let dns = [(c.local[1].ip, "node1"), (c.local[2].ip, "node1")];
    let svcs = services(&c, &dns);
    c.program(0, &svcs);
    c.program(1, &svcs);
    c
}

/// `GET /` from inside `ns`: skiff-echo's JSON (pod, node, client), or the error.
fn get(ns: &NetNs, to: SocketAddrV4) -> std::io::Result<Value> {
    ns.run(move || {
        let mut conn = TcpStream::connect_timeout(&to.into(), TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.write_all(format!("GET / HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        serde_json::from_str(body.trim()).map_err(std::io::Error::other)
    })
    .expect("namespace thread")
}

fn pods_answering(ns: &NetNs, to: SocketAddrV4, requests: usize) -> BTreeSet<String> {
    (0..requests)
        .map(|_| get(ns, to).unwrap_or_else(|e| panic!("GET {to}: {e}")))
        .map(|v| v["pod"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn a_nodeport_reaches_pods_on_both_nodes_from_outside() {
    let c = cluster();
    for node in NODE_IPS {
        let pods = pods_answering(&c.ext, SocketAddrV4::new(node, 30080), 40);
        assert_eq!(pods, BTreeSet::from(["b1".to_owned(), "r1".to_owned()]), "answers through {node}:30080");
    }
}

#[test]
fn external_policy_local_keeps_the_client_address_and_health_checks_say_where() {
    let c = cluster();
    let answer = get(&c.ext, SocketAddrV4::new(NODE_IPS[0], 30081)).expect("through node 1");
    let client = answer["client"].as_str().unwrap_or_default();
    assert!(client.starts_with(&format!("{EXT_IP}:")), "the backend saw {client}, not the client");
    let err = get(&c.ext, SocketAddrV4::new(NODE_IPS[1], 30081)).expect_err("node 2 has no local endpoint");
    assert!(matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock), "{err}");

    let health = |node: Ipv4Addr| -> (u16, Value) {
        c.ext
            .run(move || {
                let mut conn = TcpStream::connect_timeout(&SocketAddr::from((node, HEALTH_PORT)), TIMEOUT)?;
                conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n")?;
                let mut text = String::new();
                conn.read_to_string(&mut text)?;
                let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
                Ok::<_, std::io::Error>((status, serde_json::from_str(body).unwrap_or(Value::Null)))
            })
            .expect("ext thread")
            .expect("health check")
    };
    let (status, body) = health(NODE_IPS[0]);
    assert_eq!((status, body["localEndpoints"].as_u64()), (200, Some(1)), "node 1: {body}");
    assert_eq!(body["service"]["name"], "s1");
    let (status, body) = health(NODE_IPS[1]);
    assert_eq!((status, body["localEndpoints"].as_u64()), (503, Some(0)), "node 2: {body}");
}

#[test]
fn load_balancer_source_ranges_let_only_their_clients_in() {
    let mut c = cluster();
    let denied = |c: &mut Cluster| c.datapath(0).lb().drops(DropReason::SourceRangeDenied).expect("drops");
    let before = denied(&mut c);
    let err = get(&c.ext, SocketAddrV4::new(LB_RANGED, 80)).expect_err("a client outside the ranges got in");
    assert!(matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock), "{err}");
    assert!(denied(&mut c) > before, "the drop was not counted as SourceRangeDenied");
    let answer = get(&c.ext, SocketAddrV4::new(LB_OPEN, 80)).expect("a client inside the ranges");
    assert_eq!(answer["pod"], "b1");
}

#[test]
fn the_nodes_own_processes_reach_clusterips_and_nodeports() {
    let c = cluster();
    let node = &c.nodes[0];
    let web = SocketAddrV4::new(vip(0), 80);
    // The other node's NodePort is not translated here: its uplink program serves it.
    let nodeports = [NODE_IPS[0], Ipv4Addr::LOCALHOST, NODE_IPS[1]].map(|ip| SocketAddrV4::new(ip, 30080));
    for to in std::iter::once(web).chain(nodeports) {
        let pods = pods_answering(node, to, 20);
        assert!(!pods.is_empty() && pods.iter().all(|p| p == "b1" || p == "r1"), "{to}: {pods:?}");
    }
    // The socket shows the Service it asked for, not the backend it was sent to.
    let peer = node
        .run(move || TcpStream::connect_timeout(&web.into(), TIMEOUT).and_then(|s| s.peer_addr()))
        .expect("node thread")
        .expect("connect");
    assert_eq!(peer, SocketAddr::from(web));
    // UDP without connect(): each datagram goes to a backend, the answer comes from the Service.
    let dns = SocketAddrV4::new(vip(4), 80);
    let (from, echoed) = node
        .run(move || -> std::io::Result<(SocketAddr, Vec<u8>)> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            socket.send_to(b"who is there", dns)?;
            let mut buf = [0u8; 64];
            let (n, from) = socket.recv_from(&mut buf)?;
            Ok((from, buf[..n].to_vec()))
        })
        .expect("node thread")
        .expect("UDP answer");
    assert_eq!((from, echoed.as_slice()), (SocketAddr::from(dns), &b"who is there"[..]));
}

#[test]
fn a_connected_udp_socket_whose_backend_leaves_is_ended() {
    let mut c = cluster();
    let dns = SocketAddrV4::new(vip(4), 80);
    let socket = c.nodes[0]
        .run(move || -> std::io::Result<UdpSocket> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.connect(dns)?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            socket.send(b"ping")?;
            let mut buf = [0u8; 16];
            let n = socket.recv(&mut buf)?;
            assert_eq!(&buf[..n], b"ping");
            Ok(socket)
        })
        .expect("node thread")
        .expect("first exchange");
    // Both endpoints leave the Service; a third pod takes over.
    let svcs = services(&c, &[(c.local[3].ip, "node1")]);
    c.program(0, &svcs);
    // The kernel ended the socket: its pending error is ECONNABORTED, and it is no longer
    // connected, so sending into nothing is impossible too.
    let mut buf = [0u8; 16];
    let started = std::time::Instant::now();
    let err = socket.recv(&mut buf).expect_err("the old socket kept going");
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");
    assert!(started.elapsed() < TIMEOUT / 2, "the error came only after a timeout");
    let err = socket.send(b"ping").expect_err("the ended socket still sends");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EDESTADDRREQ), "{err}");
    // A new socket (what a client does next) reaches the new endpoint.
    let answer = c.nodes[0]
        .run(move || -> std::io::Result<Vec<u8>> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.connect(dns)?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            socket.send(b"again")?;
            let n = socket.recv(&mut buf)?;
            Ok(buf[..n].to_vec())
        })
        .expect("node thread")
        .expect("new socket");
    assert_eq!(answer, b"again");
}
