//! What a request asks to do, in the terms authorizers decide on (Kubernetes' request
//! attributes): a verb on a resource (group, resource, subresource, namespace, name), or a verb on
//! a non-resource path.

use std::collections::HashMap;

use axum::http::Method;

use crate::{api, auth::UserInfo};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// get, list, watch, create, update, patch, delete, deletecollection (resources); get, post,
    /// put, patch, delete (non-resource paths).
    pub verb: String,
    /// `None` for a non-resource request.
    pub resource: Option<ResourceAttributes>,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    /// The attributes of `method path?query` by `user`.
    pub fn of(user: &UserInfo, method: &Method, path: &str, query: &HashMap<String, String>) -> Self {
        let Some(target) = api::parse_path(path) else {
            return Self {
                user: user.clone(),
                verb: method.as_str().to_ascii_lowercase(),
                resource: None,
                path: path.to_owned(),
            };
        };
        let named = target.name.is_some();
        let watch = matches!(query.get("watch").map(String::as_str), Some("1" | "true" | "True" | "t"));
        let verb = match *method {
            Method::GET | Method::HEAD if watch => "watch",
            Method::GET | Method::HEAD if named => "get",
            Method::GET | Method::HEAD => "list",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if named => "delete",
            Method::DELETE => "deletecollection",
            _ => "unknown",
        };
        // A POST to a named object's subresource (binding, eviction) creates that subresource.
        Self {
            user: user.clone(),
            verb: verb.to_owned(),
            resource: Some(ResourceAttributes {
                group: target.resource.group.to_owned(),
                resource: target.resource.plural.to_owned(),
                subresource: target.subresource.unwrap_or_default(),
                namespace: target.namespace.unwrap_or_default(),
                name: target.name.unwrap_or_default(),
            }),
            path: path.to_owned(),
        }
    }

    /// How kube-apiserver words a refusal: `pods "web" is forbidden: User "u" cannot get resource
    /// "pods" in API group "" in the namespace "default"`.
    pub fn forbidden_message(&self, why: &str) -> String {
        let user = &self.user.name;
        let tail = if why.is_empty() { String::new() } else { format!(": {why}") };
        match &self.resource {
            None => format!("forbidden: User \"{user}\" cannot {} path \"{}\"{tail}", self.verb, self.path),
            Some(r) => {
                let what = if r.subresource.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}/{}", r.resource, r.subresource)
                };
                let subject = if r.name.is_empty() { what.clone() } else { format!("{what} \"{}\"", r.name) };
                let scope = if r.namespace.is_empty() {
                    " at the cluster scope".to_owned()
                } else {
                    format!(" in the namespace \"{}\"", r.namespace)
                };
                format!(
                    "{subject} is forbidden: User \"{user}\" cannot {} resource \"{what}\" in API group \"{}\"{scope}{tail}",
                    self.verb, r.group
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserInfo {
        UserInfo { name: "u".into(), groups: vec![] }
    }

    fn attrs(method: Method, path: &str, query: &[(&str, &str)]) -> Attributes {
        let q = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Attributes::of(&user(), &method, path, &q)
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        let verb = |a: Attributes| a.verb;
        assert_eq!(verb(attrs(Method::GET, "/api/v1/namespaces/d/pods", &[])), "list");
        assert_eq!(verb(attrs(Method::GET, "/api/v1/namespaces/d/pods", &[("watch", "true")])), "watch");
        assert_eq!(verb(attrs(Method::GET, "/api/v1/namespaces/d/pods/p", &[])), "get");
        assert_eq!(verb(attrs(Method::DELETE, "/api/v1/namespaces/d/pods", &[])), "deletecollection");
        assert_eq!(verb(attrs(Method::PATCH, "/api/v1/nodes/n1/status", &[])), "patch");
        assert_eq!(verb(attrs(Method::GET, "/healthz", &[])), "get");
        let a = attrs(Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", &[]);
        let r = a.resource.clone().expect("resource");
        assert_eq!(
            (r.group.as_str(), r.resource.as_str(), r.namespace.as_str(), r.name.as_str()),
            ("coordination.k8s.io", "leases", "kube-node-lease", "n1")
        );
        assert_eq!(
            a.forbidden_message(""),
            "leases \"n1\" is forbidden: User \"u\" cannot update resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\""
        );
        assert!(attrs(Method::GET, "/openapi/v2", &[]).resource.is_none());
    }
}
