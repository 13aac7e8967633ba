//! Tests for the EndpointSlice plan. Plans are applied to a small stand-in for the API server and
//! the world re-planned, the way the controller will use them, so the tests also check that a
//! plan settles (its result plans nothing more).

mod conditions;
mod ownership;
mod ports;
mod slicing;

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::{Endpoint, EndpointSlice},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Plan, plan};

const NS: &str = "default";
const SVC_UID: &str = "svc-uid";

/// A typed object from JSON, the form objects reach the controller in.
fn from<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid fixture")
}

/// Service `web` in [`NS`]: selects `app=web`, port 80 (`http`) to 8080, labelled `team=a`.
fn service() -> Service {
    service_with(json!({}))
}

/// [`service`] with the fields of `spec` replacing the defaults.
fn service_with(spec: Value) -> Service {
    let mut base = json!({
        "metadata": {"name": "web", "namespace": NS, "uid": SVC_UID, "labels": {"team": "a"}},
        "spec": {
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    });
    if let (Some(base), Value::Object(extra)) = (base["spec"].as_object_mut(), spec) {
        base.extend(extra);
    }
    from(base)
}

/// A running pod labelled `app=web` on `node-a` with address `ip`.
fn pod(name: &str, ip: &str, ready: bool) -> Pod {
    from(json!({
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "app"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    }))
}

/// The address of the `i`th pod made by [`pods`].
fn ip(i: usize) -> String {
    format!("10.1.{}.{}", i / 200, i % 200 + 1)
}

/// `n` ready pods `p0`, `p1`, ... with addresses [`ip`]`(0)`, `ip(1)`, ...
fn pods(n: usize) -> Vec<Pod> {
    (0..n).map(|i| pod(&format!("p{i}"), &ip(i), true)).collect()
}

/// Only `node-a` has a zone.
fn zone(node: &str) -> Option<String> {
    (node == "node-a").then(|| "zone-1".to_owned())
}

/// Plans with refs built from owned values.
fn plan_for(service: &Service, pods: &[Pod], slices: &[EndpointSlice]) -> Plan {
    let pods: Vec<&Pod> = pods.iter().collect();
    let slices: Vec<&EndpointSlice> = slices.iter().collect();
    plan(service, &pods, zone, &slices)
}

/// Stands in for the API server's EndpointSlice storage: names created slices from their
/// `generateName`, and refuses updates whose resourceVersion is not the stored one.
#[derive(Debug, Default)]
struct Cluster {
    slices: Vec<EndpointSlice>,
    writes: u64,
}

impl Cluster {
    fn plan(&self, service: &Service, pods: &[Pod]) -> Plan {
        plan_for(service, pods, &self.slices)
    }

    fn apply(&mut self, plan: Plan) {
        for mut slice in plan.create {
            assert_eq!(slice.metadata.name, None, "creates leave the name to the API server");
            let prefix = slice.metadata.generate_name.clone().expect("generateName");
            self.writes += 1;
            slice.metadata.name = Some(format!("{prefix}{:05}", self.writes));
            slice.metadata.resource_version = Some(self.writes.to_string());
            self.slices.push(slice);
        }
        for mut slice in plan.update {
            let i = self.index(slice.metadata.name.as_deref().expect("update names its slice"));
            assert_eq!(slice.metadata.resource_version, self.slices[i].metadata.resource_version);
            self.writes += 1;
            slice.metadata.resource_version = Some(self.writes.to_string());
            self.slices[i] = slice;
        }
        for name in plan.delete {
            let i = self.index(&name);
            self.slices.remove(i);
        }
    }

    /// Plans and applies once, then checks that the result needs nothing more.
    fn settle(&mut self, service: &Service, pods: &[Pod]) {
        let plan = self.plan(service, pods);
        self.apply(plan);
        assert_eq!(self.plan(service, pods), Plan::default(), "a second plan must be empty");
    }

    fn index(&self, name: &str) -> usize {
        self.slices.iter().position(|s| s.metadata.name.as_deref() == Some(name)).expect("slice exists")
    }

    fn get(&self, name: &str) -> &EndpointSlice {
        &self.slices[self.index(name)]
    }
}

/// Every endpoint address in `slices`, sorted, duplicates kept, to check none is lost or doubled.
fn addresses(slices: &[EndpointSlice]) -> Vec<String> {
    let mut all: Vec<String> =
        slices.iter().flat_map(|s| s.endpoints.iter().flatten()).flat_map(|e| e.addresses.clone()).collect();
    all.sort();
    all
}

/// The endpoint with address `ip` in `slices`.
fn endpoint<'a>(slices: &'a [EndpointSlice], ip: &str) -> &'a Endpoint {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .find(|e| e.addresses == [ip])
        .expect("endpoint listed")
}

/// (ready, serving, terminating) of the endpoint with address `ip`.
fn conditions(slices: &[EndpointSlice], ip: &str) -> (Option<bool>, Option<bool>, Option<bool>) {
    let c = endpoint(slices, ip).conditions.clone().unwrap_or_default();
    (c.ready, c.serving, c.terminating)
}

fn endpoint_count(slice: &EndpointSlice) -> usize {
    slice.endpoints.as_ref().map_or(0, Vec::len)
}
