//! Authentication: who is asking. A request is authenticated by the client certificate its TLS
//! connection presented (verified against the cluster CA during the handshake; the common name is
//! the user, the organizations its groups, as Kubernetes reads them) or by a bearer token from
//! the static token file. Anonymous requests get 401 except on the health and version paths.

use std::{collections::HashMap, path::Path, sync::Arc};

use anyhow::Context as _;
use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

pub mod bootstrap;
pub mod sa_token;

/// Finds a ServiceAccount's uid by namespace and name (`None`: it does not exist).
pub type AccountLookup = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;
/// Finds a Pod's uid by namespace and name (`None`: it does not exist; pod-bound tokens).
pub type PodLookup = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;
/// Finds a Secret by namespace and name (bootstrap tokens).
pub type SecretLookup = Arc<dyn Fn(&str, &str) -> Option<serde_json::Value> + Send + Sync>;

/// The authenticated user of a request (a request extension once authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

pub use skiff_tls::PeerCertificate;

/// Paths anyone may read: liveness, readiness and the version (kube-apiserver's defaults).
pub fn is_public(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz", "/version"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// Who may ask: token holders (the static token file, ServiceAccount tokens).
#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    service_accounts: Option<(Arc<sa_token::TokenKeys>, AccountLookup)>,
    bootstrap: Option<SecretLookup>,
    pods: Option<PodLookup>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("static_tokens", &self.tokens.len()).finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Authenticator {
    /// Also accept bootstrap tokens whose Secrets `lookup` finds.
    pub fn with_bootstrap_tokens(mut self, lookup: SecretLookup) -> Self {
        self.bootstrap = Some(lookup);
        self
    }

    /// Check pod-bound ServiceAccount tokens against the pods `lookup` finds (without it such
    /// tokens are refused).
    pub fn with_bound_pods(mut self, lookup: PodLookup) -> Self {
        self.pods = Some(lookup);
        self
    }

    /// Also accept ServiceAccount tokens signed with `keys` whose account `lookup` still finds.
    pub fn with_service_accounts(mut self, keys: Arc<sa_token::TokenKeys>, lookup: AccountLookup) -> Self {
        self.service_accounts = Some((keys, lookup));
        self
    }

    /// Reads kube-apiserver's `--token-auth-file` format: `token,user,uid[,"group1,group2"]` per
    /// line (`#` comments and blank lines skipped).
    pub fn with_token_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(4, ',');
            let (Some(token), Some(user), Some(_uid)) = (fields.next(), fields.next(), fields.next()) else {
                anyhow::bail!("{} line {}: expected token,user,uid[,\"groups\"]", path.display(), n + 1);
            };
            let groups = fields
                .next()
                .map(|g| {
                    g.trim()
                        .trim_matches('"')
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if token.is_empty() || user.is_empty() {
                anyhow::bail!("{} line {}: empty token or user", path.display(), n + 1);
            }
            tokens.insert(token.to_owned(), UserInfo { name: user.to_owned(), groups });
        }
        Ok(Self { tokens, service_accounts: None, bootstrap: None, pods: None })
    }

    /// The user behind a certificate or an `Authorization` header; `Err` for a header that names
    /// no one (a wrong token is refused, never treated as anonymous).
    pub fn authenticate(
        &self,
        cert: Option<&PeerCertificate>,
        authorization: Option<&str>,
    ) -> Result<Option<UserInfo>, &'static str> {
        let mut user = if let Some(value) = authorization {
            let token = value.strip_prefix("Bearer ").ok_or("only bearer tokens are accepted")?.trim();
            match (self.tokens.get(token), &self.service_accounts) {
                (Some(user), _) => user.clone(),
                (None, _) if bootstrap::parse(token).is_some() && self.bootstrap.is_some() => {
                    let (id, half) = bootstrap::parse(token).ok_or("invalid bearer token")?;
                    let lookup = self.bootstrap.as_ref().ok_or("invalid bearer token")?;
                    let secret = lookup(bootstrap::NAMESPACE, &format!("bootstrap-token-{id}"));
                    bootstrap::authenticate(id, half, secret.as_ref(), unix_now())?
                }
                (None, Some((keys, lookup))) if token.matches('.').count() == 2 => {
                    let sa = keys.verify(token, unix_now())?;
                    if lookup(&sa.namespace, &sa.name).as_deref() != Some(sa.uid.as_str()) {
                        return Err("the token's ServiceAccount no longer exists");
                    }
                    if let Some(pod) = &sa.pod {
                        let current = self.pods.as_ref().and_then(|lookup| lookup(&sa.namespace, &pod.name));
                        if current.as_deref() != Some(pod.uid.as_str()) {
                            return Err("the pod the token is bound to no longer exists");
                        }
                    }
                    UserInfo { name: sa.user(), groups: sa.groups() }
                }
                _ => return Err("invalid bearer token"),
            }
        } else if let Some(PeerCertificate(cert)) = cert {
            UserInfo { name: cert.common_name.clone(), groups: cert.organizations.clone() }
        } else {
            return Ok(None);
        };
        if !user.groups.iter().any(|g| g == "system:authenticated") {
            user.groups.push("system:authenticated".into());
        }
        Ok(Some(user))
    }
}

fn unauthorized(message: &str) -> Response {
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Unauthorized",
        "code": 401,
    });
    (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], status.to_string())
        .into_response()
}

/// Middleware: authenticates the request and stores its [`UserInfo`], or answers 401.
pub async fn middleware(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("\u{0}"));
    match auth.authenticate(req.extensions().get::<PeerCertificate>(), header) {
        Ok(Some(user)) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Ok(None) if is_public(req.uri().path()) => next.run(req).await,
        Ok(None) => unauthorized("Unauthorized: no client certificate or bearer token"),
        Err(why) => unauthorized(&format!("Unauthorized: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::inspect::CertInfo;

    #[test]
    fn tokens_certificates_and_anonymous() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("tokens.csv");
        std::fs::write(&file, "# comment\nabc123,alice,1,\"dev,ops\"\nxyz,bob,2\n").expect("write");
        let auth = Authenticator::with_token_file(&file).expect("tokens");
        let alice = auth.authenticate(None, Some("Bearer abc123")).expect("ok").expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(auth.authenticate(None, Some("Bearer nope")), Err("invalid bearer token"));
        assert_eq!(auth.authenticate(None, Some("Basic eDp5")), Err("only bearer tokens are accepted"));
        assert_eq!(auth.authenticate(None, None), Ok(None));
        let cert = PeerCertificate(Arc::new(CertInfo {
            common_name: "system:node:n1".into(),
            organizations: vec!["system:nodes".into()],
            issuer: "skiff-ca".into(),
            not_before: time::OffsetDateTime::UNIX_EPOCH,
            not_after: time::OffsetDateTime::UNIX_EPOCH,
            is_ca: false,
            sans: vec![],
        }));
        let node = auth.authenticate(Some(&cert), None).expect("ok").expect("node");
        assert_eq!((node.name.as_str(), node.groups.len()), ("system:node:n1", 2));
        std::fs::write(&file, "lonely\n").expect("write");
        assert!(Authenticator::with_token_file(&file).is_err());
    }

    #[test]
    fn only_health_and_version_are_public() {
        for p in ["/healthz", "/livez", "/readyz", "/readyz/ping", "/version"] {
            assert!(is_public(p), "{p}");
        }
        for p in ["/api", "/apis", "/healthzz", "/api/v1/pods", "/versions", "/"] {
            assert!(!is_public(p), "{p}");
        }
    }
}
