//! Switching the agent between its eBPF and iptables modes leaves nothing of the other mode:
//! eBPF → iptables takes the load balancer's filters off pod veths, the uplink's XDP link and
//! every pin away; iptables → eBPF removes every KUBE-* chain and jump, and puts the load balancer
//! back on the pod veths that were made meanwhile.

use std::{collections::BTreeSet, net::Ipv4Addr, path::Path};

use skiff_agent::{
    datapath::{DatapathConfig, LbCapacity, LogLevel},
    proxy::{
        BackendAddr, Frontend, FrontendKey, Protocol, ServiceRef,
        iptables::{Iptables, Variant},
        mode::{self, ModeArgs, Proxy, ProxyMode},
    },
};
use skiff_common::lb::LbConfig;
use skiff_tests::{NetNs, PinDir};

/// The host end of a pod veth, named the way skiff-cni names them.
const POD_VETH: &str = "skf0123456789a";

fn config(pins: &PinDir) -> DatapathConfig {
    let lb = LbCapacity {
        config: LbConfig { maglev_m: 251, ..LbConfig::DEFAULT },
        max_services: 16,
        max_backends: 16,
        max_ct: 256,
        max_affinity: 64,
        max_frags: 16,
    };
    DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, lb }
}

fn args(proxy_mode: ProxyMode) -> ModeArgs {
    ModeArgs { proxy_mode, iptables: Variant::System, cluster_cidr: None }
}

/// BPF programs at ingress of the pod veth.
fn veth_programs(node: &NetNs) -> Vec<String> {
    node.run(|| {
        skiff_cni::netlink::run(async |h| {
            let index = skiff_cni::netlink::link_index(h, POD_VETH).await?.expect("pod veth");
            skiff_cni::netlink::ingress_bpf_programs(h, index).await
        })
    })
    .expect("node thread")
    .expect("netlink")
}

/// Everything under the pin dir, recursively.
fn pins_left(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(pins_left(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

fn skiff_chains(ipt: &Iptables) -> Vec<String> {
    ["nat", "filter"]
        .iter()
        .flat_map(|t| ipt.save(t).expect("iptables-save").lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.contains("KUBE-") || l.contains("SKIFF-"))
        .collect()
}

#[test]
fn each_mode_removes_what_the_other_left() {
    let node = NetNs::new("modes").expect("node namespace");
    for (name, peer) in [(POD_VETH, "pod-end"), ("up0", "up0-peer")] {
        node.ip(&["link", "add", name, "type", "veth", "peer", "name", peer]).expect("veth");
        node.ip(&["link", "set", name, "up"]).expect("up");
        node.ip(&["link", "set", peer, "up"]).expect("up");
    }
    node.ip(&["addr", "add", "198.18.7.1/24", "dev", "up0"]).expect("address");
    let pins = PinDir::new("modes").expect("pins");
    let netns = node.path();
    let ipt = Iptables::new(Variant::System, Some(netns.clone()));

    // eBPF: the load balancer goes onto the existing pod veth; the uplink gets its XDP program.
    let mut proxy =
        mode::prepare(&args(ProxyMode::Ebpf), &config(&pins), Some(&netns), vec![]).expect("ebpf");
    let Proxy::Ebpf(dp) = &mut proxy else { panic!("eBPF mode gave {proxy:?}") };
    node.run(|| dp.attach_uplink("up0")).expect("node thread").expect("uplink");
    assert_eq!(veth_programs(&node), ["skiff_lb"], "the pod veth got the load balancer");
    assert!(node.xdp_attached("up0").expect("ip link"), "uplink program attached");
    assert!(!pins_left(pins.path()).is_empty());
    drop(proxy);

    // iptables: nothing of eBPF stays, and rules are written.
    let mut proxy =
        mode::prepare(&args(ProxyMode::Iptables), &config(&pins), Some(&netns), vec![]).expect("iptables");
    assert!(veth_programs(&node).is_empty(), "filter left on the pod veth");
    assert!(!node.xdp_attached("up0").expect("ip link"), "XDP left on the uplink");
    assert_eq!(pins_left(pins.path()), Vec::<String>::new(), "pins left");
    let key = FrontendKey { vip: Ipv4Addr::new(198, 19, 7, 10), port: 80, proto: Protocol::Tcp };
    let frontend = Frontend {
        service: ServiceRef { namespace: "default".into(), name: "web".into() },
        port_name: String::new(),
        active: [BackendAddr::remote(Ipv4Addr::new(198, 18, 7, 2), 8080, Protocol::Tcp)].into(),
        draining: BTreeSet::new(),
        affinity_timeout_s: None,
        local_only: false,
        external: false,
        source_ranges: BTreeSet::new(),
    };
    let dataplane = proxy.dataplane();
    dataplane.upsert(key, &frontend).expect("upsert");
    dataplane.commit().expect("commit");
    let rules = skiff_chains(&ipt);
    assert!(rules.iter().any(|l| l.starts_with(":KUBE-SVC-")), "{rules:#?}");
    assert!(rules.iter().any(|l| l.contains("-A PREROUTING") && l.contains("KUBE-SERVICES")), "{rules:#?}");
    drop(proxy);

    // eBPF again: the chains, the jumps and the marker go; the pod veth gets the load balancer back.
    let proxy =
        mode::prepare(&args(ProxyMode::Ebpf), &config(&pins), Some(&netns), vec![]).expect("ebpf again");
    assert_eq!(skiff_chains(&ipt), Vec::<String>::new(), "iptables mode left rules");
    assert_eq!(veth_programs(&node), ["skiff_lb"]);
    drop(proxy);
}
