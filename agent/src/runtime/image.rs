//! Images: archives imported into containerd's content store and unpacked to the snapshotter
//! (containerd 1.6 has no Transfer service, so this is done step by step, under a lease so the
//! garbage collector cannot race it), and local images resolved for containers.

use std::{collections::HashMap, io::Read as _, path::Path, time::Duration};

use containerd_client::{
    services::v1::{
        ApplyRequest, CreateImageRequest, GetImageRequest, Image, InfoRequest, ReadContentRequest,
        UpdateImageRequest, UpdateRequest as UpdateContentRequest, WriteAction, WriteContentRequest,
        snapshots::{
            CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
        },
    },
    tonic::Code,
    types::Descriptor,
};
use futures::StreamExt as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{Result, Runtime, RuntimeError, SNAPSHOTTER, call};

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The chain IDs of a layer stack (the snapshot names): `c0 = d0`, `ci = sha256(c(i-1) + " " + di)`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match chain.last() {
            None => d.clone(),
            Some(parent) => digest(format!("{parent} {d}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// A full image reference: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize(name: &str) -> String {
    let (repo, tag) = match name.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((r, t)) if !name.contains('@') => (r.to_owned(), format!(":{t}")),
        _ if name.contains('@') => (name.to_owned(), String::new()),
        _ => (name.to_owned(), ":latest".to_owned()),
    };
    let first = repo.split('/').next().unwrap_or("");
    let qualified = if !repo.contains('/') {
        format!("docker.io/library/{repo}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        repo
    } else {
        format!("docker.io/{repo}")
    };
    format!("{qualified}{tag}")
}

/// What an image says about running it (its config's `config` section).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ImageConfig {
    #[serde(rename = "Env", default)]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: String,
    #[serde(rename = "User", default)]
    pub user: String,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: String,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ImageConfig>,
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

impl Desc {
    /// The descriptor of `data` as a blob of `media` type.
    fn of(media: &str, data: &[u8]) -> Desc {
        Desc {
            media_type: media.to_owned(),
            digest: digest(data),
            size: data.len() as i64,
            annotations: HashMap::new(),
            platform: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Desc,
    layers: Vec<Desc>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Desc>,
}

/// A local image, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    pub name: String,
    /// The image id (its config digest).
    pub id: String,
    pub config: ImageConfig,
    /// The snapshot of the whole layer stack (the parent of each container's rootfs).
    pub top_chain: String,
}

/// One image of an archive, with every blob in memory.
struct Archived {
    name: String,
    manifest: (Desc, Vec<u8>),
    config: (Desc, Vec<u8>),
    layers: Vec<(Desc, Vec<u8>)>,
    diff_ids: Vec<String>,
}

fn bad(image: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Image { image: image.to_owned(), reason: reason.into() }
}

/// Whether an index entry is for linux/amd64 (one that names no platform is).
pub(super) fn this_platform(p: &Option<Platform>) -> bool {
    p.as_ref().is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
}

/// Reads an OCI image layout or a `docker save` archive.
fn read_archive(path: &Path, name: Option<&str>) -> Result<Vec<Archived>> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|source| RuntimeError::Io { what: format!("opening {what}"), source })?;
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tar = tar::Archive::new(file);
    let entries =
        tar.entries().map_err(|source| RuntimeError::Io { what: format!("reading {what}"), source })?;
    for entry in entries {
        let mut entry =
            entry.map_err(|source| RuntimeError::Io { what: format!("reading {what}"), source })?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path =
            entry.path().map(|p| p.to_string_lossy().trim_start_matches("./").to_owned()).unwrap_or_default();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|source| RuntimeError::Io { what: format!("reading {what}"), source })?;
        files.insert(path, data);
    }
    let blob = |d: &Desc| -> Result<Vec<u8>> {
        let hex = d
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| bad(&what, format!("unsupported digest {}", d.digest)))?;
        let data = files
            .get(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| bad(&what, format!("blob {} missing", d.digest)))?;
        if digest(data) != d.digest {
            return Err(bad(&what, format!("blob {} is corrupt", d.digest)));
        }
        Ok(data.clone())
    };
    let parse = |d: &[u8], of: &str| -> Result<serde_json::Value> {
        serde_json::from_slice(d).map_err(|e| bad(&what, format!("{of}: {e}")))
    };
    let mut out = Vec::new();
    if let Some(index) = files.get("index.json") {
        let index: Index =
            serde_json::from_value(parse(index, "index.json")?).map_err(|e| bad(&what, e.to_string()))?;
        for top in index.manifests {
            let image_name = name
                .map(str::to_owned)
                .or_else(|| top.annotations.get("io.containerd.image.name").cloned())
                .or_else(|| top.annotations.get("org.opencontainers.image.ref.name").cloned())
                .ok_or_else(|| bad(&what, "the archive names no image: give one"))?;
            let mut manifest_desc = top.clone();
            if matches!(top.media_type.as_str(), MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST) {
                let nested: Index = serde_json::from_value(parse(&blob(&top)?, "index")?)
                    .map_err(|e| bad(&what, e.to_string()))?;
                manifest_desc = nested
                    .manifests
                    .into_iter()
                    .find(|m| this_platform(&m.platform))
                    .ok_or_else(|| bad(&what, "no linux/amd64 image in the index"))?;
            }
            let manifest_bytes = blob(&manifest_desc)?;
            let manifest: Manifest = serde_json::from_value(parse(&manifest_bytes, "manifest")?)
                .map_err(|e| bad(&what, e.to_string()))?;
            let config_bytes = blob(&manifest.config)?;
            let config: ConfigFile = serde_json::from_value(parse(&config_bytes, "config")?)
                .map_err(|e| bad(&what, e.to_string()))?;
            let layers =
                manifest.layers.iter().map(|l| Ok((l.clone(), blob(l)?))).collect::<Result<Vec<_>>>()?;
            if layers.len() != config.rootfs.diff_ids.len() {
                return Err(bad(&what, "the manifest and the config disagree on the layers"));
            }
            out.push(Archived {
                name: normalize(&image_name),
                manifest: (manifest_desc, manifest_bytes),
                config: (manifest.config.clone(), config_bytes),
                layers,
                diff_ids: config.rootfs.diff_ids,
            });
        }
    } else if let Some(list) = files.get("manifest.json") {
        // `docker save`: uncompressed layer tars and a config, no registry manifest.
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Saved {
            config: String,
            #[serde(default)]
            repo_tags: Vec<String>,
            layers: Vec<String>,
        }
        let saved: Vec<Saved> =
            serde_json::from_value(parse(list, "manifest.json")?).map_err(|e| bad(&what, e.to_string()))?;
        for s in saved {
            let image_name = name
                .map(str::to_owned)
                .or_else(|| s.repo_tags.first().cloned())
                .ok_or_else(|| bad(&what, "the archive names no image: give one"))?;
            let get = |p: &str| files.get(p).cloned().ok_or_else(|| bad(&what, format!("{p} missing")));
            let config_bytes = get(&s.config)?;
            let config: ConfigFile = serde_json::from_value(parse(&config_bytes, "config")?)
                .map_err(|e| bad(&what, e.to_string()))?;
            let desc = Desc::of;
            let layers: Vec<(Desc, Vec<u8>)> = s
                .layers
                .iter()
                .map(|p| get(p).map(|d| (desc(MEDIA_OCI_LAYER, &d), d)))
                .collect::<Result<_>>()?;
            let config_desc = desc(MEDIA_OCI_CONFIG, &config_bytes);
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_MANIFEST,
                "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
                "layers": layers.iter().map(|(d, _)| serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size})).collect::<Vec<_>>(),
            });
            let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| bad(&what, e.to_string()))?;
            out.push(Archived {
                name: normalize(&image_name),
                manifest: (desc(MEDIA_OCI_MANIFEST, &manifest_bytes), manifest_bytes),
                config: (config_desc, config_bytes),
                layers,
                diff_ids: config.rootfs.diff_ids,
            });
        }
    } else {
        return Err(bad(
            &what,
            "neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
        ));
    }
    if out.is_empty() {
        return Err(bad(&what, "the archive holds no image"));
    }
    Ok(out)
}

fn descriptor(d: &Desc) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: HashMap::new(),
    }
}

impl Runtime {
    /// Imports every image of the archive at `path` (named `name`, or as the archive names it)
    /// and unpacks it; returns the image names.
    pub async fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<String>> {
        let images = read_archive(path, name)?;
        let lease = self.lease("import", Duration::from_secs(3600)).await?;
        let result = self.import_all(&images, &lease).await;
        let released = self.release(&lease).await;
        let names = result?;
        released?;
        Ok(names)
    }

    /// Stores an image fetched from a registry (its blobs checked against their digests) and
    /// unpacks it.
    pub(super) async fn store_pulled(
        &self,
        name: &str,
        manifest_media: &str,
        manifest: &[u8],
        config_media: Option<&str>,
        config: &[u8],
        layers: Vec<(serde_json::Value, Vec<u8>)>,
    ) -> Result<()> {
        let desc = Desc::of;
        let parsed: ConfigFile =
            serde_json::from_slice(config).map_err(|e| bad(name, format!("config: {e}")))?;
        let mut archived_layers = Vec::new();
        for (descriptor, data) in layers {
            let d: Desc = serde_json::from_value(descriptor).map_err(|e| bad(name, format!("layer: {e}")))?;
            if digest(&data) != d.digest {
                return Err(bad(name, format!("layer {} arrived corrupt", d.digest)));
            }
            archived_layers.push((d, data));
        }
        if archived_layers.len() != parsed.rootfs.diff_ids.len() {
            return Err(bad(name, "the manifest and the config disagree on the layers"));
        }
        let image = Archived {
            name: name.to_owned(),
            manifest: (desc(manifest_media, manifest), manifest.to_vec()),
            config: (desc(config_media.unwrap_or(MEDIA_OCI_CONFIG), config), config.to_vec()),
            layers: archived_layers,
            diff_ids: parsed.rootfs.diff_ids,
        };
        let lease = self.lease("pull", Duration::from_secs(3600)).await?;
        let result = self.import_all(std::slice::from_ref(&image), &lease).await;
        let released = self.release(&lease).await;
        result?;
        released
    }

    async fn import_all(&self, images: &[Archived], lease: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for image in images {
            let chains = chain_ids(&image.diff_ids);
            for ((desc, data), diff_id) in image.layers.iter().zip(&image.diff_ids) {
                self.write_blob(desc, data, &[("containerd.io/uncompressed", diff_id)], lease).await?;
            }
            self.write_blob(&image.config.0, &image.config.1, &[], lease).await?;
            let mut refs: Vec<(String, String)> =
                vec![("containerd.io/gc.ref.content.config".into(), image.config.0.digest.clone())];
            for (i, (l, _)) in image.layers.iter().enumerate() {
                refs.push((format!("containerd.io/gc.ref.content.l.{i}"), l.digest.clone()));
            }
            let refs: Vec<(&str, &str)> = refs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.write_blob(&image.manifest.0, &image.manifest.1, &refs, lease).await?;
            self.put_image(&image.name, &image.manifest.0, lease).await?;
            let layers: Vec<Desc> = image.layers.iter().map(|(d, _)| d.clone()).collect();
            self.unpack(&image.name, &layers, &image.diff_ids, lease).await?;
            if let Some(top) = chains.last() {
                self.label_config(&image.config.0.digest, top).await?;
            }
            names.push(image.name.clone());
        }
        Ok(names)
    }

    /// Writes one blob unless the store has it; `labels` are set at commit.
    async fn write_blob(&self, desc: &Desc, data: &[u8], labels: &[(&str, &str)], lease: &str) -> Result<()> {
        let info = self.request(InfoRequest { digest: desc.digest.clone() }, Some(lease));
        if self.client().content().info(info).await.is_ok() {
            return Ok(());
        }
        let reference = format!("skiff-import-{}", desc.digest);
        let total = data.len() as i64;
        let mut requests = Vec::new();
        for (i, chunk) in data.chunks(1 << 20).enumerate() {
            requests.push(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                expected: desc.digest.clone(),
                offset: (i << 20) as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            });
        }
        requests.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: desc.digest.clone(),
            offset: total,
            data: Vec::new(),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        });
        let req = self.request(futures::stream::iter(requests), Some(lease));
        match self.client().content().write(req).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                while let Some(message) = stream.next().await {
                    match message {
                        Ok(_) => {}
                        Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                        Err(s) => return Err(call("Content.Write")(s)),
                    }
                }
                Ok(())
            }
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(call("Content.Write")(s)),
        }
    }

    async fn put_image(&self, name: &str, manifest: &Desc, lease: &str) -> Result<()> {
        let image = Image { name: name.to_owned(), target: Some(descriptor(manifest)), ..Default::default() };
        let req = self
            .request(CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }, Some(lease));
        match self.client().images().create(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                let req = self.request(
                    UpdateImageRequest { image: Some(image), update_mask: None, source_date_epoch: None },
                    Some(lease),
                );
                self.client().images().update(req).await.map(drop).map_err(call("Images.Update"))
            }
            Err(s) => Err(call("Images.Create")(s)),
        }
    }

    /// Applies each layer onto its parent snapshot, skipping those already unpacked.
    async fn unpack(&self, image: &str, layers: &[Desc], diff_ids: &[String], lease: &str) -> Result<()> {
        let chains = chain_ids(diff_ids);
        for (i, layer) in layers.iter().enumerate() {
            let chain = &chains[i];
            let stat = self.request(
                StatSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: chain.clone() },
                Some(lease),
            );
            if self.client().snapshots().stat(stat).await.is_ok() {
                continue;
            }
            let key = format!("extract-{}-{chain}", jiff::Timestamp::now().as_nanosecond());
            let parent = if i == 0 { String::new() } else { chains[i - 1].clone() };
            let prepare = self.request(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.clone(),
                    parent,
                    labels: HashMap::new(),
                },
                Some(lease),
            );
            let mounts = self
                .client()
                .snapshots()
                .prepare(prepare)
                .await
                .map_err(call("Snapshots.Prepare"))?
                .into_inner()
                .mounts;
            let apply = self.request(
                ApplyRequest {
                    diff: Some(descriptor(layer)),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                Some(lease),
            );
            let applied = self.client().diff().apply(apply).await;
            let applied = match applied {
                Ok(a) => a.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
                Err(s) => {
                    self.remove_snapshot(&key).await?;
                    return Err(call("Diff.Apply")(s));
                }
            };
            if applied != diff_ids[i] {
                self.remove_snapshot(&key).await?;
                return Err(bad(
                    image,
                    format!("layer {i} unpacked to {applied}, its config says {}", diff_ids[i]),
                ));
            }
            let commit = self.request(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain.clone(),
                    key: key.clone(),
                    labels: HashMap::new(),
                },
                Some(lease),
            );
            match self.client().snapshots().commit(commit).await {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => self.remove_snapshot(&key).await?,
                Err(s) => return Err(call("Snapshots.Commit")(s)),
            }
        }
        Ok(())
    }

    pub(super) async fn remove_snapshot(&self, key: &str) -> Result<()> {
        let req = self
            .request(RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: key.to_owned() }, None);
        super::gone_ok(self.client().snapshots().remove(req).await, "Snapshots.Remove")
    }

    /// Points the image config at its unpacked snapshot, so garbage collection keeps both.
    async fn label_config(&self, config: &str, top_chain: &str) -> Result<()> {
        let label = format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}");
        let info = containerd_client::services::v1::Info {
            digest: config.to_owned(),
            labels: [(label.clone(), top_chain.to_owned())].into_iter().collect(),
            ..Default::default()
        };
        let req = self.request(
            UpdateContentRequest {
                info: Some(info),
                update_mask: Some(prost_types_mask(&format!("labels.{label}"))),
            },
            None,
        );
        self.client().content().update(req).await.map(drop).map_err(call("Content.Update"))
    }

    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let req = self.request(ReadContentRequest { digest: digest.to_owned(), offset: 0, size: 0 }, None);
        let mut stream = self.client().content().read(req).await.map_err(call("Content.Read"))?.into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend(chunk.map_err(call("Content.Read"))?.data);
        }
        Ok(data)
    }

    /// The local image `name` (normalized), unpacked; `None` if containerd does not have it.
    pub async fn resolve(&self, name: &str) -> Result<Option<LocalImage>> {
        let name = normalize(name);
        let req = self.request(GetImageRequest { name: name.clone() }, None);
        let image = match self.client().images().get(req).await {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(call("Images.Get")(s)),
        };
        let target = image.and_then(|i| i.target).ok_or_else(|| bad(&name, "the image has no target"))?;
        let mut manifest_bytes = self.read_blob(&target.digest).await?;
        if matches!(target.media_type.as_str(), MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST) {
            let index: Index =
                serde_json::from_slice(&manifest_bytes).map_err(|e| bad(&name, e.to_string()))?;
            let chosen = index
                .manifests
                .into_iter()
                .find(|m| this_platform(&m.platform))
                .ok_or_else(|| bad(&name, "no linux/amd64 image"))?;
            manifest_bytes = self.read_blob(&chosen.digest).await?;
        }
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| bad(&name, format!("manifest: {e}")))?;
        let config_bytes = self.read_blob(&manifest.config.digest).await?;
        let config: ConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|e| bad(&name, format!("config: {e}")))?;
        let chains = chain_ids(&config.rootfs.diff_ids);
        let top_chain = chains.last().cloned().ok_or_else(|| bad(&name, "the image has no layers"))?;
        let stat = self
            .request(StatSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: top_chain.clone() }, None);
        if self.client().snapshots().stat(stat).await.is_err() {
            let lease = self.lease("unpack", Duration::from_secs(600)).await?;
            let unpacked = self.unpack(&name, &manifest.layers, &config.rootfs.diff_ids, &lease).await;
            let labelled = match unpacked {
                Ok(()) => self.label_config(&manifest.config.digest, &top_chain).await,
                Err(e) => Err(e),
            };
            self.release(&lease).await?;
            labelled?;
        }
        Ok(Some(LocalImage {
            name,
            id: manifest.config.digest,
            config: config.config.unwrap_or_default(),
            top_chain,
        }))
    }
}

/// A protobuf field mask naming `path`.
fn prost_types_mask(path: &str) -> prost_types::FieldMask {
    prost_types::FieldMask { paths: vec![path.to_owned()] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_docker() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normalize("user/app"), "docker.io/user/app:latest");
        assert_eq!(normalize("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(normalize("registry.example/a/b:v2"), "registry.example/a/b:v2");
        assert_eq!(normalize("skiff.local/busybox:latest"), "skiff.local/busybox:latest");
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(ids[1], digest(b"sha256:a sha256:b"));
    }
}
