//! kube-proxy's iptables rule layout, generated from the service proxy's frontends: a pure
//! function from frontends to chains, so it is unit-tested without privileges and the backend can
//! compare chains with what it last wrote (partial sync).
//!
//! Layout (nat table), as kube-proxy's iptables mode writes it:
//!
//! ```text
//! PREROUTING, OUTPUT ──> KUBE-SERVICES ── -d VIP -p P --dport N ──> KUBE-SVC-<hash> (KUBE-SVL- when Local)
//!                                      ── -d externalIP/LB IP ──> KUBE-EXT-<hash>
//!                                      ── -d node IP (last) ──> KUBE-NODEPORTS ── --dport NP ──> KUBE-EXT-<hash>
//! KUBE-EXT-<hash>: KUBE-MARK-MASQ (externalTrafficPolicy Cluster), then KUBE-SVC-/KUBE-SVL-<hash>
//! KUBE-SVC-<hash>: [recent --rcheck per endpoint (affinity)], statistic random 1/n, 1/(n-1) … ──> KUBE-SEP-<hash>
//! KUBE-SEP-<hash>: -s self ──> KUBE-MARK-MASQ (hairpin); [recent --set]; DNAT --to-destination ip:port
//! POSTROUTING ──> KUBE-POSTROUTING: MASQUERADE what KUBE-MARK-MASQ marked (0x4000)
//! ```
//!
//! and in the filter table REJECT for frontends without endpoints (`KUBE-SERVICES`,
//! `KUBE-EXTERNAL-SERVICES`; DROP for `externalTrafficPolicy: Local` without local endpoints) and
//! `KUBE-FORWARD` (drop INVALID, accept marked and established). Chain names are kube-proxy's:
//! base32 of SHA-256 over `namespace/name:port` + protocol (+ the endpoint for KUBE-SEP), cut to 16.
//!
//! Where skiff differs, on purpose, so both backends pass one Service test suite: each ClusterIP
//! also gets a catch-all REJECT in the filter table (traffic to a port it does not serve is refused
//! at once, as kube-proxy's nftables mode and skiff's eBPF mode do, rather than routed nowhere).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
};

use sha2::{Digest as _, Sha256};

use crate::proxy::model::{BackendAddr, Frontend, FrontendKey};

pub const MASQ_MARK: &str = "0x4000";

/// What the rules need beyond the frontends.
#[derive(Debug, Clone, Default)]
pub struct RuleConfig {
    /// The node's NodePort addresses: an external frontend on one of these is a NodePort.
    pub nodeport_addresses: Vec<Ipv4Addr>,
    /// kube-proxy's `--cluster-cidr`: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: Option<String>,
}

/// One table's chains, name → rules (each rule is the text after `-A <chain> `).
pub type Chains = BTreeMap<String, Vec<String>>;

/// The nat and filter tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    pub nat: Chains,
    pub filter: Chains,
}

/// Chains rewritten in full on every sync (kube-proxy does the same): they hold one rule per
/// Service, so any change touches them.
pub const NAT_BASE: [&str; 4] = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"];
pub const FILTER_BASE: [&str; 3] = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD"];

/// kube-proxy's chain-name hash: base32 (RFC 4648, no padding) of SHA-256, first 16 characters.
fn hash16(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(text.as_bytes());
    // 16 characters × 5 bits = 80 bits = the first 10 bytes.
    let mut bits: u128 = 0;
    for b in &digest[..10] {
        bits = (bits << 8) | u128::from(*b);
    }
    (0..16).map(|i| ALPHABET[((bits >> (75 - 5 * i)) & 0x1f) as usize] as char).collect()
}

/// `namespace/name:port-name` (`namespace/name` for an unnamed port), kube-proxy's
/// ServicePortName.
fn port_name(f: &Frontend) -> String {
    if f.port_name.is_empty() {
        format!("{}/{}", f.service.namespace, f.service.name)
    } else {
        format!("{}/{}:{}", f.service.namespace, f.service.name, f.port_name)
    }
}

fn proto(f: &FrontendKey) -> &'static str {
    match f.proto {
        crate::proxy::Protocol::Tcp => "tcp",
        crate::proxy::Protocol::Udp => "udp",
    }
}

/// The chain that balances over `f`'s endpoints: KUBE-SVC-, or KUBE-SVL- for the Local policies.
pub fn service_chain(key: &FrontendKey, f: &Frontend) -> String {
    let prefix = if f.local_only { "KUBE-SVL-" } else { "KUBE-SVC-" };
    format!("{prefix}{}", hash16(&format!("{}{}", port_name(f), proto(key))))
}

fn external_chain(key: &FrontendKey, f: &Frontend) -> String {
    format!("KUBE-EXT-{}", hash16(&format!("{}{}", port_name(f), proto(key))))
}

fn firewall_chain(key: &FrontendKey, f: &Frontend) -> String {
    format!("KUBE-FW-{}", hash16(&format!("{}{}", port_name(f), proto(key))))
}

fn endpoint_chain(key: &FrontendKey, f: &Frontend, ep: &BackendAddr) -> String {
    format!("KUBE-SEP-{}", hash16(&format!("{}{}{}:{}", port_name(f), proto(key), ep.ip, ep.port)))
}

/// The whole rule set for `frontends`.
pub fn generate(frontends: &BTreeMap<FrontendKey, Frontend>, config: &RuleConfig) -> Tables {
    let mut t = Tables::default();
    for base in NAT_BASE {
        t.nat.insert(base.to_owned(), Vec::new());
    }
    for base in FILTER_BASE {
        t.filter.insert(base.to_owned(), Vec::new());
    }
    let mut vips = BTreeSet::new();
    let mut nodeport_addrs = BTreeSet::new();
    for (key, f) in frontends {
        let name = port_name(f);
        let p = proto(key);
        let is_nodeport = f.external && config.nodeport_addresses.contains(&key.vip);
        if !f.external {
            vips.insert(key.vip);
        }
        if is_nodeport {
            nodeport_addrs.insert(key.vip);
        }
        if f.active.is_empty() {
            no_endpoints(&mut t, key, f, is_nodeport);
            continue;
        }
        let svc = service_chain(key, f);
        let svc_rules = balance(key, f, config);
        // Frontends of one service port share their chains (kube-proxy writes them once).
        t.nat.insert(svc.clone(), svc_rules);
        for ep in &f.active {
            t.nat.insert(endpoint_chain(key, f, ep), endpoint(key, f, ep));
        }
        let dst = format!("-d {}/32 -p {p} -m {p} --dport {}", key.vip, key.port);
        if !f.external {
            push(
                &mut t.nat,
                "KUBE-SERVICES",
                format!("-m comment --comment \"{name} cluster IP\" {dst} -j {svc}"),
            );
            continue;
        }
        let ext = external_chain(key, f);
        let mut ext_rules = Vec::new();
        if !f.local_only {
            ext_rules.push(format!(
                "-m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"
            ));
        }
        ext_rules.push(format!("-j {svc}"));
        t.nat.insert(ext.clone(), ext_rules);
        if is_nodeport {
            let rule = format!(
                "-m comment --comment {name} -d {}/32 -p {p} -m {p} --dport {} -j {ext}",
                key.vip, key.port
            );
            push(&mut t.nat, "KUBE-NODEPORTS", rule);
        } else if !f.source_ranges.is_empty() {
            // loadBalancerSourceRanges: only the listed clients are DNATed; the filter table drops
            // the rest, which still carry the load-balancer address.
            let fw = firewall_chain(key, f);
            let lb = format!("-m comment --comment \"{name} loadbalancer IP\"");
            push(&mut t.nat, "KUBE-SERVICES", format!("{lb} {dst} -j {fw}"));
            for (addr, len) in &f.source_ranges {
                push(&mut t.nat, &fw, format!("{lb} -s {addr}/{len} -j {ext}"));
            }
            let drop = format!("-m comment --comment \"{name} traffic not accepted by {fw}\" {dst} -j DROP");
            push(&mut t.filter, "KUBE-EXTERNAL-SERVICES", drop);
        } else {
            push(
                &mut t.nat,
                "KUBE-SERVICES",
                format!("-m comment --comment \"{name} external IP\" {dst} -j {ext}"),
            );
        }
    }
    let services = t.nat.entry("KUBE-SERVICES".into()).or_default();
    for addr in &nodeport_addrs {
        services.push(format!(
            "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -d {addr}/32 -j KUBE-NODEPORTS"
        ));
    }
    t.nat.insert("KUBE-MARK-MASQ".into(), vec![format!("-j MARK --or-mark {MASQ_MARK}")]);
    t.nat.insert(
        "KUBE-POSTROUTING".into(),
        vec![
            format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
            format!("-j MARK --xor-mark {MASQ_MARK}"),
            "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
                .into(),
        ],
    );
    let filter_services = t.filter.entry("KUBE-SERVICES".into()).or_default();
    for vip in &vips {
        filter_services.push(format!(
            "-m comment --comment \"ClusterIP {vip}: port not served\" -d {vip}/32 -j REJECT --reject-with icmp-port-unreachable"
        ));
    }
    t.filter.insert(
        "KUBE-FORWARD".into(),
        vec![
            "-m conntrack --ctstate INVALID -j DROP".into(),
            format!(
                "-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
            ),
            "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                .into(),
        ],
    );
    t
}

/// A frontend without endpoints: refused in the filter table (dropped for eTP Local).
fn no_endpoints(t: &mut Tables, key: &FrontendKey, f: &Frontend, is_nodeport: bool) {
    let name = port_name(f);
    let p = proto(key);
    let dst = format!("-d {}/32 -p {p} -m {p} --dport {}", key.vip, key.port);
    let (chain, verdict) = if !f.external {
        ("KUBE-SERVICES", "-j REJECT --reject-with icmp-port-unreachable")
    } else if f.local_only {
        ("KUBE-EXTERNAL-SERVICES", "-j DROP")
    } else {
        ("KUBE-EXTERNAL-SERVICES", "-j REJECT --reject-with icmp-port-unreachable")
    };
    let what = if f.external && f.local_only { "has no local endpoints" } else { "has no endpoints" };
    let kind = if is_nodeport { " (nodePort)" } else { "" };
    push(&mut t.filter, chain, format!("-m comment --comment \"{name}{kind} {what}\" {dst} {verdict}"));
}

fn push(chains: &mut Chains, chain: &str, rule: String) {
    chains.entry(chain.to_owned()).or_default().push(rule);
}

/// KUBE-SVC-/KUBE-SVL-: masquerade from outside the cluster CIDR, affinity, then random choice.
fn balance(key: &FrontendKey, f: &Frontend, config: &RuleConfig) -> Vec<String> {
    let name = port_name(f);
    let p = proto(key);
    let mut rules = Vec::new();
    if let (Some(cidr), false) = (&config.cluster_cidr, f.external) {
        rules.push(format!(
            "-m comment --comment \"{name} cluster IP\" -d {}/32 -p {p} -m {p} --dport {} ! -s {cidr} -j KUBE-MARK-MASQ",
            key.vip, key.port
        ));
    }
    let endpoints: Vec<&BackendAddr> = f.active.iter().collect();
    if let Some(timeout) = f.affinity_timeout_s {
        for ep in &endpoints {
            let sep = endpoint_chain(key, f, ep);
            rules.push(format!(
                "-m comment --comment \"{name} -> {}:{}\" -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {timeout} --reap -j {sep}",
                ep.ip, ep.port
            ));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let sep = endpoint_chain(key, f, ep);
        let mut rule = format!("-m comment --comment \"{name} -> {}:{}\"", ep.ip, ep.port);
        if i + 1 < n {
            let _ = write!(rule, " -m statistic --mode random --probability {:.10}", 1.0 / (n - i) as f64);
        }
        let _ = write!(rule, " -j {sep}");
        rules.push(rule);
    }
    rules
}

/// KUBE-SEP-: hairpin masquerade, affinity record, DNAT.
fn endpoint(key: &FrontendKey, f: &Frontend, ep: &BackendAddr) -> Vec<String> {
    let name = port_name(f);
    let p = proto(key);
    let mut dnat = format!("-m comment --comment {name}");
    if f.affinity_timeout_s.is_some() {
        let sep = endpoint_chain(key, f, ep);
        let _ = write!(dnat, " -m recent --name {sep} --mask 255.255.255.255 --rsource --set");
    }
    let _ = write!(dnat, " -p {p} -m {p} -j DNAT --to-destination {}:{}", ep.ip, ep.port);
    vec![format!("-m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ", ep.ip), dnat]
}

/// The jump rules into skiff's chains from the built-in ones: (table, chain, rule), inserted at
/// the top once and left there across syncs, as kube-proxy does.
pub const JUMPS: [(&str, &str, &str); 7] = [
    ("nat", "PREROUTING", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
    ("nat", "OUTPUT", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
    ("nat", "POSTROUTING", "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
    ),
    ("filter", "FORWARD", "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::proxy::{Protocol, ServiceRef};

    fn frontend(backends: &[[u8; 4]], affinity: bool, local: bool, external: bool) -> Frontend {
        Frontend {
            service: ServiceRef { namespace: "default".into(), name: "web".into() },
            port_name: "http".into(),
            active: backends
                .iter()
                .map(|o| BackendAddr::remote(Ipv4Addr::from(*o), 8080, Protocol::Tcp))
                .collect(),
            draining: BTreeSet::new(),
            affinity_timeout_s: affinity.then_some(600),
            local_only: local,
            external,
            source_ranges: BTreeSet::new(),
        }
    }

    fn key(vip: [u8; 4], port: u16) -> FrontendKey {
        FrontendKey { vip: Ipv4Addr::from(vip), port, proto: Protocol::Tcp }
    }

    #[test]
    fn chain_names_are_kube_proxys() {
        // kube-proxy's names for Service port "ns1/svc1:p80" (tcp) and its endpoint 10.180.0.1:80,
        // as its own unit tests have them.
        let f = Frontend {
            service: ServiceRef { namespace: "ns1".into(), name: "svc1".into() },
            port_name: "p80".into(),
            ..frontend(&[], false, false, false)
        };
        let k = key([10, 20, 30, 41], 80);
        assert_eq!(service_chain(&k, &f), "KUBE-SVC-XPGD46QRK7WJZT7O");
        let ep = BackendAddr::remote(Ipv4Addr::new(10, 180, 0, 1), 80, Protocol::Tcp);
        assert_eq!(endpoint_chain(&k, &f, &ep), "KUBE-SEP-SXIVWICOYRO3J4NJ");
    }

    #[test]
    fn three_endpoints_get_kube_proxys_probabilities_and_the_last_none() {
        let mut fs = BTreeMap::new();
        fs.insert(
            key([10, 96, 0, 10], 80),
            frontend(&[[10, 244, 1, 1], [10, 244, 1, 2], [10, 244, 1, 3]], false, false, false),
        );
        let t = generate(&fs, &RuleConfig::default());
        let svc = t.nat.keys().find(|k| k.starts_with("KUBE-SVC-")).expect("svc chain");
        let rules = &t.nat[svc];
        assert!(rules[0].contains("--probability 0.3333333333"), "{rules:?}");
        assert!(rules[1].contains("--probability 0.5000000000"), "{rules:?}");
        assert!(!rules[2].contains("statistic"), "{rules:?}");
        assert_eq!(t.nat.keys().filter(|k| k.starts_with("KUBE-SEP-")).count(), 3);
        assert!(
            t.nat["KUBE-SERVICES"][0]
                .contains(&format!("-d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j {svc}"))
        );
        // The catch-all reject for other ports of the ClusterIP.
        assert!(t.filter["KUBE-SERVICES"].iter().any(|r| r.contains("-d 10.96.0.10/32 -j REJECT")));
    }

    #[test]
    fn affinity_checks_recent_before_the_random_choice_and_records_it_at_dnat() {
        let mut fs = BTreeMap::new();
        fs.insert(
            key([10, 96, 0, 11], 80),
            frontend(&[[10, 244, 1, 1], [10, 244, 1, 2]], true, false, false),
        );
        let t = generate(&fs, &RuleConfig::default());
        let svc = t.nat.keys().find(|k| k.starts_with("KUBE-SVC-")).expect("svc");
        let rules = &t.nat[svc];
        assert!(
            rules[0].contains("--rcheck --seconds 600 --reap") && rules[1].contains("--rcheck"),
            "{rules:?}"
        );
        let sep = t.nat.keys().find(|k| k.starts_with("KUBE-SEP-")).expect("sep");
        assert!(t.nat[sep][1].contains("--set") && t.nat[sep][1].contains("DNAT --to-destination"));
        assert!(t.nat[sep][0].contains("-j KUBE-MARK-MASQ"), "hairpin masquerade");
    }

    #[test]
    fn a_nodeport_goes_through_kube_nodeports_and_external_masquerade() {
        let cfg = RuleConfig { nodeport_addresses: vec![Ipv4Addr::new(192, 168, 5, 10)], cluster_cidr: None };
        let mut fs = BTreeMap::new();
        fs.insert(key([192, 168, 5, 10], 30080), frontend(&[[10, 244, 1, 1]], false, false, true));
        let t = generate(&fs, &cfg);
        assert!(t.nat["KUBE-NODEPORTS"][0].contains("--dport 30080 -j KUBE-EXT-"));
        let last = t.nat["KUBE-SERVICES"].last().expect("jump to nodeports");
        assert!(last.contains("-d 192.168.5.10/32 -j KUBE-NODEPORTS"), "{last}");
        let ext = t.nat.keys().find(|k| k.starts_with("KUBE-EXT-")).expect("ext");
        assert!(t.nat[ext][0].contains("KUBE-MARK-MASQ") && t.nat[ext][1].starts_with("-j KUBE-SVC-"));
    }

    #[test]
    fn source_ranges_let_only_their_clients_through_to_the_external_chain() {
        let mut fs = BTreeMap::new();
        let mut lb = frontend(&[[10, 244, 1, 1]], false, false, true);
        lb.source_ranges = [(Ipv4Addr::new(198, 51, 100, 0), 24)].into();
        fs.insert(key([192, 0, 2, 50], 80), lb);
        let t = generate(&fs, &RuleConfig::default());
        let fw = t.nat.keys().find(|k| k.starts_with("KUBE-FW-")).expect("firewall chain");
        assert!(t.nat["KUBE-SERVICES"][0].ends_with(&format!("-j {fw}")));
        assert!(t.nat[fw][0].contains("-s 198.51.100.0/24 -j KUBE-EXT-"), "{:?}", t.nat[fw]);
        let drop = &t.filter["KUBE-EXTERNAL-SERVICES"][0];
        assert!(drop.contains("-d 192.0.2.50/32") && drop.ends_with("-j DROP"), "{drop}");
    }

    #[test]
    fn frontends_without_endpoints_are_rejected_and_local_policy_drops() {
        let cfg = RuleConfig { nodeport_addresses: vec![Ipv4Addr::new(192, 168, 5, 10)], cluster_cidr: None };
        let mut fs = BTreeMap::new();
        fs.insert(key([10, 96, 0, 12], 80), frontend(&[], false, false, false));
        fs.insert(key([192, 168, 5, 10], 30081), frontend(&[], false, true, true));
        let t = generate(&fs, &cfg);
        assert!(
            t.filter["KUBE-SERVICES"][0]
                .contains("has no endpoints\" -d 10.96.0.12/32 -p tcp -m tcp --dport 80 -j REJECT")
        );
        assert!(
            t.filter["KUBE-EXTERNAL-SERVICES"][0].contains("has no local endpoints")
                && t.filter["KUBE-EXTERNAL-SERVICES"][0].ends_with("-j DROP")
        );
        assert!(!t.nat.keys().any(|k| k.starts_with("KUBE-SVC-")), "no balancing chain without endpoints");
    }
}
