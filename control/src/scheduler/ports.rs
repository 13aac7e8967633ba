//! Host ports: a pod that binds `hostPort` needs the (protocol, host IP, port) free on its node.

use k8s_openapi::api::core::v1::PodSpec;

/// The host IP that means "every address".
const ALL_ADDRESSES: &str = "0.0.0.0";

/// One host port a pod binds, with Kubernetes' defaults filled in (protocol `TCP`, host IP
/// `0.0.0.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two bindings collide: same protocol and port, and the same IP or either on
    /// `0.0.0.0` (upstream's `HostPortInfo.CheckConflict`, which compares IPs as written).
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == ALL_ADDRESSES || other.ip == ALL_ADDRESSES)
    }
}

/// The host ports a pod binds: those of its app containers and of its sidecars (init containers
/// with `restartPolicy: Always`, which run for the pod's whole life); ordinary init containers
/// have finished before the app starts.
pub(crate) fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    let sidecars =
        spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    sidecars
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|port| *port > 0)?;
            let or_default = |v: Option<&String>, default: &str| match v.map(String::as_str) {
                None | Some("") => default.to_string(),
                Some(v) => v.to_string(),
            };
            Some(HostPort {
                protocol: or_default(p.protocol.as_ref(), "TCP"),
                ip: or_default(p.host_ip.as_ref(), ALL_ADDRESSES),
                port,
            })
        })
        .collect()
}

/// Whether any wanted port collides with one already used on the node.
pub(crate) fn any_conflict(wanted: &[HostPort], used: &[HostPort]) -> bool {
    wanted.iter().any(|w| used.iter().any(|u| w.conflicts_with(u)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::pod;
    use serde_json::json;

    fn port(protocol: &str, ip: &str, port: i32) -> HostPort {
        HostPort { protocol: protocol.into(), ip: ip.into(), port }
    }

    #[test]
    fn reads_container_and_sidecar_host_ports_with_defaults() {
        let p = pod(
            "p",
            json!({
                "initContainers": [
                    {"name": "setup", "image": "i", "ports": [{"containerPort": 1, "hostPort": 1001}]},
                    {"name": "proxy", "image": "i", "restartPolicy": "Always",
                     "ports": [{"containerPort": 2, "hostPort": 1002, "protocol": "UDP"}]},
                ],
                "containers": [{"name": "app", "image": "i", "ports": [
                    {"containerPort": 80},
                    {"containerPort": 81, "hostPort": 8081, "hostIP": "10.0.0.1"},
                    {"containerPort": 82, "hostPort": 0},
                ]}],
            }),
        );
        let ports = host_ports(p.spec.as_ref().expect("spec"));
        assert_eq!(ports, vec![port("UDP", "0.0.0.0", 1002), port("TCP", "10.0.0.1", 8081)]);
    }

    #[test]
    fn conflicts() {
        let any = port("TCP", "0.0.0.0", 80);
        let one = port("TCP", "10.0.0.1", 80);
        let other = port("TCP", "10.0.0.2", 80);
        assert!(any.conflicts_with(&one), "0.0.0.0 takes every address");
        assert!(one.conflicts_with(&any));
        assert!(one.conflicts_with(&one.clone()));
        assert!(!one.conflicts_with(&other), "different addresses coexist");
        assert!(!any.conflicts_with(&port("UDP", "0.0.0.0", 80)), "different protocols coexist");
        assert!(!any.conflicts_with(&port("TCP", "0.0.0.0", 81)));
        assert!(any_conflict(&[other.clone(), one.clone()], std::slice::from_ref(&one)));
        assert!(!any_conflict(&[other], &[one]));
        assert!(!any_conflict(&[], &[any]));
    }
}
