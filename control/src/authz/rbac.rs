//! RBAC (rbac.authorization.k8s.io/v1): Roles and ClusterRoles hold rules, RoleBindings and
//! ClusterRoleBindings grant them to users, groups and ServiceAccounts. A RoleBinding grants only
//! inside its namespace, whether it refers to a Role there or to a ClusterRole.

use serde_json::Value;

use super::attributes::{Attributes, ResourceAttributes};
use crate::auth::UserInfo;

/// The RBAC objects, as stored.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub roles: Vec<Value>,
    pub cluster_roles: Vec<Value>,
    pub role_bindings: Vec<Value>,
    pub cluster_role_bindings: Vec<Value>,
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn has(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    if !has(&strings(&rule["verbs"]), &attrs.verb) {
        return false;
    }
    match &attrs.resource {
        None => strings(&rule["nonResourceURLs"]).iter().any(|u| {
            *u == "*"
                || *u == attrs.path
                || u.strip_suffix('*').is_some_and(|prefix| attrs.path.starts_with(prefix))
        }),
        Some(r) => resource_matches(rule, r),
    }
}

fn resource_matches(rule: &Value, r: &ResourceAttributes) -> bool {
    if !has(&strings(&rule["apiGroups"]), &r.group) {
        return false;
    }
    let resources = strings(&rule["resources"]);
    let ok = if r.subresource.is_empty() {
        has(&resources, &r.resource)
    } else {
        let combined = format!("{}/{}", r.resource, r.subresource);
        resources.iter().any(|x| {
            *x == "*"
                || *x == combined
                || *x == format!("{}/*", r.resource)
                || *x == format!("*/{}", r.subresource)
        })
    };
    if !ok {
        return false;
    }
    let names = strings(&rule["resourceNames"]);
    names.is_empty() || (!r.name.is_empty() && names.contains(&r.name.as_str()))
}

/// Whether a binding's subjects include `user`.
fn binds(binding: &Value, user: &UserInfo) -> bool {
    binding["subjects"].as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| {
            let name = s["name"].as_str().unwrap_or("");
            match s["kind"].as_str() {
                Some("User") => name == user.name,
                Some("Group") => user.groups.iter().any(|g| g == name),
                Some("ServiceAccount") => {
                    let ns = s["namespace"].as_str().unwrap_or("");
                    user.name == format!("system:serviceaccount:{ns}:{name}")
                }
                _ => false,
            }
        })
    })
}

fn named<'a>(objects: &'a [Value], name: &str, namespace: Option<&str>) -> Option<&'a Value> {
    objects.iter().find(|o| {
        o["metadata"]["name"].as_str() == Some(name)
            && namespace.is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
    })
}

fn rules_allow(role: Option<&Value>, attrs: &Attributes) -> bool {
    role.and_then(|r| r["rules"].as_array())
        .is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, attrs)))
}

impl Policy {
    /// Whether some binding grants the request; with the name of the role that did.
    pub fn allows(&self, attrs: &Attributes) -> Option<String> {
        for b in self.cluster_role_bindings.iter().filter(|b| binds(b, &attrs.user)) {
            let role = b["roleRef"]["name"].as_str().unwrap_or("");
            if b["roleRef"]["kind"] == "ClusterRole"
                && rules_allow(named(&self.cluster_roles, role, None), attrs)
            {
                return Some(format!("ClusterRoleBinding {}", b["metadata"]["name"].as_str().unwrap_or("")));
            }
        }
        let namespace = attrs.resource.as_ref().map(|r| r.namespace.as_str()).filter(|ns| !ns.is_empty())?;
        for b in self.role_bindings.iter().filter(|b| b["metadata"]["namespace"].as_str() == Some(namespace))
        {
            if !binds(b, &attrs.user) {
                continue;
            }
            let role = b["roleRef"]["name"].as_str().unwrap_or("");
            let found = match b["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => named(&self.cluster_roles, role, None),
                Some("Role") => named(&self.roles, role, Some(namespace)),
                _ => None,
            };
            if rules_allow(found, attrs) {
                return Some(format!(
                    "RoleBinding {namespace}/{}",
                    b["metadata"]["name"].as_str().unwrap_or("")
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::http::Method;
    use serde_json::json;

    use super::*;

    fn attrs(user: &str, groups: &[&str], method: Method, path: &str) -> Attributes {
        let user = UserInfo { name: user.into(), groups: groups.iter().map(|g| (*g).to_owned()).collect() };
        Attributes::of(&user, &method, path, &HashMap::new())
    }

    fn policy() -> Policy {
        Policy {
            roles: vec![json!({"metadata": {"name": "cm-reader", "namespace": "team"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["settings"]}]})],
            cluster_roles: vec![
                json!({"metadata": {"name": "pod-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]}),
                json!({"metadata": {"name": "discovery"}, "rules": [{"nonResourceURLs": ["/api", "/apis/*"], "verbs": ["get"]}]}),
            ],
            role_bindings: vec![
                json!({"metadata": {"name": "b1", "namespace": "team"}, "roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
                    "subjects": [{"kind": "User", "name": "alice"}]}),
                json!({"metadata": {"name": "b2", "namespace": "team"}, "roleRef": {"kind": "Role", "name": "cm-reader"},
                    "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team"}]}),
            ],
            cluster_role_bindings: vec![
                json!({"metadata": {"name": "d"}, "roleRef": {"kind": "ClusterRole", "name": "discovery"},
                "subjects": [{"kind": "Group", "name": "system:authenticated"}]}),
            ],
        }
    }

    #[test]
    fn bindings_grant_their_rules_in_their_scope_only() {
        let p = policy();
        assert!(p.allows(&attrs("alice", &[], Method::GET, "/api/v1/namespaces/team/pods/x")).is_some());
        assert!(p.allows(&attrs("alice", &[], Method::GET, "/api/v1/namespaces/team/pods/x/log")).is_some());
        assert!(
            p.allows(&attrs("alice", &[], Method::GET, "/api/v1/namespaces/other/pods/x")).is_none(),
            "another namespace"
        );
        assert!(
            p.allows(&attrs("alice", &[], Method::DELETE, "/api/v1/namespaces/team/pods/x")).is_none(),
            "another verb"
        );
        assert!(
            p.allows(&attrs("alice", &[], Method::PATCH, "/api/v1/namespaces/team/pods/x/status")).is_none()
        );
        assert!(
            p.allows(&attrs("bob", &[], Method::GET, "/api/v1/namespaces/team/pods/x")).is_none(),
            "another user"
        );
        let bot = "system:serviceaccount:team:bot";
        assert!(
            p.allows(&attrs(bot, &[], Method::GET, "/api/v1/namespaces/team/configmaps/settings")).is_some()
        );
        assert!(
            p.allows(&attrs(bot, &[], Method::GET, "/api/v1/namespaces/team/configmaps/other")).is_none(),
            "resourceNames"
        );
        assert!(
            p.allows(&attrs(bot, &[], Method::GET, "/api/v1/namespaces/team/configmaps")).is_none(),
            "a list names nothing"
        );
        let anyone = ["system:authenticated"];
        assert!(p.allows(&attrs("carol", &anyone, Method::GET, "/api")).is_some());
        assert!(p.allows(&attrs("carol", &anyone, Method::GET, "/apis/apps/v1")).is_some());
        assert!(p.allows(&attrs("carol", &anyone, Method::GET, "/openapi/v2")).is_none());
    }
}
