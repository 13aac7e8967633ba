//! Kubeconfigs with the CA and the client certificate embedded (`*-data`), as kubeadm writes
//! them, so a file is all a user or node needs.

use base64::Engine as _;
use serde_json::json;

use super::issue::Issued;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// One cluster, one user with `credentials`, one context joining them.
fn document(cluster: &str, server: &str, ca_pem: &str, user: &str, credentials: serde_json::Value) -> String {
    let context = format!("{user}@{cluster}");
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// A kubeconfig for `user` at `server`, trusting `ca_pem`.
pub fn render(cluster: &str, server: &str, ca_pem: &str, user: &str, client: &Issued) -> String {
    let credentials =
        json!({"client-certificate-data": b64(&client.cert_pem), "client-key-data": b64(&client.key_pem)});
    document(cluster, server, ca_pem, user, credentials)
}

/// A kubeconfig for a bearer `token` at `server`, trusting `ca_pem` (bootstrap kubeconfigs).
pub fn render_token(cluster: &str, server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    document(cluster, server, ca_pem, user, json!({"token": token}))
}

/// The client certificate and key embedded in a kubeconfig (for renewal and expiry checks).
pub fn client_of(text: &str) -> anyhow::Result<Issued> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)?;
    let user = doc["users"][0]["user"].clone();
    let field = |name: &str| -> anyhow::Result<String> {
        let data = user[name].as_str().ok_or_else(|| anyhow::anyhow!("no {name}"))?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
        Ok(String::from_utf8(bytes)?)
    };
    Ok(Issued { cert_pem: field("client-certificate-data")?, key_pem: field("client-key-data")? })
}

/// Replaces the client certificate (and key) of a kubeconfig, keeping the rest.
pub fn with_client(text: &str, client: &Issued) -> anyhow::Result<String> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(text)?;
    let user = &mut doc["users"][0]["user"];
    user["client-certificate-data"] = b64(&client.cert_pem).into();
    user["client-key-data"] = b64(&client.key_pem).into();
    Ok(serde_yaml::to_string(&doc)?)
}
