//! Authorization: may this user do this? The node authorizer first (for `system:nodes`), then
//! RBAC over the stored Roles, ClusterRoles and their bindings; members of `system:masters` may
//! do anything (as in kube-apiserver). A refusal is a 403 Status naming the verb and resource.

pub mod attributes;
pub mod node;
pub mod policy;
pub mod rbac;

use std::sync::{Arc, Mutex};

use axum::{
    extract::{Query, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

pub use self::attributes::Attributes;
use crate::{
    api::{ApiServer, registry},
    auth::UserInfo,
    store::{Revision, Store},
};

/// The outcome, with who or what decided (for the audit log and 403 messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Deny(String),
}

/// Decides requests against the store's RBAC objects (re-read when the store has moved on).
#[derive(Debug)]
pub struct Authorizer<S> {
    server: Arc<ApiServer<S>>,
    cache: Mutex<Option<(Revision, Arc<rbac::Policy>)>>,
}

struct StoreGraph<'a, S>(&'a S);

impl<S: Store> node::Graph for StoreGraph<'_, S> {
    fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let key = registry::find("", "v1", "pods")?.key(Some(namespace), name);
        serde_json::from_slice(&self.0.get(&key)?.value).ok()
    }

    fn pods_in(&self, namespace: &str) -> Vec<Value> {
        let Some(pods) = registry::find("", "v1", "pods") else { return Vec::new() };
        let (objects, _) = self.0.list(&format!("{}{namespace}/", pods.prefix()));
        objects.iter().filter_map(|o| serde_json::from_slice(&o.value).ok()).collect()
    }
}

impl<S: Store + Clone> Authorizer<S> {
    pub fn new(server: Arc<ApiServer<S>>) -> Self {
        Self { server, cache: Mutex::new(None) }
    }

    fn policy(&self) -> Arc<rbac::Policy> {
        let store = &self.server.store;
        let now = store.revision();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, policy)) = cache.as_ref()
            && *at == now
        {
            return policy.clone();
        }
        let policy = Arc::new(load_policy(store));
        *cache = Some((now, policy.clone()));
        policy
    }

    pub fn authorize(&self, attrs: &Attributes) -> Verdict {
        decide(&self.server.store, attrs, || self.policy())
    }
}

/// The RBAC objects stored in `store`.
fn load_policy<S: Store>(store: &S) -> rbac::Policy {
    let read = |plural: &str| -> Vec<Value> {
        let Some(r) = registry::find("rbac.authorization.k8s.io", "v1", plural) else {
            return Vec::new();
        };
        store.list(&r.prefix()).0.iter().filter_map(|o| serde_json::from_slice(&o.value).ok()).collect()
    };
    rbac::Policy {
        roles: read("roles"),
        cluster_roles: read("clusterroles"),
        role_bindings: read("rolebindings"),
        cluster_role_bindings: read("clusterrolebindings"),
    }
}

/// The decision on `attrs`: `system:masters`, then the node authorizer over the pods in `store`,
/// then RBAC (`policy`, asked for only when it is needed).
fn decide<S: Store, P: std::ops::Deref<Target = rbac::Policy>>(
    store: &S,
    attrs: &Attributes,
    policy: impl FnOnce() -> P,
) -> Verdict {
    if attrs.user.groups.iter().any(|g| g == "system:masters") {
        return Verdict::Allow("group system:masters".into());
    }
    match node::decide(attrs, &StoreGraph(store)) {
        node::Decision::Allow => return Verdict::Allow("node authorizer".into()),
        node::Decision::Deny(why) => return Verdict::Deny(why),
        node::Decision::NoOpinion => {}
    }
    match policy().allows(attrs) {
        Some(by) => Verdict::Allow(by),
        None => Verdict::Deny(String::new()),
    }
}

/// The decision on `attrs` against what `store` holds now, without a cache (SubjectAccessReviews).
pub fn review<S: Store>(store: &S, attrs: &Attributes) -> Verdict {
    decide(store, attrs, || Box::new(load_policy(store)))
}

fn forbidden(attrs: &Attributes, why: &str) -> Response {
    let mut details = json!({});
    if let Some(r) = &attrs.resource {
        details = json!({"name": r.name, "group": r.group, "kind": r.resource});
    }
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": attrs.forbidden_message(why), "reason": "Forbidden", "details": details, "code": 403,
    });
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/json")], status.to_string()).into_response()
}

/// Middleware (after authentication): refuses what the user may not do.
pub async fn middleware<S: Store + Clone>(
    State(authz): State<Arc<Authorizer<S>>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    // Unauthenticated requests reach here only for the public paths.
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else { return next.run(req).await };
    let attrs = Attributes::of(&user, req.method(), req.uri().path(), &query);
    match authz.authorize(&attrs) {
        Verdict::Allow(by) => {
            tracing::debug!(user = %user.name, verb = %attrs.verb, path = %attrs.path, %by, "allowed");
            next.run(req).await
        }
        Verdict::Deny(why) => {
            tracing::info!(user = %user.name, verb = %attrs.verb, path = %attrs.path, "forbidden");
            forbidden(&attrs, &why)
        }
    }
}
