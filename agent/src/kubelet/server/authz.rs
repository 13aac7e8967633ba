//! Who may use the agent's endpoint: decided by the API server through SubjectAccessReviews, as
//! the kubelet's webhook authorization does — `get` on `nodes/<subresource>` of this node for the
//! user and groups of the client certificate. Answers are cached (allowed for 5 minutes, denied
//! for 30 seconds, the kubelet's defaults) so a scrape or a `kubectl logs -f` costs one review.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::{Api, Client, api::PostParams};
use serde_json::json;

/// An authenticated client of the endpoint: its certificate's common name and organizations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);

type Key = (User, String, String);

/// Asks the API server, remembering its answers for a while.
pub struct Authorizer {
    reviews: Api<SubjectAccessReview>,
    node: String,
    cache: Mutex<HashMap<Key, (bool, Instant)>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("node", &self.node).finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(client: Client, node: &str) -> Self {
        Self { reviews: Api::all(client), node: node.to_owned(), cache: Mutex::new(HashMap::new()) }
    }

    /// Whether `user` may `verb` `nodes/<subresource>` of this node. An API server that cannot
    /// be asked means no (the error says why).
    pub async fn allowed(&self, user: &User, verb: &str, subresource: &str) -> Result<bool, String> {
        let key = (user.clone(), verb.to_owned(), subresource.to_owned());
        if let Some((allowed, at)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied() {
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            if at.elapsed() < ttl {
                return Ok(allowed);
            }
        }
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {"user": user.name, "groups": user.groups, "resourceAttributes": {
                "verb": verb, "resource": "nodes", "subresource": subresource, "name": self.node}},
        }))
        .map_err(|e| e.to_string())?;
        let answer = self
            .reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("asking the API server (SubjectAccessReview): {e}"))?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a flood of distinct certificates cannot grow it without limit.
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(key, (allowed, Instant::now()));
        Ok(allowed)
    }
}
