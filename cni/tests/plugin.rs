//! skiff-cni driven as a container runtime drives it, in namespaces standing for nodes and pods:
//! every spec version's ADD/CHECK/DEL with real traffic, 50 concurrent ADDs, pods on two nodes
//! talking without NAT, chaining with the reference portmap plugin, bad input, and crashes.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use common::{Call, Node};
use serde_json::{Value, json};
use skiff_tests::{
    NetNs, poll_until,
    traffic::{TcpClient, TcpIdentity, UdpServer, udp_ask, udp_ping},
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

fn ok(call: Call, what: &str) -> Value {
    assert!(call.success, "{what} failed: {}", call.output);
    call.output
}

#[test]
fn every_spec_version_adds_checks_deletes_and_carries_traffic() {
    let node = Node::new("cni-ver", "10.244.1.0/24", Ipv4Addr::new(192, 168, 50, 1));
    let node_echo = UdpServer::echo(&node.ns, SocketAddrV4::new(node.ip, 7000)).expect("node echo");
    for (i, version) in ["0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let pod = NetNs::new("cni-pod").expect("pod namespace");
        let conf = node.conf(version);
        let id = format!("ctr-{i}");
        let result = ok(node.cni("ADD", &id, Some(&pod.path()), "eth0", &conf), "ADD");
        assert_eq!(result["cniVersion"], version);
        assert_eq!(result["ips"][0]["version"].as_str(), (version == "0.4.0").then_some("4"), "{result}");
        assert_eq!(result["interfaces"][1]["sandbox"], pod.path().display().to_string());
        assert_eq!(result["interfaces"][1]["mtu"], 1400);
        assert_eq!(result["dns"]["nameservers"][0], "10.96.0.10");
        let ip = Node::pod_ip(&result);

        ok(node.cni("CHECK", &id, Some(&pod.path()), "eth0", &with_prev(&conf, &result)), "CHECK");
        // Traffic both ways: the node reaches the pod, the pod reaches the node through its gateway.
        let pod_echo = UdpServer::echo(&pod, SocketAddrV4::new(ip, 7000)).expect("pod echo");
        assert_eq!(udp_ping(&node.ns, SocketAddrV4::new(ip, 7000), 3, 64, TIMEOUT).expect("ping"), 3);
        assert_eq!(udp_ping(&pod, SocketAddrV4::new(node.ip, 7000), 3, 64, TIMEOUT).expect("ping"), 3);
        drop(pod_echo);

        // The same MAC on the same attachment: CHECK compares it, and a re-run must agree.
        let mac = result["interfaces"][1]["mac"].as_str().expect("mac").to_owned();
        let link = pod.ip(&["link", "show", "eth0"]).expect("link");
        assert!(link.contains(&mac) && link.contains("mtu 1400"), "{link}");

        ok(node.cni("DEL", &id, Some(&pod.path()), "eth0", &with_prev(&conf, &result)), "DEL");
        ok(node.cni("DEL", &id, Some(&pod.path()), "eth0", &conf), "second DEL");
        node.assert_clean();
        assert!(!pod.ip(&["link"]).expect("links").contains("eth0"), "the pod side survived DEL");
        // CHECK now fails: the attachment is gone.
        let gone = node.cni("CHECK", &id, Some(&pod.path()), "eth0", &with_prev(&conf, &result));
        assert!(!gone.success && gone.code() == 104, "{}", gone.output);
    }
    drop(node_echo);
}

#[test]
fn fifty_concurrent_adds_get_distinct_reachable_addresses_and_fifty_dels_empty_the_pool() {
    let node = Node::new("cni-50", "10.244.2.0/24", Ipv4Addr::new(192, 168, 51, 1));
    let pods: Vec<NetNs> = (0..50).map(|_| NetNs::new("cni-p").expect("pod namespace")).collect();
    let conf = node.conf("1.1.0");
    let ns_path = node.ns.path();
    // Pod i's attachment (a copy of this closure runs on each pod's thread).
    let call = |command: &str, i: usize, pod: &NetNs| {
        let id = format!("c{i}");
        common::run_attachment(&ns_path, common::PLUGIN, command, &id, Some(&pod.path()), "eth0", &conf)
    };
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| s.spawn(move || ok(call("ADD", i, pod), "concurrent ADD")))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let ips: std::collections::BTreeSet<Ipv4Addr> = results.iter().map(Node::pod_ip).collect();
    assert_eq!(ips.len(), 50, "addresses handed out twice");
    assert_eq!(node.allocations().len(), 50);
    for (pod, result) in pods.iter().zip(&results) {
        let ip = Node::pod_ip(result);
        let _echo = UdpServer::echo(pod, SocketAddrV4::new(ip, 7000)).expect("echo");
        assert_eq!(udp_ping(&node.ns, SocketAddrV4::new(ip, 7000), 1, 32, TIMEOUT).expect("ping"), 1, "{ip}");
    }
    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            s.spawn(move || {
                ok(call("DEL", i, pod), "concurrent DEL");
            });
        }
    });
    node.assert_clean();
}

#[test]
fn pods_on_two_nodes_talk_directly_without_nat() {
    let a = Node::new("cni-na", "10.244.3.0/24", Ipv4Addr::new(192, 168, 52, 1));
    let b = Node::new("cni-nb", "10.244.4.0/24", Ipv4Addr::new(192, 168, 52, 2));
    // The link between the nodes, and the routes the agent programs from Node objects.
    a.ns.ip(&["link", "add", "to-b", "type", "veth", "peer", "name", "to-a", "netns", b.ns.name()])
        .expect("link");
    a.ns.ip(&["addr", "add", "192.168.77.1/24", "dev", "to-b"]).expect("addr");
    b.ns.ip(&["addr", "add", "192.168.77.2/24", "dev", "to-a"]).expect("addr");
    a.ns.ip(&["link", "set", "to-b", "up"]).expect("up");
    b.ns.ip(&["link", "set", "to-a", "up"]).expect("up");
    a.ns.ip(&["route", "add", "10.244.4.0/24", "via", "192.168.77.2"]).expect("route");
    b.ns.ip(&["route", "add", "10.244.3.0/24", "via", "192.168.77.1"]).expect("route");

    let (pa, pb) = (NetNs::new("cni-pa").expect("pod"), NetNs::new("cni-pb").expect("pod"));
    let ra = ok(a.cni("ADD", "pod-a", Some(&pa.path()), "eth0", &a.conf("1.1.0")), "ADD on A");
    let rb = ok(b.cni("ADD", "pod-b", Some(&pb.path()), "eth0", &b.conf("1.1.0")), "ADD on B");
    let (ip_a, ip_b) = (Node::pod_ip(&ra), Node::pod_ip(&rb));
    let _peer = UdpServer::peer(&pb, SocketAddrV4::new(ip_b, 7100)).expect("server");
    let seen = udp_ask(&pa, None, SocketAddrV4::new(ip_b, 7100), TIMEOUT).expect("ask").expect("answer");
    let source: SocketAddrV4 = seen.parse().expect("ip:port");
    assert_eq!(*source.ip(), ip_a, "B saw {source}, not pod A's address: something NATed");

    ok(a.cni("DEL", "pod-a", Some(&pa.path()), "eth0", &a.conf("1.1.0")), "DEL");
    ok(b.cni("DEL", "pod-b", Some(&pb.path()), "eth0", &b.conf("1.1.0")), "DEL");
    a.assert_clean();
    b.assert_clean();
}

#[test]
fn chained_with_the_reference_portmap_and_loopback_plugins_a_host_port_reaches_the_pod() {
    let node = Node::new("cni-pm", "10.244.5.0/24", Ipv4Addr::new(192, 168, 53, 1));
    let (server, client) = (NetNs::new("cni-srv").expect("pod"), NetNs::new("cni-cli").expect("pod"));
    let conf = node.conf("1.0.0");
    // The reference loopback plugin alongside, as runtimes configure lo.
    let loopback = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
    // The server pod's attachments, through the reference plugin `plugin`.
    let srv = |plugin: &str, command: &str, ifname: &str, stdin: &Value| {
        common::run_attachment(&node.ns.path(), plugin, command, "srv", Some(&server.path()), ifname, stdin)
    };
    ok(srv("/usr/lib/cni/loopback", "ADD", "lo", &loopback), "loopback ADD");
    let rs = ok(node.cni("ADD", "srv", Some(&server.path()), "eth0", &conf), "ADD server");
    let rc = ok(node.cni("ADD", "cli", Some(&client.path()), "eth0", &conf), "ADD client");
    let mappings = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let portmap = json!({
        "cniVersion": "1.0.0", "name": "skiff", "type": "portmap", "snat": true,
        "capabilities": {"portMappings": true}, "runtimeConfig": mappings, "prevResult": rs,
    });
    let chained = ok(srv("/usr/lib/cni/portmap", "ADD", "eth0", &portmap), "portmap ADD");
    assert_eq!(chained["ips"], rs["ips"], "portmap passes skiff's result through");

    let ip = Node::pod_ip(&rs);
    let _web = TcpIdentity::start(&server, SocketAddrV4::new(ip, 80), "server-pod").expect("server");
    // Another pod reaches the server through the node's address and the host port.
    assert_ne!(Node::pod_ip(&rc), ip);
    let greeting = poll_until("the host port answers", TIMEOUT, || {
        TcpClient::connect(&client, SocketAddrV4::new(node.ip, 8080), TIMEOUT).ok().map(|c| c.identity)
    })
    .expect("host port");
    assert_eq!(greeting, "server-pod");

    ok(srv("/usr/lib/cni/portmap", "DEL", "eth0", &with_prev(&portmap, &rs)), "portmap DEL");
    ok(srv("/usr/lib/cni/loopback", "DEL", "lo", &loopback), "loopback DEL");
    ok(node.cni("DEL", "srv", Some(&server.path()), "eth0", &conf), "DEL server");
    ok(node.cni("DEL", "cli", Some(&client.path()), "eth0", &conf), "DEL client");
    node.assert_clean();
}

#[test]
fn bad_input_gets_the_right_code_and_leaves_nothing_behind() {
    let node = Node::new("cni-bad", "10.244.6.0/24", Ipv4Addr::new(192, 168, 54, 1));
    let pod = NetNs::new("cni-badpod").expect("pod");
    let conf = node.conf("1.1.0");
    let netns = pod.path().display().to_string();
    let add = |stdin: &Value, env: &[(&str, &str)]| node.exec(common::PLUGIN, "ADD", env, stdin);
    let full = [("CNI_CONTAINERID", "bad"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", netns.as_str())];

    let raw = |text: &str| -> Call {
        common::run_plugin_raw(&node.ns.path(), common::PLUGIN, "ADD", &full, text.as_bytes())
    };
    assert_eq!(raw("{not json").code(), 6, "invalid JSON");
    let mut unknown = conf.clone();
    unknown["cniVersion"] = json!("0.2.0");
    assert_eq!(add(&unknown, &full).code(), 1, "unknown cniVersion");
    let mut nameless = conf.clone();
    nameless.as_object_mut().expect("object").remove("name");
    assert_eq!(add(&nameless, &full).code(), 7, "missing name");
    let mut bad_cidr = conf.clone();
    bad_cidr["ipam"]["subnet"] = json!("10.244.6.0/33");
    assert_eq!(add(&bad_cidr, &full).code(), 7, "bad CIDR");
    let no_netns = [("CNI_CONTAINERID", "bad"), ("CNI_IFNAME", "eth0")];
    assert_eq!(add(&conf, &no_netns).code(), 4, "missing CNI_NETNS");
    let missing_ns =
        [("CNI_CONTAINERID", "bad"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/run/netns/skt-no-such-ns")];
    assert_eq!(add(&conf, &missing_ns).code(), 3, "a netns that does not exist");
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "theirs"]).expect("the pod's own eth0");
    let exists = add(&conf, &full);
    assert_eq!(exists.code(), 100, "an interface that exists: {}", exists.output);
    assert!(exists.output["msg"].as_str().is_some_and(|m| m.contains("eth0")));
    assert_eq!(exists.output["cniVersion"], "1.1.0");
    node.assert_clean();
    assert!(
        pod.ip(&["link", "show", "eth0"]).expect("link").contains("eth0@theirs"),
        "the pod's own eth0 was touched"
    );
}

#[test]
fn without_the_datapath_status_and_add_say_unavailable() {
    let node = Node::without_datapath("cni-nodp", "10.244.7.0/24");
    let pod = NetNs::new("cni-nodp-pod").expect("pod");
    let conf = node.conf("1.1.0");
    let status = node.cni("STATUS", "", None, "", &conf);
    assert_eq!(status.code(), 50, "{}", status.output);
    let add = node.cni("ADD", "c", Some(&pod.path()), "eth0", &conf);
    assert_eq!(add.code(), 50, "{}", add.output);
    assert!(add.output["msg"].as_str().is_some_and(|m| m.contains("skiff-agent")));
    node.assert_clean();
    let version = node.cni("VERSION", "", None, "", &json!({"cniVersion": "1.0.0"}));
    assert_eq!(version.output["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
}

#[test]
fn an_add_killed_at_any_step_leaks_nothing_that_del_or_gc_cannot_reclaim() {
    let node = Node::new("cni-kill", "10.244.8.0/24", Ipv4Addr::new(192, 168, 55, 1));
    let conf = node.conf("1.1.0");
    for (i, step) in ["allocated", "veth", "attached"].into_iter().enumerate() {
        for reclaim in ["DEL", "GC"] {
            let pod = NetNs::new("cni-kpod").expect("pod");
            let marker = node.data.path().join(format!("paused-{step}-{reclaim}"));
            let id = format!("k{i}{reclaim}");
            let netns = pod.path().display().to_string();
            let env = [
                ("CNI_CONTAINERID", id.as_str()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", netns.as_str()),
                ("SKIFF_CNI_PAUSE_AT", step),
                ("SKIFF_CNI_PAUSE_MARKER", marker.to_str().expect("utf-8")),
            ];
            let mut child = common::spawn_plugin(&node.ns.path(), common::PLUGIN, "ADD", &env, &conf);
            poll_until(&format!("ADD reaching {step}"), TIMEOUT, || marker.exists().then_some(()))
                .expect("paused");
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            assert!(!node.allocations().is_empty(), "the killed ADD had allocated");
            match reclaim {
                "DEL" => ok(node.cni("DEL", &id, Some(&pod.path()), "eth0", &conf), "DEL after kill"),
                _ => {
                    let mut gc = conf.clone();
                    gc["cni.dev/valid-attachments"] = json!([]);
                    ok(node.cni("GC", "", None, "", &gc), "GC after kill")
                }
            };
            node.assert_clean();
        }
    }
}

#[test]
fn gc_keeps_valid_attachments_and_reclaims_the_rest() {
    let node = Node::new("cni-gc", "10.244.9.0/24", Ipv4Addr::new(192, 168, 56, 1));
    let conf = node.conf("1.1.0");
    let (keep, drop_) = (NetNs::new("cni-keep").expect("pod"), NetNs::new("cni-drop").expect("pod"));
    let kept = ok(node.cni("ADD", "keep", Some(&keep.path()), "eth0", &conf), "ADD");
    ok(node.cni("ADD", "drop", Some(&drop_.path()), "eth0", &conf), "ADD");
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    ok(node.cni("GC", "", None, "", &gc), "GC");
    assert_eq!(node.allocations().len(), 1);
    assert_eq!(node.veths().len(), 1);
    ok(node.cni("CHECK", "keep", Some(&keep.path()), "eth0", &with_prev(&conf, &kept)), "CHECK the kept one");
    ok(node.cni("DEL", "keep", Some(&keep.path()), "eth0", &conf), "DEL");
    node.assert_clean();
}

#[test]
fn check_notices_a_pod_without_its_service_datapath() {
    let node = Node::new("cni-chk", "10.244.10.0/24", Ipv4Addr::new(192, 168, 57, 1));
    let pod = NetNs::new("cni-chkpod").expect("pod");
    let conf = node.conf("1.1.0");
    let result = ok(node.cni("ADD", "chk", Some(&pod.path()), "eth0", &conf), "ADD");
    ok(node.cni("CHECK", "chk", Some(&pod.path()), "eth0", &with_prev(&conf, &result)), "CHECK");
    let host = result["interfaces"][0]["name"].as_str().expect("host veth").to_owned();
    let out = std::process::Command::new("tc")
        .args(["-n", node.ns.name(), "filter", "del", "dev", &host, "ingress"])
        .output()
        .expect("tc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check = node.cni("CHECK", "chk", Some(&pod.path()), "eth0", &with_prev(&conf, &result));
    assert_eq!(check.code(), 104, "{}", check.output);
    assert!(check.output["msg"].as_str().is_some_and(|m| m.contains("datapath")), "{}", check.output);
    ok(node.cni("DEL", "chk", Some(&pod.path()), "eth0", &conf), "DEL");
    node.assert_clean();
}

#[test]
fn del_succeeds_when_the_pod_namespace_is_already_gone() {
    let node = Node::new("cni-gone", "10.244.11.0/24", Ipv4Addr::new(192, 168, 58, 1));
    let conf = node.conf("1.1.0");
    let pod = NetNs::new("cni-gonepod").expect("pod");
    let path = pod.path();
    ok(node.cni("ADD", "gone", Some(&path), "eth0", &conf), "ADD");
    drop(pod); // the runtime removed the sandbox (and with it the pod side of the veth)
    ok(node.cni("DEL", "gone", Some(&path), "eth0", &conf), "DEL with a vanished netns");
    ok(node.cni("DEL", "gone", None, "eth0", &conf), "DEL without CNI_NETNS");
    node.assert_clean();
}
