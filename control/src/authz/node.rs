//! The node authorizer: what a kubelet (user `system:node:<name>`, group `system:nodes`) may do,
//! decided from the graph of its pods, as kube-apiserver's Node authorizer does. A node may read
//! Services, EndpointSlices, Endpoints, Nodes and Pods; write its own Node and its own Lease;
//! write the status of, and delete, pods bound to it; create events; and read only the Secrets and
//! ConfigMaps its own pods use (and `kube-root-ca.crt` wherever it runs pods); create tokens
//! only for ServiceAccounts its pods run as (that the token is bound to such a pod is checked
//! when the TokenRequest is served). Anything else is left to RBAC.

use serde_json::Value;

use super::attributes::{Attributes, ResourceAttributes};

/// What the node authorizer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, with the reason (kube-apiserver's words where it has them).
    Deny(String),
    /// Not a node request, or not one this authorizer rules on: RBAC decides.
    NoOpinion,
}

/// The node a user is, if it is one.
pub fn node_name(attrs: &Attributes) -> Option<&str> {
    if !attrs.user.groups.iter().any(|g| g == "system:nodes") {
        return None;
    }
    attrs.user.name.strip_prefix("system:node:").filter(|n| !n.is_empty())
}

/// Object lookups the decision needs: one object by its API path, and a namespace's pods.
pub trait Graph {
    fn pod(&self, namespace: &str, name: &str) -> Option<Value>;
    fn pods_in(&self, namespace: &str) -> Vec<Value>;
}

const READ: [&str; 3] = ["get", "list", "watch"];

fn bound_to(pod: &Value, node: &str) -> bool {
    pod["spec"]["nodeName"].as_str() == Some(node)
}

/// Whether `pod` uses the Secret (`secret` true) or ConfigMap named `name`.
pub fn pod_uses(pod: &Value, secret: bool, name: &str) -> bool {
    let spec = &pod["spec"];
    let (volume_kind, ref_key, selector) = if secret {
        ("secret", "secretName", "secretKeyRef")
    } else {
        ("configMap", "name", "configMapKeyRef")
    };
    let env_from = if secret { "secretRef" } else { "configMapRef" };
    let named = |v: &Value| v.as_str() == Some(name);
    let volumes = spec["volumes"].as_array().into_iter().flatten().any(|v| {
        named(&v[volume_kind][ref_key])
            || v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| named(&s[if secret { "secret" } else { "configMap" }]["name"]))
    });
    let containers =
        ["containers", "initContainers"].iter().flat_map(|k| spec[*k].as_array().into_iter().flatten());
    let env = containers.clone().any(|c| {
        c["env"].as_array().into_iter().flatten().any(|e| named(&e["valueFrom"][selector]["name"]))
            || c["envFrom"].as_array().into_iter().flatten().any(|e| named(&e[env_from]["name"]))
    });
    let pull = secret && spec["imagePullSecrets"].as_array().into_iter().flatten().any(|s| named(&s["name"]));
    volumes || env || pull
}

/// The decision for `attrs` if its user is a node.
pub fn decide(attrs: &Attributes, graph: &impl Graph) -> Decision {
    let Some(node) = node_name(attrs) else { return Decision::NoOpinion };
    let Some(r) = &attrs.resource else { return Decision::NoOpinion };
    let verb = attrs.verb.as_str();
    let deny = |why: String| Decision::Deny(why);
    match (r.group.as_str(), r.resource.as_str()) {
        ("", "services" | "endpoints") | ("discovery.k8s.io", "endpointslices") if READ.contains(&verb) => {
            Decision::Allow
        }
        ("", "nodes") => nodes(r, verb, node),
        ("coordination.k8s.io", "leases") if r.namespace == "kube-node-lease" => {
            if verb == "create" || ((r.name == node) && ["get", "update", "patch", "delete"].contains(&verb))
            {
                Decision::Allow
            } else {
                deny(format!("node \"{node}\" can only access its own lease"))
            }
        }
        ("", "pods") => pods(r, verb, node, graph),
        ("", "events") | ("events.k8s.io", "events") if ["create", "update", "patch"].contains(&verb) => {
            Decision::Allow
        }
        // Authorization delegation: the agent asks who may read its logs and metrics.
        ("authorization.k8s.io", "subjectaccessreviews") if verb == "create" => Decision::Allow,
        ("", "serviceaccounts") if r.subresource == "token" && verb == "create" => {
            // A pod without an account (a mirror pod) runs as none: admission gave every other
            // pod its account, so reading "none" as `default` would hand out foreign tokens.
            let runs_as = |p: &Value| p["spec"]["serviceAccountName"].as_str() == Some(r.name.as_str());
            if graph.pods_in(&r.namespace).iter().any(|p| bound_to(p, node) && runs_as(p)) {
                Decision::Allow
            } else {
                deny(format!("no relationship found between node '{node}' and this object"))
            }
        }
        ("", kind @ ("secrets" | "configmaps")) => {
            if verb != "get" {
                return deny(format!("node \"{node}\" can only get individual {kind}"));
            }
            // Every pod may project the cluster CA, whether or not its spec names it yet.
            let root_ca = kind == "configmaps" && r.name == "kube-root-ca.crt";
            let used = graph
                .pods_in(&r.namespace)
                .iter()
                .any(|p| bound_to(p, node) && (root_ca || pod_uses(p, kind == "secrets", &r.name)));
            if used {
                Decision::Allow
            } else {
                deny(format!("no relationship found between node '{node}' and this object"))
            }
        }
        _ => Decision::NoOpinion,
    }
}

fn nodes(r: &ResourceAttributes, verb: &str, node: &str) -> Decision {
    // Node objects and their status only: nodes/proxy, nodes/log, nodes/metrics and the like
    // (another agent's endpoint) are RBAC's to grant.
    if !matches!(r.subresource.as_str(), "" | "status") {
        return Decision::NoOpinion;
    }
    match verb {
        "get" | "list" | "watch" | "create" => Decision::Allow,
        "update" | "patch" if r.name == node => Decision::Allow,
        _ => Decision::Deny(format!("node \"{node}\" is not allowed to modify node \"{}\"", r.name)),
    }
}

fn pods(r: &ResourceAttributes, verb: &str, node: &str, graph: &impl Graph) -> Decision {
    if r.subresource.is_empty() && (READ.contains(&verb) || verb == "create") {
        // Reads, and mirror pods of static pods (which name this node; admission's business).
        return Decision::Allow;
    }
    let writes_own = match (r.subresource.as_str(), verb) {
        ("status", "update" | "patch" | "get") | ("", "delete") => {
            graph.pod(&r.namespace, &r.name).is_some_and(|p| bound_to(&p, node))
        }
        _ => false,
    };
    if writes_own {
        Decision::Allow
    } else {
        Decision::Deny(format!("node \"{node}\" can only {verb} pods bound to it"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::http::Method;
    use serde_json::json;

    use super::*;
    use crate::auth::UserInfo;

    struct Pods(Vec<Value>);

    impl Graph for Pods {
        fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
            self.0
                .iter()
                .find(|p| p["metadata"]["namespace"] == namespace && p["metadata"]["name"] == name)
                .cloned()
        }
        fn pods_in(&self, namespace: &str) -> Vec<Value> {
            self.0.iter().filter(|p| p["metadata"]["namespace"] == namespace).cloned().collect()
        }
    }

    fn graph() -> Pods {
        Pods(vec![
            json!({"metadata": {"name": "on-a", "namespace": "d"}, "spec": {"nodeName": "a",
                "volumes": [{"name": "v", "secret": {"secretName": "a-secret"}}],
                "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "a-config"}}]}]}}),
            json!({"metadata": {"name": "web-a", "namespace": "e"}, "spec": {"nodeName": "a", "serviceAccountName": "default",
                "containers": [{"name": "c"}]}}),
            json!({"metadata": {"name": "on-b", "namespace": "d"}, "spec": {"nodeName": "b", "serviceAccountName": "robot",
                "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "b-secret", "key": "k"}}}]}]}}),
        ])
    }

    fn as_node(node: &str, method: Method, path: &str) -> Decision {
        let user = UserInfo { name: format!("system:node:{node}"), groups: vec!["system:nodes".into()] };
        decide(&Attributes::of(&user, &method, path, &HashMap::new()), &graph())
    }

    #[test]
    fn a_node_writes_only_its_own_node_lease_and_pods() {
        assert_eq!(as_node("a", Method::PATCH, "/api/v1/nodes/a/status"), Decision::Allow);
        assert!(matches!(as_node("a", Method::PATCH, "/api/v1/nodes/b"), Decision::Deny(_)));
        assert!(matches!(as_node("a", Method::DELETE, "/api/v1/nodes/a"), Decision::Deny(_)));
        let lease = |n: &str| format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n}");
        assert_eq!(as_node("a", Method::PUT, &lease("a")), Decision::Allow);
        assert!(matches!(as_node("a", Method::PUT, &lease("b")), Decision::Deny(_)));
        assert_eq!(as_node("a", Method::PATCH, "/api/v1/namespaces/d/pods/on-a/status"), Decision::Allow);
        assert!(matches!(
            as_node("a", Method::PATCH, "/api/v1/namespaces/d/pods/on-b/status"),
            Decision::Deny(_)
        ));
        assert!(
            matches!(as_node("a", Method::PATCH, "/api/v1/namespaces/d/pods/on-a"), Decision::Deny(_)),
            "spec is not the node's"
        );
        assert!(matches!(as_node("a", Method::DELETE, "/api/v1/namespaces/d/pods/on-b"), Decision::Deny(_)));
        assert_eq!(as_node("a", Method::GET, "/api/v1/pods"), Decision::Allow);
        assert_eq!(as_node("a", Method::GET, "/apis/discovery.k8s.io/v1/endpointslices"), Decision::Allow);
    }

    #[test]
    fn agent_endpoints_are_left_to_rbac_and_reviews_may_be_asked() {
        let user = UserInfo { name: "system:node:a".into(), groups: vec!["system:nodes".into()] };
        let on = |group: &str, resource: &str, subresource: &str, name: &str, verb: &str| {
            let resource = ResourceAttributes {
                group: group.into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: String::new(),
                name: name.into(),
            };
            let attrs = Attributes {
                user: user.clone(),
                verb: verb.into(),
                resource: Some(resource),
                path: String::new(),
            };
            decide(&attrs, &graph())
        };
        for sub in ["proxy", "log", "metrics", "stats"] {
            assert_eq!(on("", "nodes", sub, "b", "get"), Decision::NoOpinion, "nodes/{sub}");
            assert_eq!(on("", "nodes", sub, "a", "get"), Decision::NoOpinion, "own nodes/{sub}");
        }
        assert_eq!(on("", "nodes", "", "b", "get"), Decision::Allow);
        assert_eq!(on("authorization.k8s.io", "subjectaccessreviews", "", "", "create"), Decision::Allow);
    }

    #[test]
    fn a_node_reads_only_the_secrets_and_config_maps_of_its_pods() {
        assert_eq!(as_node("a", Method::GET, "/api/v1/namespaces/d/secrets/a-secret"), Decision::Allow);
        assert_eq!(as_node("a", Method::GET, "/api/v1/namespaces/d/configmaps/a-config"), Decision::Allow);
        assert!(matches!(
            as_node("a", Method::GET, "/api/v1/namespaces/d/secrets/b-secret"),
            Decision::Deny(_)
        ));
        assert_eq!(as_node("b", Method::GET, "/api/v1/namespaces/d/secrets/b-secret"), Decision::Allow);
        assert!(
            matches!(as_node("a", Method::GET, "/api/v1/namespaces/d/secrets"), Decision::Deny(_)),
            "no listing"
        );
        assert_eq!(as_node("a", Method::GET, "/apis/apps/v1/deployments"), Decision::NoOpinion);
        assert_eq!(
            as_node("b", Method::GET, "/api/v1/namespaces/d/configmaps/kube-root-ca.crt"),
            Decision::Allow
        );
        assert!(matches!(
            as_node("c", Method::GET, "/api/v1/namespaces/d/configmaps/kube-root-ca.crt"),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn a_node_creates_tokens_only_for_the_accounts_its_pods_run_as() {
        let token = |sa: &str| format!("/api/v1/namespaces/d/serviceaccounts/{sa}/token");
        assert!(
            matches!(as_node("a", Method::POST, &token("default")), Decision::Deny(_)),
            "a pod without an account (a mirror pod) runs as none, not as default"
        );
        let in_e = "/api/v1/namespaces/e/serviceaccounts/default/token";
        assert_eq!(as_node("a", Method::POST, in_e), Decision::Allow);
        assert_eq!(as_node("b", Method::POST, &token("robot")), Decision::Allow);
        assert!(matches!(as_node("a", Method::POST, &token("robot")), Decision::Deny(_)));
        assert!(matches!(as_node("c", Method::POST, &token("default")), Decision::Deny(_)));
    }
}
