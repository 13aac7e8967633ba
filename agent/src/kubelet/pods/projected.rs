//! Projected volumes: several sources in one directory, as the kubelet builds them — a
//! ServiceAccount token (asked for with TokenRequest as this node, bound to the pod so it dies
//! with it), configMap and secret keys, and downward API fields of the pod. The directory is a
//! tmpfs (tokens and secrets never touch the node's disk) and every file is written to a
//! temporary name and renamed into place, so a container reading while the token is refreshed
//! sees the old file or the new one, never half of one.
//!
//! A token is refreshed once 80 % of its lifetime has passed (the kubelet's rule), on the pod
//! worker's periodic pass: [`Projected::due`] says when the whole volume is written again.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Pod, ProjectedVolumeSource, ServiceAccount};
use kube::{Api, api::PostParams};
use serde_json::{Value, json};

use super::{Ctx, volumes};

/// What a projected volume needs after it is written: when to write it again (its tokens'
/// refresh time), if it holds any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Projected {
    pub due: Option<Instant>,
}

/// Kubernetes' default token lifetime for a projection that names none.
const DEFAULT_EXPIRATION_S: i64 = 3600;
/// Which part of a token's lifetime may pass before it is replaced.
const REFRESH_AT: f64 = 0.8;

/// Writes the projected volume `source` of `pod` into `dir` (a tmpfs).
pub async fn write(
    ctx: &Ctx,
    pod: &Pod,
    dir: &Path,
    source: &ProjectedVolumeSource,
) -> Result<Projected, String> {
    volumes::tmpfs(dir, None)?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let default_mode = source.default_mode.unwrap_or(0o644);
    let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
    let mut due: Option<Instant> = None;
    for s in source.sources.iter().flatten() {
        if let Some(token) = &s.service_account_token {
            let lifetime = token.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_S);
            let (text, granted) = request_token(ctx, pod, token.audience.as_deref(), lifetime).await?;
            let refresh = Instant::now() + refresh_after(granted);
            due = Some(due.map_or(refresh, |d| d.min(refresh)));
            files.push((token.path.clone(), text.into_bytes(), (default_mode & 0o777) as u32));
        }
        if let Some(cm) = &s.config_map {
            let optional = cm.optional.unwrap_or(false);
            let data = match volumes::config_map(ctx, &ns, &cm.name).await? {
                Some(found) => volumes::config_map_data(&found),
                None if optional => BTreeMap::new(),
                None => return Err(format!("configmap {:?} not found", cm.name)),
            };
            files.extend(volumes::projected(data, cm.items.as_ref(), default_mode, optional, &cm.name)?);
        }
        if let Some(secret) = &s.secret {
            let optional = secret.optional.unwrap_or(false);
            let data = match volumes::secret(ctx, &ns, &secret.name).await? {
                Some(found) => volumes::secret_data(&found),
                None if optional => BTreeMap::new(),
                None => return Err(format!("secret {:?} not found", secret.name)),
            };
            files.extend(volumes::projected(
                data,
                secret.items.as_ref(),
                default_mode,
                optional,
                &secret.name,
            )?);
        }
        if let Some(downward) = &s.downward_api {
            for item in downward.items.iter().flatten() {
                let mode = (item.mode.unwrap_or(default_mode) & 0o777) as u32;
                files.push((item.path.clone(), field(pod, item)?.into_bytes(), mode));
            }
        }
        if s.cluster_trust_bundle.is_some() || s.pod_certificate.is_some() {
            return Err("projected clusterTrustBundle and podCertificate sources are not supported".into());
        }
    }
    write_atomically(dir, &files)?;
    Ok(Projected { due })
}

/// How long a token granted for `lifetime_s` seconds is kept before it is replaced.
fn refresh_after(lifetime_s: i64) -> Duration {
    Duration::from_secs_f64(lifetime_s.max(1) as f64 * REFRESH_AT)
}

/// A token for the pod's ServiceAccount bound to the pod, asked for as this node; the token and
/// the lifetime granted.
async fn request_token(
    ctx: &Ctx,
    pod: &Pod,
    audience: Option<&str>,
    lifetime: i64,
) -> Result<(String, i64), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let account =
        pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let mut spec = json!({
        "expirationSeconds": lifetime,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod.metadata.uid},
    });
    // No audience: the API server's own (what the projection's default means).
    if let Some(audience) = audience.filter(|a| !a.is_empty()) {
        spec["audiences"] = json!([audience]);
    }
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let answer: Value = api
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for serviceaccount {ns}/{account}: {e}"))?;
    let token = answer["status"]["token"].as_str().ok_or("the TokenRequest answer holds no token")?;
    let granted = answer["spec"]["expirationSeconds"].as_i64().unwrap_or(lifetime);
    Ok((token.to_owned(), granted))
}

/// A downward API file's contents (the fields the kubelet projects from metadata).
fn field(pod: &Pod, item: &DownwardAPIVolumeFile) -> Result<String, String> {
    let Some(f) = &item.field_ref else {
        return Err(format!("downwardAPI {:?}: only fieldRef is supported", item.path));
    };
    let meta = &pod.metadata;
    // Maps as the kubelet writes them: sorted `key="value"` lines, values quoted Go-style.
    let map = |m: Option<&BTreeMap<String, String>>| {
        m.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match f.field_path.as_str() {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map(meta.labels.as_ref()),
        "metadata.annotations" => map(meta.annotations.as_ref()),
        other => return Err(format!("downwardAPI fieldRef {other:?} is not supported")),
    })
}

/// Writes each file to a temporary name beside it and renames it into place.
fn write_atomically(dir: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<(), String> {
    for (relative, data, mode) in files {
        if relative.split('/').any(|p| p == ".." || p == "." || p.is_empty()) {
            return Err(format!("invalid volume path {relative:?}"));
        }
        let path = dir.join(relative);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let temporary = parent.join(format!("..{file_name}.tmp"));
        std::fs::write(&temporary, data).map_err(|e| format!("writing {}: {e}", temporary.display()))?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("chmod {}: {e}", temporary.display()))?;
        std::fs::rename(&temporary, &path).map_err(|e| format!("renaming into {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_replaced_once_four_fifths_of_their_lifetime_is_gone() {
        assert_eq!(refresh_after(3607), Duration::from_secs_f64(2885.6));
        assert_eq!(refresh_after(600), Duration::from_secs(480));
        assert!(refresh_after(0) > Duration::ZERO, "never a refresh loop");
    }

    #[test]
    fn downward_fields_and_atomic_files() {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1",
            "labels": {"b": "2", "a": "say \"hi\""}}}))
            .expect("pod");
        let item = |path: &str| -> DownwardAPIVolumeFile {
            serde_json::from_value(json!({"path": "f", "fieldRef": {"fieldPath": path}})).expect("item")
        };
        assert_eq!(field(&pod, &item("metadata.namespace")).expect("ns"), "ns");
        assert_eq!(field(&pod, &item("metadata.uid")).expect("uid"), "u1");
        assert_eq!(field(&pod, &item("metadata.labels")).expect("labels"), "a=\"say \\\"hi\\\"\"\nb=\"2\"");
        assert!(field(&pod, &item("spec.nodeName")).is_err());

        let dir = tempfile::tempdir().expect("tmp");
        write_atomically(
            dir.path(),
            &[("token".into(), b"one".to_vec(), 0o644), ("sub/x".into(), b"x".to_vec(), 0o600)],
        )
        .expect("write");
        write_atomically(dir.path(), &[("token".into(), b"two".to_vec(), 0o644)]).expect("rewrite");
        assert_eq!(std::fs::read(dir.path().join("token")).expect("read"), b"two");
        let mode = std::fs::metadata(dir.path().join("sub/x")).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
        assert!(write_atomically(dir.path(), &[("../escape".into(), vec![], 0o644)]).is_err());
    }
}
