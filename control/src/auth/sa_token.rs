//! ServiceAccount tokens: JWTs (ES256) signed with the PKI's `sa.key`, as kube-apiserver issues
//! them through the TokenRequest API (`kubectl create token`). A token names its ServiceAccount
//! by namespace, name and uid; it is accepted while unexpired, signed by this key, issued by this
//! cluster, and while that very ServiceAccount (same uid) still exists. A token bound to a Pod
//! (TokenRequest's `boundObjectRef`, what node agents ask for pods' projected volumes) also names
//! the pod, and is accepted only while that very pod (same uid) exists.

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    rand::SystemRandom,
    signature::{self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use rustls_pki_types::{PrivatePkcs8KeyDer, pem::PemObject as _};
use serde_json::{Value, json};

/// The `iss` of every token (kube-apiserver's default `--service-account-issuer` in kubeadm).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audiences that name this API server (kube-apiserver's `--api-audiences`, which default to
/// the issuer; the short Service name is accepted too).
pub const API_AUDIENCES: [&str; 2] = [ISSUER, "https://kubernetes.default.svc"];
/// Lifetime bounds of a requested token, seconds (Kubernetes: at least 10 minutes).
pub const MIN_EXPIRATION_S: i64 = 600;
pub const MAX_EXPIRATION_S: i64 = 48 * 3600;
pub const DEFAULT_EXPIRATION_S: i64 = 3600;

/// Who a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod the token is bound to, if any.
    pub pod: Option<BoundPod>,
}

/// A pod a token is bound to (`kubernetes.io.pod` in its claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

impl ServiceAccountRef {
    /// The user name Kubernetes gives it.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    pub fn groups(&self) -> Vec<String> {
        vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{}", self.namespace)]
    }
}

/// Signs and verifies tokens with one key.
pub struct TokenKeys {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// From the PKCS#8 PEM private key (`pki/sa.key`).
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).context("sa.key is not a PKCS#8 PEM key")?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), &rng)
            .map_err(|e| anyhow::anyhow!("sa.key is not a P-256 key: {e}"))?;
        Ok(Self { key, rng })
    }

    /// A token for `sa`, valid `[now, now + lifetime_s)`, for `audiences`.
    pub fn issue(
        &self,
        sa: &ServiceAccountRef,
        audiences: &[String],
        now: i64,
        lifetime_s: i64,
    ) -> anyhow::Result<String> {
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let mut claims = json!({
            "iss": ISSUER,
            "sub": sa.user(),
            "aud": audiences,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_s,
            "kubernetes.io": {"namespace": sa.namespace, "serviceaccount": {"name": sa.name, "uid": sa.uid}},
        });
        if let Some(pod) = &sa.pod {
            claims["kubernetes.io"]["pod"] = json!({"name": pod.name, "uid": pod.uid});
        }
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing failed"))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// The ServiceAccount a token names, if it is one of ours, well-formed, correctly signed and
    /// within its lifetime at `now`. The caller still checks that the account exists.
    pub fn verify(&self, token: &str, now: i64) -> Result<ServiceAccountRef, &'static str> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT");
        };
        let sig = B64.decode(s).map_err(|_| "malformed token")?;
        let public =
            signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref());
        public.verify(format!("{h}.{c}").as_bytes(), &sig).map_err(|_| "invalid token signature")?;
        let header: Value = serde_json::from_slice(&B64.decode(h).map_err(|_| "malformed token")?)
            .map_err(|_| "malformed token")?;
        if header["alg"] != "ES256" {
            return Err("unexpected token algorithm");
        }
        let claims: Value = serde_json::from_slice(&B64.decode(c).map_err(|_| "malformed token")?)
            .map_err(|_| "malformed token")?;
        if claims["iss"] != ISSUER {
            return Err("token issued elsewhere");
        }
        // A token a pod got for another audience (a vault, a registry) is not for us.
        let audiences = match &claims["aud"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.iter().any(|a| API_AUDIENCES.contains(a)) {
            return Err("token audience is not this API server");
        }
        let (nbf, exp) = (claims["nbf"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
        if now < nbf || now >= exp {
            return Err("token expired or not yet valid");
        }
        let k = &claims["kubernetes.io"];
        let field = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        match (
            field(&k["namespace"]),
            field(&k["serviceaccount"]["name"]),
            field(&k["serviceaccount"]["uid"]),
        ) {
            (Some(namespace), Some(name), Some(uid)) => {
                let pod = match (&k["pod"], field(&k["pod"]["name"]), field(&k["pod"]["uid"])) {
                    (Value::Null, _, _) => None,
                    (_, Some(name), Some(uid)) => Some(BoundPod { name, uid }),
                    _ => return Err("token names a malformed pod"),
                };
                Ok(ServiceAccountRef { namespace, name, uid, pod })
            }
            _ => Err("token names no ServiceAccount"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::from_pem(rcgen::KeyPair::generate().expect("key").serialize_pem().as_bytes())
            .expect("keys")
    }

    fn robot() -> ServiceAccountRef {
        ServiceAccountRef { namespace: "default".into(), name: "robot".into(), uid: "u-1".into(), pod: None }
    }

    #[test]
    fn a_bound_token_carries_its_pod() {
        let k = keys();
        let bound =
            ServiceAccountRef { pod: Some(BoundPod { name: "web-1".into(), uid: "p-1".into() }), ..robot() };
        let token = k.issue(&bound, &[ISSUER.into()], 1_000, 600).expect("issue");
        assert_eq!(k.verify(&token, 1_000), Ok(bound));
    }

    #[test]
    fn a_token_verifies_within_its_lifetime_only_and_only_with_its_key() {
        let k = keys();
        let token = k.issue(&robot(), &["https://kubernetes.default.svc".into()], 1_000, 600).expect("issue");
        assert_eq!(k.verify(&token, 1_000), Ok(robot()));
        assert_eq!(k.verify(&token, 1_599), Ok(robot()));
        assert_eq!(k.verify(&token, 1_600), Err("token expired or not yet valid"));
        assert_eq!(k.verify(&token, 999), Err("token expired or not yet valid"));
        assert_eq!(keys().verify(&token, 1_000), Err("invalid token signature"), "another cluster's key");
        let elsewhere = k.issue(&robot(), &["vault".into()], 1_000, 600).expect("issue");
        assert_eq!(k.verify(&elsewhere, 1_000), Err("token audience is not this API server"));
        let both = k.issue(&robot(), &["vault".into(), ISSUER.into()], 1_000, 600).expect("issue");
        assert_eq!(k.verify(&both, 1_000), Ok(robot()));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(
            json!({"iss": ISSUER, "exp": 9_999_999_999_i64, "kubernetes.io": {"namespace": "kube-system",
                "serviceaccount": {"name": "admin", "uid": "x"}}})
            .to_string(),
        );
        parts[1] = &forged;
        assert_eq!(k.verify(&parts.join("."), 1_000), Err("invalid token signature"), "claims swapped");
        assert_eq!(k.verify("a.b", 1_000), Err("not a JWT"));
        assert_eq!(robot().user(), "system:serviceaccount:default:robot");
    }
}
