//! Prometheus text exposition of the agent: per-frontend traffic, drops by reason, conntrack and
//! map fill (read from the datapath's pins at scrape time, so the numbers are the kernel's own),
//! the reconcile latency histogram, frontends wanted, readiness and this node's pods by phase.

use std::{collections::BTreeMap, fmt::Write as _};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use skiff_common::names;

use super::Status;
use crate::inspect::{self, svc::LiveFrontend};

/// A label value, escaped as the exposition format asks.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// One metric family: `# HELP`, `# TYPE`, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The per-frontend families from a `svc list` reading.
pub fn frontend_families(out: &mut String, frontends: &[LiveFrontend]) {
    let label = |f: &LiveFrontend| {
        let service = f.service.clone().unwrap_or_default();
        let (namespace, name) = service.split_once('/').unwrap_or(("", ""));
        labels(&[("frontend", &f.frontend), ("namespace", namespace), ("service", name), ("type", f.kind)])
    };
    let samples = |value: fn(&LiveFrontend) -> u64| -> Vec<(String, String)> {
        frontends.iter().map(|f| (label(f), value(f).to_string())).collect()
    };
    family(
        out,
        "skiff_service_packets_total",
        "counter",
        "Packets clients sent through a frontend (client to service direction).",
        &samples(|f| f.traffic.packets),
    );
    family(
        out,
        "skiff_service_bytes_total",
        "counter",
        "Bytes clients sent through a frontend.",
        &samples(|f| f.traffic.bytes),
    );
    family(
        out,
        "skiff_service_new_connections_total",
        "counter",
        "Flows (TCP connections, UDP flows) a frontend balanced to a backend.",
        &samples(|f| f.traffic.new_flows),
    );
}

/// The whole exposition.
pub async fn render(status: &Status) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "skiff_ready",
        "gauge",
        "1 once the first listing of Services and EndpointSlices is applied.",
        &[(String::new(), u8::from(status.is_ready()).to_string())],
    );
    let state = status.state();
    family(
        &mut out,
        "skiff_frontends",
        "gauge",
        "Frontends (VIP:port/protocol) the agent wants programmed.",
        &[(String::new(), state.frontends.len().to_string())],
    );
    out.push_str(&status.reconcile_histogram().render(
        "skiff_reconcile_duration_seconds",
        "Time to apply one batch of Service and EndpointSlice changes to the datapath.",
    ));
    if let Some(pin_dir) = &status.pin_dir {
        datapath_families(&mut out, pin_dir, &state);
    }
    if let Some(client) = &status.client {
        pod_families(&mut out, client, &status.node).await;
    }
    out
}

fn datapath_families(out: &mut String, pin_dir: &std::path::Path, state: &inspect::svc::AgentState) {
    match inspect::svc::LiveMaps::open(pin_dir) {
        Ok(live) => frontend_families(out, &inspect::svc::list(&live, Some(state))),
        Err(e) => {
            let _ = writeln!(out, "# skiff: frontend counters unavailable: {e:#}");
        }
    }
    match inspect::drops::read(pin_dir) {
        Ok(drops) => family(
            out,
            "skiff_drops_total",
            "counter",
            "Packets the datapath dropped or rejected, by reason.",
            &drops.iter().map(|d| (labels(&[("reason", &d.name)]), d.count.to_string())).collect::<Vec<_>>(),
        ),
        Err(e) => {
            let _ = writeln!(out, "# skiff: drop counters unavailable: {e:#}");
        }
    }
    match inspect::maps::read(pin_dir) {
        Ok(maps) => {
            let ct = maps.iter().find(|m| m.name == names::MAP_CT).and_then(|m| m.entries).unwrap_or(0);
            family(
                out,
                "skiff_conntrack_entries",
                "gauge",
                "Flows in the load balancer's conntrack.",
                &[(String::new(), ct.to_string())],
            );
            let keyed: Vec<_> = maps.iter().filter(|m| m.entries.is_some()).collect();
            family(
                out,
                "skiff_map_entries",
                "gauge",
                "Entries in each keyed datapath map.",
                &keyed
                    .iter()
                    .map(|m| (labels(&[("map", m.name)]), m.entries.unwrap_or(0).to_string()))
                    .collect::<Vec<_>>(),
            );
            family(
                out,
                "skiff_map_capacity",
                "gauge",
                "Capacity (max_entries) of each keyed datapath map.",
                &keyed
                    .iter()
                    .map(|m| (labels(&[("map", m.name)]), m.max_entries.to_string()))
                    .collect::<Vec<_>>(),
            );
        }
        Err(e) => {
            let _ = writeln!(out, "# skiff: map fill unavailable: {e:#}");
        }
    }
}

async fn pod_families(out: &mut String, client: &kube::Client, node: &str) {
    let pods: Api<Pod> = Api::all(client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    match pods.list(&params).await {
        Ok(list) => {
            let mut phases: BTreeMap<String, u64> = ["Pending", "Running", "Succeeded", "Failed", "Unknown"]
                .iter()
                .map(|p| ((*p).to_owned(), 0))
                .collect();
            for pod in list.items {
                let phase = pod.status.and_then(|s| s.phase).unwrap_or_else(|| "Pending".to_owned());
                *phases.entry(phase).or_insert(0) += 1;
            }
            family(
                out,
                "skiff_pods",
                "gauge",
                "Pods bound to this node, by phase.",
                &phases.iter().map(|(p, n)| (labels(&[("phase", p)]), n.to_string())).collect::<Vec<_>>(),
            );
        }
        Err(e) => {
            let _ = writeln!(out, "# skiff: pods by phase unavailable: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::svc::Traffic;

    #[test]
    fn frontend_counters_are_labelled_by_service() {
        let f = LiveFrontend {
            frontend: "10.96.0.10:80/TCP".into(),
            service: Some("default/web".into()),
            kind: "ClusterIP",
            row: 0,
            flags: vec![],
            affinity_timeout_s: None,
            traffic: Traffic { packets: 7, bytes: 700, new_flows: 2 },
            backends: vec![],
        };
        let mut out = String::new();
        frontend_families(&mut out, &[f]);
        assert!(
            out.contains(
                "skiff_service_packets_total{frontend=\"10.96.0.10:80/TCP\",namespace=\"default\",service=\"web\",type=\"ClusterIP\"} 7\n"
            ),
            "{out}"
        );
        assert!(out.contains("# TYPE skiff_service_new_connections_total counter\n"), "{out}");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
