//! The test and lab images, built here from Debian's busybox-static: one uncompressed layer with
//! `/bin/busybox`, its applets as symlinks, a minimal `/etc` and any extra files (the demo
//! workload, [`build_echo_archive`]), written as an OCI image layout archive that
//! [`super::Runtime::import`] (and `skiff image import`) takes. Built deterministically (fixed
//! times and owners), so a digest only changes with what goes in.

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde_json::json;

use super::image::{MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER, MEDIA_OCI_MANIFEST, digest};

/// The image's name (not `latest`: Kubernetes would default its pull policy to Always, and
/// this image lives on nodes, not in a registry).
pub const IMAGE: &str = "skiff.local/busybox:local";

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The demo workload image's repository; its tag is skiff's version ([`echo_image`]).
pub const ECHO_REPOSITORY: &str = "skiff.local/echo";

/// Where the demo image keeps `skiff-echo`, its entrypoint.
pub const ECHO_BINARY: &str = "/skiff-echo";

/// `skiff.local/echo:<version>`: versioned, so a node never runs a stale echo under a new name.
pub fn echo_image() -> String {
    format!("{ECHO_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// An image made of busybox plus extra files: its name, content and what it runs.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Full reference, e.g. `skiff.local/echo:0.1.0`; its tag also becomes the OCI ref name.
    pub name: String,
    /// Executables to add: absolute path in the image → file on the host (mode 0755).
    pub files: Vec<(String, PathBuf)>,
    /// The config's `Entrypoint` (left out when empty).
    pub entrypoint: Vec<String>,
    /// The config's `Cmd` (left out when empty).
    pub cmd: Vec<String>,
}

impl ImageSpec {
    /// The plain busybox test image ([`IMAGE`], runs `sh`).
    pub fn busybox() -> Self {
        Self { name: IMAGE.to_owned(), files: vec![], entrypoint: vec![], cmd: vec!["sh".to_owned()] }
    }

    /// The demo image ([`echo_image`]): busybox for debugging, `skiff-echo` as the entrypoint.
    pub fn echo(skiff_echo: &Path) -> Self {
        Self {
            name: echo_image(),
            files: vec![(ECHO_BINARY.to_owned(), skiff_echo.to_owned())],
            entrypoint: vec![ECHO_BINARY.to_owned()],
            cmd: vec![],
        }
    }
}

const APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "echo", "cat", "ls", "httpd", "nc", "wget", "true", "false", "env", "hostname",
    "id", "ps", "kill", "mkdir", "rm", "touch", "test", "[", "printf", "grep", "ip", "ping", "date", "head",
    "tail", "wc", "seq", "sort", "uname", "stat", "sync", "trap", "cp", "mv", "ln", "chmod", "readlink",
    "tee", "df", "mount", "umount", "sed", "awk", "expr", "timeout", "find", "xargs", "basename", "dirname",
    "pwd",
];

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_path(path);
    h
}

/// Directories of the base layer (and `tmp/`, added with its sticky mode).
const DIRS: &[&str] = &["bin/", "etc/", "proc/", "sys/", "dev/", "root/", "var/", "var/www/"];

/// The root filesystem layer (an uncompressed tar): busybox, then `extra` (relative path, bytes).
fn layer(busybox: &[u8], extra: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    // Parents of extra files come first, as directories, so no unpacker has to invent them.
    let mut dirs: Vec<String> = DIRS.iter().map(|d| (*d).to_owned()).collect();
    let known: BTreeSet<String> = dirs.iter().cloned().chain(["tmp/".to_owned()]).collect();
    let mut parents = BTreeSet::new();
    for (path, _) in extra {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            at += i + 1;
            parents.insert(path[..at].to_owned());
        }
    }
    dirs.extend(parents.into_iter().filter(|p| !known.contains(p)));
    for dir in &dirs {
        let mut h = header(dir, tar::EntryType::Directory, 0o755, 0);
        h.set_cksum();
        b.append(&h, std::io::empty())?;
    }
    let mut tmp = header("tmp/", tar::EntryType::Directory, 0o1777, 0);
    tmp.set_cksum();
    b.append(&tmp, std::io::empty())?;
    let mut bin = header("bin/busybox", tar::EntryType::Regular, 0o755, busybox.len() as u64);
    bin.set_cksum();
    b.append(&bin, busybox)?;
    for applet in APPLETS {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox")?;
        h.set_cksum();
        b.append(&h, std::io::empty())?;
    }
    let files: [(&str, &[u8]); 3] = [
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        ("etc/group", b"root:x:0:\nnobody:x:65534:\n"),
        ("var/www/index.html", b"skiff\n"),
    ];
    for (path, data) in files {
        let mut h = header(path, tar::EntryType::Regular, 0o644, data.len() as u64);
        h.set_cksum();
        b.append(&h, data)?;
    }
    for (path, data) in extra {
        let mut h = header(path, tar::EntryType::Regular, 0o755, data.len() as u64);
        h.set_cksum();
        b.append(&h, data.as_slice())?;
    }
    b.into_inner()
}

/// The tag of an image reference (`latest` when it has none, as for `docker pull`).
fn tag(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.split_once(':').map_or("latest", |(_, t)| t.split('@').next().unwrap_or(t))
}

fn blob(builder: &mut tar::Builder<std::fs::File>, data: &[u8]) -> std::io::Result<String> {
    let d = digest(data);
    let hex = d.trim_start_matches("sha256:");
    let mut h = header(&format!("blobs/sha256/{hex}"), tar::EntryType::Regular, 0o644, data.len() as u64);
    h.set_cksum();
    builder.append(&h, data)?;
    Ok(d)
}

/// Writes the busybox test image ([`IMAGE`]) as an OCI image layout archive at `out`, from the
/// busybox binary at `busybox` (normally [`BUSYBOX`]).
pub fn build_archive(busybox: &Path, out: &Path) -> std::io::Result<()> {
    build_image(busybox, &ImageSpec::busybox(), out)
}

/// Writes the demo image ([`echo_image`]) at `out`: busybox plus the static `skiff-echo` binary
/// (`cargo xtask echo-image` builds that one) as the entrypoint.
pub fn build_echo_archive(busybox: &Path, skiff_echo: &Path, out: &Path) -> std::io::Result<()> {
    build_image(busybox, &ImageSpec::echo(skiff_echo), out)
}

/// Writes the image `spec` describes as an OCI image layout archive at `out` (atomically: a
/// `.partial` file renamed into place).
pub fn build_image(busybox: &Path, spec: &ImageSpec, out: &Path) -> std::io::Result<()> {
    let binary = std::fs::read(busybox)?;
    let mut extra = Vec::with_capacity(spec.files.len());
    for (path, host) in &spec.files {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() || rel.ends_with('/') || rel.split('/').any(|c| c == ".." || c == ".") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{path}: not a file path inside the image"),
            ));
        }
        extra.push((rel.to_owned(), std::fs::read(host)?));
    }
    let layer = layer(&binary, &extra)?;
    let mut run = json!({"Env": ["PATH=/bin"], "WorkingDir": "/"});
    if !spec.entrypoint.is_empty() {
        run["Entrypoint"] = json!(spec.entrypoint);
    }
    if !spec.cmd.is_empty() {
        run["Cmd"] = json!(spec.cmd);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": MEDIA_OCI_LAYER, "digest": digest(&layer), "size": layer.len()}],
    }))?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_OCI_MANIFEST, "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": spec.name, "org.opencontainers.image.ref.name": tag(&spec.name)},
        }],
    }))?;
    let tmp = out.with_extension("partial");
    let mut builder = tar::Builder::new(std::fs::File::create(&tmp)?);
    for data in [&layer, &config, &manifest] {
        blob(&mut builder, data)?;
    }
    for (path, data) in [("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()), ("index.json", index)]
    {
        let mut h = header(path, tar::EntryType::Regular, 0o644, data.len() as u64);
        h.set_cksum();
        builder.append(&h, data.as_slice())?;
    }
    builder.into_inner()?.flush()?;
    std::fs::rename(tmp, out)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, io::Read as _};

    use serde_json::Value;

    use super::*;

    /// An archive's regular files and symlinks by path (symlinks map to their target).
    fn entries(tar_bytes: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut out = HashMap::new();
        let mut archive = tar::Archive::new(tar_bytes);
        for entry in archive.entries().expect("tar") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            if let Some(link) = entry.link_name().expect("link") {
                data = link.to_string_lossy().as_bytes().to_vec();
            }
            entry.read_to_end(&mut data).expect("read");
            out.insert(path, data);
        }
        out
    }

    fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, desc: &Value) -> &'a [u8] {
        let d = desc["digest"].as_str().expect("digest");
        let data = &files[&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))];
        assert_eq!(digest(data), d, "blob content matches its digest");
        assert_eq!(desc["size"].as_u64(), Some(data.len() as u64));
        data
    }

    /// Builds `spec` from fake binaries; returns (index, config, layer entries).
    fn build(spec: &ImageSpec, busybox: &Path) -> (Value, Value, HashMap<String, Vec<u8>>) {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("image.tar");
        build_image(busybox, spec, &out).expect("build");
        let files = entries(&std::fs::read(&out).expect("archive"));
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: Value = serde_json::from_slice(&files["index.json"]).expect("index");
        let manifest: Value = serde_json::from_slice(blob(&files, &index["manifests"][0])).expect("manifest");
        assert_eq!(manifest["mediaType"], MEDIA_OCI_MANIFEST);
        let config: Value = serde_json::from_slice(blob(&files, &manifest["config"])).expect("config");
        let layer = blob(&files, &manifest["layers"][0]);
        assert_eq!(config["rootfs"]["diff_ids"][0].as_str(), Some(digest(layer).as_str()));
        (index, config, entries(layer))
    }

    #[test]
    fn echo_image_has_busybox_and_the_entrypoint() {
        let dir = tempfile::tempdir().expect("tmp");
        let (busybox, echo) = (dir.path().join("busybox"), dir.path().join("skiff-echo"));
        std::fs::write(&busybox, b"BUSYBOX").expect("write");
        std::fs::write(&echo, b"ECHO").expect("write");
        let (index, config, layer) = build(&ImageSpec::echo(&echo), &busybox);
        let name = echo_image();
        assert_eq!(name, format!("skiff.local/echo:{}", env!("CARGO_PKG_VERSION")));
        let annotations = &index["manifests"][0]["annotations"];
        assert_eq!(annotations["io.containerd.image.name"].as_str(), Some(name.as_str()));
        assert_eq!(
            annotations["org.opencontainers.image.ref.name"].as_str(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/skiff-echo"]));
        assert!(config["config"].get("Cmd").is_none(), "{config}");
        assert_eq!(layer["skiff-echo"], b"ECHO");
        assert_eq!(layer["bin/busybox"], b"BUSYBOX");
        assert_eq!(layer["bin/sh"], b"busybox");
    }

    #[test]
    fn busybox_image_is_unchanged_and_nested_files_get_parents() {
        let dir = tempfile::tempdir().expect("tmp");
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, b"BUSYBOX").expect("write");
        let (index, config, layer) = build(&ImageSpec::busybox(), &busybox);
        assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], IMAGE);
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "local");
        assert_eq!(
            config["config"],
            serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"})
        );
        assert!(!layer.contains_key("skiff-echo"));

        let spec = ImageSpec {
            name: "skiff.local/x".into(),
            files: vec![("/usr/local/bin/x".into(), busybox.clone())],
            entrypoint: vec![],
            cmd: vec![],
        };
        let (index, _, layer) = build(&spec, &busybox);
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "latest");
        for parent in ["usr/", "usr/local/", "usr/local/bin/"] {
            assert!(layer.contains_key(parent), "{parent} missing");
        }
        let bad = ImageSpec { files: vec![("/../x".into(), busybox.clone())], ..spec };
        assert!(build_image(&busybox, &bad, &dir.path().join("bad.tar")).is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(tag("skiff.local/echo:0.1.0"), "0.1.0");
        assert_eq!(tag("localhost:5000/echo"), "latest");
        assert_eq!(tag("localhost:5000/echo:v1@sha256:ab"), "v1");
    }
}
