//! The ports one pod serves for a Service: each Service port with its `targetPort` resolved
//! against that pod. Named target ports let pods of one Service listen on different numbers,
//! which is why slices are grouped by their port list.

use k8s_openapi::{
    api::{
        core::v1::{Pod, Service, ServicePort},
        discovery::v1::EndpointPort,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

/// The protocol the API server gives a port that names none.
const DEFAULT_PROTOCOL: &str = "TCP";

/// A port list in a form that can be ordered and compared, to group endpoints by it.
pub(super) type PortKey = Vec<(Option<String>, Option<i32>, Option<String>, Option<String>)>;

pub(super) fn key(ports: &[EndpointPort]) -> PortKey {
    ports.iter().map(|p| (p.name.clone(), p.port, p.protocol.clone(), p.app_protocol.clone())).collect()
}

/// `service`'s ports as `pod` serves them, in the Service's order. A port whose named target
/// the pod does not declare (for that protocol) is left out for this pod, as upstream does: a
/// consumer then never sends traffic to a port nothing listens on.
///
/// The name is always set, empty for an unnamed port, matching what upstream writes.
pub(super) fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    ports
        .iter()
        .filter_map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or(DEFAULT_PROTOCOL);
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(target(p, pod, protocol)?),
                protocol: Some(protocol.to_owned()),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// The port number traffic for `port` goes to on `pod`. An unset, zero or empty target means
/// "same as the Service port", which is what the API server defaults it to.
fn target(port: &ServicePort, pod: &Pod, protocol: &str) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) if name.is_empty() => Some(port.port),
        Some(IntOrString::String(name)) => named(pod, name, protocol),
    }
}

/// The container port called `name` with `protocol`, looked up in the app containers and in
/// sidecars (init containers with `restartPolicy: Always`, which keep running like app
/// containers and so may serve a Service).
fn named(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    let sidecars =
        spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or(DEFAULT_PROTOCOL) == protocol
        })
        .map(|p| p.container_port)
}
