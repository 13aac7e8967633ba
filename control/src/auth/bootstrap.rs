//! Bootstrap tokens (`<id>.<secret>`, 6 and 16 characters of `[a-z0-9]`), as kubeadm join uses
//! them: a Secret `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`
//! holds the secret half, an expiration and what the token may be used for. A valid token
//! authenticates as `system:bootstrap:<id>` in group `system:bootstrappers` (plus the Secret's
//! `auth-extra-groups`), which may only ask for a node certificate.

use serde_json::Value;

use super::UserInfo;

/// The Secret type and namespace of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const NAMESPACE: &str = "kube-system";
/// The group every bootstrap token belongs to.
pub const GROUP: &str = "system:bootstrappers";

/// Splits a token into its id and secret if it has the bootstrap token shape.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// A field of the Secret: `data` (base64) or `stringData`.
fn field(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine as _;
    if let Some(v) = secret["data"][key].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        return String::from_utf8(bytes).ok();
    }
    secret["stringData"][key].as_str().map(str::to_owned)
}

/// Byte-wise comparison whose time does not depend on where the inputs differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user `token` stands for, given its Secret (`None` when none exists) and the time now
/// (seconds since the epoch).
pub fn authenticate(
    id: &str,
    secret_half: &str,
    secret: Option<&Value>,
    now: i64,
) -> Result<UserInfo, &'static str> {
    let secret = secret.ok_or("unknown bootstrap token")?;
    if secret["type"].as_str() != Some(SECRET_TYPE) {
        return Err("unknown bootstrap token");
    }
    let (Some(stored_id), Some(stored_secret)) = (field(secret, "token-id"), field(secret, "token-secret"))
    else {
        return Err("malformed bootstrap token secret");
    };
    if stored_id != id || !same(&stored_secret, secret_half) {
        return Err("invalid bootstrap token");
    }
    if field(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err("bootstrap token not usable for authentication");
    }
    if let Some(expiration) = field(secret, "expiration") {
        let expires =
            expiration.parse::<jiff::Timestamp>().map_err(|_| "malformed bootstrap token expiration")?;
        if expires.as_second() <= now {
            return Err("bootstrap token expired");
        }
    }
    let mut groups = vec![GROUP.to_owned()];
    if let Some(extra) = field(secret, "auth-extra-groups") {
        groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(str::to_owned),
        );
    }
    Ok(UserInfo { name: format!("system:bootstrap:{id}"), groups })
}

/// A new random token.
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes: Vec<u8> =
        uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).copied().collect();
    let chars: String =
        bytes.iter().take(22).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    format!("{}.{}", &chars[..6], &chars[6..])
}

/// The Secret that makes `token` valid until `expiration` (RFC 3339).
pub fn secret_for(token: &str, expiration: &str, description: &str) -> Option<Value> {
    let (id, secret) = parse(token)?;
    Some(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": NAMESPACE},
        "type": SECRET_TYPE,
        "stringData": {
            "description": description,
            "token-id": id,
            "token-secret": secret,
            "expiration": expiration,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_until_it_expires_and_only_with_its_secret() {
        let token = generate();
        let (id, half) = parse(&token).expect("shape");
        let secret = secret_for(&token, "2030-01-01T00:00:00Z", "test").expect("secret");
        let now = 1_800_000_000; // 2027
        let user = authenticate(id, half, Some(&secret), now).expect("valid");
        assert_eq!(user.name, format!("system:bootstrap:{id}"));
        assert_eq!(user.groups, [GROUP]);
        assert_eq!(authenticate(id, "0000000000000000", Some(&secret), now), Err("invalid bootstrap token"));
        assert_eq!(authenticate(id, half, Some(&secret), 1_900_000_000), Err("bootstrap token expired"));
        assert_eq!(authenticate(id, half, None, now), Err("unknown bootstrap token"));
        let mut unusable = secret.clone();
        unusable["stringData"]["usage-bootstrap-authentication"] = "false".into();
        assert!(authenticate(id, half, Some(&unusable), now).is_err());
        assert!(parse("abc.def").is_none() && parse("ABCDEF.0123456789abcdef").is_none());
    }
}
