//! Pod volumes and the environment taken from the API: emptyDir (on disk, or tmpfs for medium
//! Memory), configMap and secret (files with their modes; secrets on tmpfs, never on disk),
//! hostPath, projected (see [`super::projected`]; refreshed by [`refresh`]); env from configMapKeyRef/secretKeyRef/fieldRef and envFrom. Volumes live under the
//! pod's directory (`volumes/<name>`) and are bind-mounted into containers.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::Api;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::Ctx;
use crate::kubelet::netns::is_mount_point;
use crate::runtime::oci::Mount;

/// Where each volume of a pod lives on the node.
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    dirs: HashMap<String, PathBuf>,
    /// Projected volumes holding tokens: when each is to be written again.
    due: HashMap<String, std::time::Instant>,
    /// Volumes the agent writes into while containers run (configMap, secret, projected): always
    /// mounted read-only, as the kubelet mounts them, so a container cannot plant a symlink the
    /// agent would follow as root when it rewrites them.
    agent_written: std::collections::HashSet<String>,
}

fn volumes_dir(ctx: &Ctx, uid: &str) -> PathBuf {
    ctx.config.pod_dir(uid).join("volumes")
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let what = format!("{what} {}", path.display());
    move |e| format!("{what}: {e}")
}

pub(super) fn tmpfs(path: &Path, size: Option<&str>) -> Result<(), String> {
    if is_mount_point(path) {
        return Ok(());
    }
    let options = size.map(|s| format!("mode=0755,size={s}")).unwrap_or_else(|| "mode=0755".into());
    mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))
        .map_err(|e| format!("mounting a tmpfs on {}: {e}", path.display()))
}

/// Writes `files` (path within the volume → contents) with `mode`, replacing what was there.
fn write_files(dir: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<(), String> {
    for (relative, data, mode) in files {
        if relative.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(format!("invalid volume path {relative:?}"));
        }
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        std::fs::write(&path, data).map_err(io("writing", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &path))?;
    }
    Ok(())
}

/// The files a configMap or secret volume holds: every key, or just `items`.
pub(super) fn projected(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    what: &str,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    let mode = |m: Option<i32>| (m.unwrap_or(default_mode) & 0o777) as u32;
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, v, mode(None))).collect()),
        Some(items) => items
            .iter()
            .filter_map(|i| match data.get(&i.key) {
                Some(v) => Some(Ok((i.path.clone(), v.clone(), mode(i.mode)))),
                None if optional => None,
                None => Some(Err(format!("{what} has no key {:?}", i.key))),
            })
            .collect(),
    }
}

pub(super) async fn config_map(ctx: &Ctx, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    api.get_opt(name).await.map_err(|e| format!("configmap {ns}/{name}: {e}"))
}

pub(super) async fn secret(ctx: &Ctx, ns: &str, name: &str) -> Result<Option<Secret>, String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    api.get_opt(name).await.map_err(|e| format!("secret {ns}/{name}: {e}"))
}

pub(super) fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> =
        cm.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    data.extend(cm.binary_data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    data
}

pub(super) fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> =
        s.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    data.extend(s.string_data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    data
}

/// Prepares every volume of the pod (idempotent: a pod restarting its containers reuses them).
pub async fn prepare(ctx: &Ctx, pod: &Pod, uid: &str) -> Result<Volumes, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let base = volumes_dir(ctx, uid);
    let mut volumes = Volumes::default();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        if let Some(source) = &v.projected {
            let dir = base.join(&v.name);
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            let written = super::projected::write(ctx, pod, &dir, source).await?;
            if let Some(due) = written.due {
                volumes.due.insert(v.name.clone(), due);
            }
            volumes.dirs.insert(v.name.clone(), dir);
            volumes.agent_written.insert(v.name.clone());
            continue;
        }
        if v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() {
            volumes.agent_written.insert(v.name.clone());
        }
        let dir = prepare_one(ctx, &ns, &base, &v).await?;
        volumes.dirs.insert(v.name.clone(), dir);
    }
    Ok(volumes)
}

/// Writes again the projected volumes whose tokens are due for refreshing (a failure keeps the
/// old token, still valid, and is retried on the next pass).
pub async fn refresh(ctx: &Ctx, pod: &Pod, volumes: &mut Volumes) {
    let now = std::time::Instant::now();
    let due: Vec<String> = volumes.due.iter().filter(|(_, at)| **at <= now).map(|(n, _)| n.clone()).collect();
    for name in due {
        let source = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == name).and_then(|v| v.projected.clone()));
        let (Some(source), Some(dir)) = (source, volumes.dirs.get(&name)) else { continue };
        match super::projected::write(ctx, pod, dir, &source).await {
            Ok(written) => match written.due {
                Some(at) => {
                    volumes.due.insert(name, at);
                }
                None => {
                    volumes.due.remove(&name);
                }
            },
            Err(e) => tracing::warn!(volume = %name, "refreshing a projected volume: {e}"),
        }
    }
}

async fn prepare_one(ctx: &Ctx, ns: &str, base: &Path, v: &Volume) -> Result<PathBuf, String> {
    let dir = base.join(&v.name);
    if let Some(host) = &v.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(io("creating", &path))?,
            "FileOrCreate" if !path.exists() => {
                std::fs::write(&path, b"").map_err(io("creating", &path))?;
            }
            "Directory" if !path.is_dir() => {
                return Err(format!("hostPath {} is not a directory", path.display()));
            }
            "File" if !path.is_file() => return Err(format!("hostPath {} is not a file", path.display())),
            _ => {}
        }
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    if let Some(empty) = &v.empty_dir {
        if empty.medium.as_deref() == Some("Memory") {
            tmpfs(&dir, empty.size_limit.as_ref().map(|q| q.0.as_str()))?;
        }
        return Ok(dir);
    }
    if let Some(source) = &v.config_map {
        let optional = source.optional.unwrap_or(false);
        let data = match config_map(ctx, ns, &source.name).await? {
            Some(cm) => config_map_data(&cm),
            None if optional => BTreeMap::new(),
            None => return Err(format!("configmap {:?} not found", source.name)),
        };
        let files = projected(
            data,
            source.items.as_ref(),
            source.default_mode.unwrap_or(0o644),
            optional,
            &source.name,
        )?;
        write_files(&dir, &files)?;
        return Ok(dir);
    }
    if let Some(source) = &v.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let optional = source.optional.unwrap_or(false);
        let data = match secret(ctx, ns, &name).await? {
            Some(s) => secret_data(&s),
            None if optional => BTreeMap::new(),
            None => return Err(format!("secret {name:?} not found")),
        };
        // Secrets never touch the node's disk.
        tmpfs(&dir, None)?;
        let files =
            projected(data, source.items.as_ref(), source.default_mode.unwrap_or(0o644), optional, &name)?;
        write_files(&dir, &files)?;
        return Ok(dir);
    }
    Err(format!(
        "volume {:?}: only emptyDir, configMap, secret, projected and hostPath are supported",
        v.name
    ))
}

/// The bind mounts of `container`'s volumeMounts.
pub fn mounts(container: &Container, volumes: &Volumes) -> Result<Vec<Mount>, String> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let dir = volumes.dirs.get(&m.name).ok_or_else(|| format!("no volume named {:?}", m.name))?;
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) if sub.split('/').any(|p| p == "..") => {
                    return Err(format!("invalid subPath {sub:?}"));
                }
                Some(sub) => {
                    let path = dir.join(sub);
                    if !path.exists() {
                        std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
                    }
                    path
                }
                None => dir.clone(),
            };
            let read_only = m.read_only.unwrap_or(false) || volumes.agent_written.contains(&m.name);
            Ok(Mount { destination: m.mount_path.clone(), source, read_only })
        })
        .collect()
}

/// Unmounts the pod's tmpfs volumes (before its directory is removed).
pub fn release(ctx: &Ctx, uid: &str) {
    let base = volumes_dir(ctx, uid);
    let Ok(entries) = std::fs::read_dir(&base) else { return };
    for e in entries.flatten() {
        if is_mount_point(&e.path()) {
            let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
        }
    }
}

/// Values of the container's `envFrom` sources (in order, prefix applied) and of its `env`
/// entries that take their value from somewhere (configMap/secret keys, pod fields).
pub async fn env_sources(
    ctx: &Ctx,
    pod: &Pod,
    container: &Container,
    ip: Option<Ipv4Addr>,
) -> Result<(BTreeMap<String, String>, HashMap<String, String>), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let mut from = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            match config_map(ctx, &ns, &r.name).await? {
                Some(cm) => from
                    .extend(config_map_data(&cm).into_iter().map(|(k, v)| (format!("{prefix}{k}"), text(v)))),
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &source.secret_ref {
            match secret(ctx, &ns, &r.name).await? {
                Some(s) => {
                    from.extend(secret_data(&s).into_iter().map(|(k, v)| (format!("{prefix}{k}"), text(v))))
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }
    let mut resolved = HashMap::new();
    for e in container.env.iter().flatten() {
        let Some(source) = &e.value_from else { continue };
        let value = if let Some(r) = &source.config_map_key_ref {
            let cm = config_map(ctx, &ns, &r.name).await?;
            match cm.and_then(|cm| config_map_data(&cm).remove(&r.key)) {
                Some(v) => Some(text(v)),
                None if r.optional == Some(true) => None,
                None => return Err(format!("configmap {:?} has no key {:?}", r.name, r.key)),
            }
        } else if let Some(r) = &source.secret_key_ref {
            let s = secret(ctx, &ns, &r.name).await?;
            match s.and_then(|s| secret_data(&s).remove(&r.key)) {
                Some(v) => Some(text(v)),
                None if r.optional == Some(true) => None,
                None => return Err(format!("secret {:?} has no key {:?}", r.name, r.key)),
            }
        } else if let Some(f) = &source.field_ref {
            let spec = pod.spec.as_ref();
            Some(match f.field_path.as_str() {
                "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
                "metadata.namespace" => ns.clone(),
                "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
                "spec.serviceAccountName" => {
                    spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default()
                }
                "status.podIP" => ip.map(|i| i.to_string()).unwrap_or_default(),
                "status.hostIP" => ctx.config.node_ip.to_string(),
                other => return Err(format!("fieldRef {other:?} is not supported")),
            })
        } else {
            return Err(format!(
                "env {:?}: only configMapKeyRef, secretKeyRef and fieldRef are supported",
                e.name
            ));
        };
        if let Some(v) = value {
            resolved.insert(e.name.clone(), v);
        }
    }
    Ok((from, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_the_agent_writes_are_mounted_read_only_whatever_the_pod_says() {
        let mut volumes = Volumes::default();
        for name in ["token", "scratch"] {
            volumes.dirs.insert(name.into(), PathBuf::from(format!("/var/lib/pods/u/volumes/{name}")));
        }
        volumes.agent_written.insert("token".into());
        let container: Container = serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": [
            {"name": "token", "mountPath": "/var/run/secrets/x", "readOnly": false},
            {"name": "scratch", "mountPath": "/tmp/s"}]}))
        .expect("container");
        let mounts = mounts(&container, &volumes).expect("mounts");
        assert!(mounts[0].read_only, "a projected/configMap/secret volume is never writable");
        assert!(!mounts[1].read_only, "an emptyDir stays as the pod asked");
    }
}
