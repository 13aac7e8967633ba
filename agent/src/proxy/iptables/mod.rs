//! The iptables backend (`--proxy-mode=iptables`): the same Service semantics as the eBPF
//! dataplane through kube-proxy's iptables rule layout (`rules.rs`), the benchmark baseline.
//!
//! Like kube-proxy, changes are collected and applied in one `iptables-restore --noflush` per
//! [`Dataplane::commit`], with its partial sync (KEP-3453): the chains holding one rule per
//! Service (`KUBE-SERVICES`, `KUBE-NODEPORTS`, …) are rewritten each time, a Service's own chains
//! (`KUBE-SVC-`, `KUBE-SEP-`, `KUBE-EXT-`) only when their rules changed, and chains nobody uses
//! any more are deleted. When an endpoint leaves a frontend its conntrack entries are deleted
//! (kube-proxy does this for UDP; skiff for TCP too, so a flow to a removed endpoint ends at once
//! — its next segment is DNATed afresh and reset — as in the eBPF mode).
//!
//! Switching modes: an agent in eBPF mode removes this mode's chains and jumps (only when the
//! marker chain `SKIFF-IPTABLES` says skiff made them, never a kube-proxy's), see [`cleanup`].

mod exec;
pub mod rules;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    hash::{Hash as _, Hasher as _},
    net::Ipv4Addr,
};

pub use exec::{Iptables, IptablesError, Variant};
pub use rules::RuleConfig;

use super::{
    dataplane::{Dataplane, DataplaneError},
    model::{BackendAddr, Frontend, FrontendKey},
};

/// Marks a node whose KUBE-* chains are skiff's (created in the nat table by this mode).
pub const MARKER_CHAIN: &str = "SKIFF-IPTABLES";

/// Flows whose conntrack entries go once the rules no longer lead to their endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StaleFlows {
    proto: &'static str,
    dst: Ipv4Addr,
    dport: u16,
    endpoint: Ipv4Addr,
}

/// What one commit did, for logs and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Chains written (flushed and refilled).
    pub chains_written: usize,
    pub chains_deleted: usize,
    /// Rules in the restore input.
    pub rules_written: usize,
}

/// (table, chain) and the content hash a restore gives it (0: the chain is deleted).
type ChainUpdate = ((&'static str, String), u64);

/// The iptables dataplane.
#[derive(Debug)]
pub struct IptablesDataplane {
    ipt: Iptables,
    config: RuleConfig,
    frontends: BTreeMap<FrontendKey, Frontend>,
    /// Content hash of each chain as last written, per table ("nat", "filter"). A chain found in
    /// the kernel at start has hash 0: rewritten if still wanted, deleted if not.
    written: HashMap<(&'static str, String), u64>,
    stale: BTreeSet<StaleFlows>,
    dirty: bool,
    started: bool,
    last: CommitStats,
}

fn hash_rules(rules: &[String]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rules.hash(&mut h);
    // 0 means "unknown": never produced by a real chain.
    h.finish().max(1)
}

fn proto_name(key: &FrontendKey) -> &'static str {
    match key.proto {
        super::Protocol::Tcp => "tcp",
        super::Protocol::Udp => "udp",
    }
}

impl IptablesDataplane {
    /// A backend over `ipt`. Chains a previous agent left are adopted at the first commit:
    /// rewritten if still wanted, deleted otherwise — never before the first complete listing.
    pub fn new(ipt: Iptables, config: RuleConfig) -> Self {
        Self {
            ipt,
            config,
            frontends: BTreeMap::new(),
            written: HashMap::new(),
            stale: BTreeSet::new(),
            dirty: true,
            started: false,
            last: CommitStats::default(),
        }
    }

    pub fn last_commit(&self) -> CommitStats {
        self.last
    }

    pub fn iptables(&self) -> &Iptables {
        &self.ipt
    }

    /// First commit: the marker chain, the jumps from the built-in chains, and the KUBE-* chains
    /// already there (adopted with an unknown hash).
    fn start(&mut self) -> Result<(), IptablesError> {
        for table in ["nat", "filter"] {
            let saved = self.ipt.save(table)?;
            for line in saved.lines() {
                if let Some(chain) = line.strip_prefix(':').and_then(|l| l.split_whitespace().next())
                    && chain.starts_with("KUBE-")
                {
                    self.written.insert((table, chain.to_owned()), 0);
                }
            }
            if table == "nat" && !saved.lines().any(|l| l.starts_with(&format!(":{MARKER_CHAIN} "))) {
                self.ipt.restore(&format!("*nat\n:{MARKER_CHAIN} - [0:0]\nCOMMIT\n"))?;
            }
        }
        // Chains first (the jumps need them), then the jumps.
        let missing = |table: &'static str, chains: &[&str]| -> String {
            chains
                .iter()
                .filter(|c| !self.written.contains_key(&(table, (**c).to_owned())))
                .map(|c| format!(":{c} - [0:0]\n"))
                .collect()
        };
        let base = format!(
            "*nat\n{}COMMIT\n*filter\n{}COMMIT\n",
            missing("nat", &rules::NAT_BASE),
            missing("filter", &rules::FILTER_BASE)
        );
        self.ipt.restore(&base)?;
        for (table, chain, rule) in rules::JUMPS {
            if self.ipt.rule(table, "-C", chain, rule).is_err() {
                self.ipt.rule(table, "-I", chain, rule)?;
            }
        }
        self.started = true;
        Ok(())
    }

    /// The restore input for the current frontends, and what it changes.
    fn restore_input(&self) -> (String, Vec<ChainUpdate>, CommitStats) {
        let tables = rules::generate(&self.frontends, &self.config);
        let mut input = String::new();
        let mut updates = Vec::new();
        let mut stats = CommitStats::default();
        for (table, chains, base) in
            [("nat", &tables.nat, &rules::NAT_BASE[..]), ("filter", &tables.filter, &rules::FILTER_BASE[..])]
        {
            let _ = writeln!(input, "*{table}");
            let mut body = String::new();
            for (chain, chain_rules) in chains {
                let h = hash_rules(chain_rules);
                let key = (table, chain.clone());
                let always = base.contains(&chain.as_str());
                if !always && self.written.get(&key) == Some(&h) {
                    continue;
                }
                let _ = writeln!(input, ":{chain} - [0:0]");
                for rule in chain_rules {
                    let _ = writeln!(body, "-A {chain} {rule}");
                }
                stats.chains_written += 1;
                stats.rules_written += chain_rules.len();
                updates.push((key, h));
            }
            // Chains no longer wanted: declared (flushed) with the others, deleted after every rule
            // that could still jump to them is gone.
            let mut gone: Vec<&String> = self
                .written
                .keys()
                .filter(|(t, c)| *t == table && !chains.contains_key(c))
                .map(|(_, c)| c)
                .collect();
            gone.sort();
            let mut deletions = String::new();
            for chain in gone {
                let _ = writeln!(input, ":{chain} - [0:0]");
                let _ = writeln!(deletions, "-X {chain}");
                stats.chains_deleted += 1;
                updates.push(((table, chain.clone()), 0));
            }
            input.push_str(&body);
            input.push_str(&deletions);
            input.push_str("COMMIT\n");
        }
        (input, updates, stats)
    }

    /// Remembers what a successful restore wrote (hash 0: deleted).
    fn record(&mut self, updates: Vec<ChainUpdate>) {
        for (key, h) in updates {
            if h == 0 {
                self.written.remove(&key);
            } else {
                self.written.insert(key, h);
            }
        }
    }

    fn mark_stale(&mut self, key: &FrontendKey, endpoints: impl IntoIterator<Item = BackendAddr>) {
        for ep in endpoints {
            self.stale.insert(StaleFlows {
                proto: proto_name(key),
                dst: key.vip,
                dport: key.port,
                endpoint: ep.ip,
            });
        }
    }
}

impl Dataplane for IptablesDataplane {
    fn upsert(&mut self, key: FrontendKey, frontend: &Frontend) -> Result<(), DataplaneError> {
        if let Some(old) = self.frontends.get(&key) {
            if old == frontend {
                return Ok(());
            }
            let still: BTreeSet<BackendAddr> = frontend.referenced().copied().collect();
            let left: Vec<BackendAddr> = old.referenced().filter(|a| !still.contains(a)).copied().collect();
            self.mark_stale(&key, left);
        }
        self.frontends.insert(key, frontend.clone());
        self.dirty = true;
        Ok(())
    }

    fn remove(&mut self, key: &FrontendKey) -> Result<(), DataplaneError> {
        if let Some(old) = self.frontends.remove(key) {
            let left: Vec<BackendAddr> = old.referenced().copied().collect();
            self.mark_stale(key, left);
            self.dirty = true;
        }
        Ok(())
    }

    // ClusterIP markers come from the frontends themselves (the catch-all REJECT per ClusterIP).
    fn add_clusterip(&mut self, _vip: Ipv4Addr) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn remove_clusterip(&mut self, _vip: Ipv4Addr) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DataplaneError> {
        if !self.started {
            self.start()?;
        }
        if !self.dirty && self.stale.is_empty() {
            return Ok(());
        }
        let (input, updates, stats) = self.restore_input();
        self.ipt.restore(&input)?;
        self.record(updates);
        self.last = stats;
        self.dirty = false;
        for flows in std::mem::take(&mut self.stale) {
            let (dst, ep) = (flows.dst.to_string(), flows.endpoint.to_string());
            if let Err(e) = self.ipt.forget_flows(flows.proto, &dst, flows.dport, &ep) {
                tracing::warn!(error = %e, "deleting conntrack entries of a removed endpoint");
            }
        }
        Ok(())
    }
}

/// Removes what this mode made in the node's tables (the jumps, every KUBE-* chain and the
/// marker), if the marker says skiff made them; returns whether it did. An agent starting in eBPF
/// mode calls it, so switching modes leaves nothing of the other one behind.
pub fn cleanup(ipt: &Iptables) -> Result<bool, IptablesError> {
    let nat = ipt.save("nat")?;
    if !nat.lines().any(|l| l.starts_with(&format!(":{MARKER_CHAIN} "))) {
        return Ok(false);
    }
    for (table, chain, rule) in rules::JUMPS {
        while ipt.rule(table, "-D", chain, rule).is_ok() {}
    }
    let mut input = String::new();
    for table in ["nat", "filter"] {
        let saved = if table == "nat" { nat.clone() } else { ipt.save(table)? };
        let chains: Vec<&str> = saved
            .lines()
            .filter_map(|l| l.strip_prefix(':').and_then(|l| l.split_whitespace().next()))
            .filter(|c| c.starts_with("KUBE-") || *c == MARKER_CHAIN)
            .collect();
        let _ = writeln!(input, "*{table}");
        for c in &chains {
            let _ = writeln!(input, ":{c} - [0:0]");
        }
        for c in &chains {
            let _ = writeln!(input, "-X {c}");
        }
        input.push_str("COMMIT\n");
    }
    ipt.restore(&input)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{Protocol, ServiceRef};

    fn frontend(name: &str, backends: &[[u8; 4]]) -> Frontend {
        Frontend {
            service: ServiceRef { namespace: "default".into(), name: name.into() },
            port_name: String::new(),
            active: backends
                .iter()
                .map(|o| BackendAddr::remote(Ipv4Addr::from(*o), 8080, Protocol::Tcp))
                .collect(),
            draining: BTreeSet::new(),
            affinity_timeout_s: None,
            local_only: false,
            external: false,
            source_ranges: BTreeSet::new(),
        }
    }

    fn key(last: u8) -> FrontendKey {
        FrontendKey { vip: Ipv4Addr::new(10, 96, 0, last), port: 80, proto: Protocol::Tcp }
    }

    fn declared(input: &str) -> BTreeSet<String> {
        input
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .map(|l| l.split(' ').next().unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn a_sync_rewrites_the_base_chains_and_only_the_services_that_changed() {
        let mut dp = IptablesDataplane::new(Iptables::new(Variant::System, None), RuleConfig::default());
        dp.upsert(key(1), &frontend("web", &[[10, 244, 0, 1], [10, 244, 0, 2]])).expect("web");
        dp.upsert(key(2), &frontend("dns", &[[10, 244, 0, 3]])).expect("dns");
        let (first, updates, stats) = dp.restore_input();
        assert_eq!(stats.chains_deleted, 0);
        assert_eq!(declared(&first).iter().filter(|c| c.starts_with("KUBE-SEP-")).count(), 3, "{first}");
        dp.record(updates);

        // web loses an endpoint; dns is untouched.
        dp.upsert(key(1), &frontend("web", &[[10, 244, 0, 1]])).expect("web");
        let (second, _, stats) = dp.restore_input();
        let chains = declared(&second);
        let web_svc = rules::service_chain(&key(1), &frontend("web", &[]));
        let dns_svc = rules::service_chain(&key(2), &frontend("dns", &[]));
        assert!(chains.contains(&web_svc) && !chains.contains(&dns_svc), "{second}");
        for base in rules::NAT_BASE.iter().chain(&rules::FILTER_BASE) {
            assert!(chains.contains(*base), "{base} not rewritten: {second}");
        }
        // The removed endpoint's chain is flushed and deleted after the rules that used it.
        assert_eq!(stats.chains_deleted, 1);
        let deleted = second.lines().find_map(|l| l.strip_prefix("-X ")).expect("a deletion");
        assert!(chains.contains(deleted) && deleted.starts_with("KUBE-SEP-"));
        let x = second.find("-X ").expect("deletion");
        assert!(second[..x].contains(&format!("-A {web_svc} ")), "the new web chain comes first");
        // The kept endpoint's chain and the untouched service's are not in the input at all: only
        // the deleted one is declared.
        assert_eq!(chains.iter().filter(|c| c.starts_with("KUBE-SEP-")).count(), 1, "{second}");
    }

    #[test]
    fn removed_endpoints_are_queued_for_a_conntrack_flush() {
        let mut dp = IptablesDataplane::new(Iptables::new(Variant::System, None), RuleConfig::default());
        dp.upsert(key(1), &frontend("web", &[[10, 244, 0, 1], [10, 244, 0, 2]])).expect("web");
        dp.upsert(key(1), &frontend("web", &[[10, 244, 0, 1]])).expect("web");
        let stale: Vec<_> = dp.stale.iter().map(|s| (s.dst, s.dport, s.endpoint, s.proto)).collect();
        assert_eq!(stale, [(Ipv4Addr::new(10, 96, 0, 1), 80, Ipv4Addr::new(10, 244, 0, 2), "tcp")]);
    }
}
