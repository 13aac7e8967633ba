//! The default RBAC policy every cluster starts with (a subset of kube-apiserver's bootstrap
//! policy, same names): cluster-admin (bound to group system:masters), admin, edit and view (for
//! RoleBindings), system:discovery (bound to every authenticated user), and the scheduler's and
//! controller manager's roles bound to their identities from the PKI.

use serde_json::{Value, json};

const CORE_NAMESPACED: [&str; 11] = [
    "pods",
    "pods/log",
    "pods/status",
    "services",
    "endpoints",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "events",
    "persistentvolumeclaims",
    "resourcequotas",
];

const APPS: [&str; 5] =
    ["deployments", "deployments/scale", "replicasets", "replicasets/scale", "daemonsets"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": rules})
}

fn binding(name: &str, role: &str, kind: &str, subject: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}]})
}

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

/// ClusterRoles of the default policy.
pub fn cluster_roles() -> Vec<Value> {
    let view_core: Vec<&str> = CORE_NAMESPACED.iter().copied().filter(|r| *r != "secrets").collect();
    let mut edit_verbs = WRITE.to_vec();
    edit_verbs.push("deletecollection");
    vec![
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), json!({"nonResourceURLs": ["*"], "verbs": ["*"]})],
        ),
        cluster_role(
            "admin",
            vec![
                rule(&[""], &CORE_NAMESPACED, &edit_verbs),
                rule(&["apps"], &APPS, &edit_verbs),
                rule(&["discovery.k8s.io"], &["endpointslices"], &edit_verbs),
                rule(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], &edit_verbs),
            ],
        ),
        cluster_role(
            "edit",
            vec![
                rule(&[""], &CORE_NAMESPACED, &edit_verbs),
                rule(&["apps"], &APPS, &edit_verbs),
                rule(&["discovery.k8s.io"], &["endpointslices"], &edit_verbs),
            ],
        ),
        cluster_role(
            "view",
            vec![
                rule(&[""], &view_core, &READ),
                rule(&["apps"], &APPS, &READ),
                rule(&["discovery.k8s.io"], &["endpointslices"], &READ),
            ],
        ),
        cluster_role(
            "system:discovery",
            vec![
                json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz",
                "/version", "/version/", "/openapi", "/openapi/*"], "verbs": ["get"]}),
            ],
        ),
        cluster_role(
            "system:kube-scheduler",
            vec![
                rule(&[""], &["pods", "nodes", "namespaces", "services"], &READ),
                rule(&[""], &["pods/binding", "bindings"], &["create"]),
                rule(&[""], &["pods/status"], &["update", "patch"]),
                rule(&[""], &["events"], &["create", "update", "patch"]),
                rule(&["coordination.k8s.io"], &["leases"], &["get", "create", "update"]),
                rule(&["apps"], &["replicasets", "daemonsets"], &READ),
            ],
        ),
        cluster_role("system:kube-controller-manager", vec![rule(&["*"], &["*"], &["*"])]),
        cluster_role(
            "system:basic-user",
            vec![rule(&["authorization.k8s.io"], &["selfsubjectaccessreviews"], &["create"])],
        ),
        cluster_role(
            "system:kubelet-api-admin",
            vec![
                rule(&[""], &["nodes"], &["get", "list", "watch", "proxy"]),
                rule(
                    &[""],
                    &["nodes/proxy", "nodes/log", "nodes/stats", "nodes/metrics", "nodes/spec"],
                    &["*"],
                ),
            ],
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(&["authorization.k8s.io"], &["subjectaccessreviews"], &["create"]),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &["create", "get", "list", "watch"],
            )],
        ),
    ]
}

/// ClusterRoleBindings of the default policy.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", "Group", "system:masters"),
        binding("system:discovery", "system:discovery", "Group", "system:authenticated"),
        binding("system:basic-user", "system:basic-user", "Group", "system:authenticated"),
        binding("system:kube-scheduler", "system:kube-scheduler", "User", "system:kube-scheduler"),
        // The API server reaching node agents (kubectl logs) as kube-apiserver-kubelet-client.
        binding(
            "system:kube-apiserver-kubelet-client",
            "system:kubelet-api-admin",
            "User",
            crate::pki::KUBELET_CLIENT_USER,
        ),
        // Joining nodes ask for their certificate; nodes renew theirs the same way.
        binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", "Group", "system:bootstrappers"),
        binding("system:node-certificate-renewal", "system:node-bootstrapper", "Group", "system:nodes"),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            "User",
            "system:kube-controller-manager",
        ),
    ]
}
