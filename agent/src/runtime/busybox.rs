//! The test and lab image, built here from Debian's busybox-static: one uncompressed layer with
//! `/bin/busybox`, its applets as symlinks and a minimal `/etc`, written as an OCI image layout
//! archive that [`super::Runtime::import`] (and `skiff image import`) takes. Built
//! deterministically (fixed times and owners), so its digest only changes with busybox.

use std::{io::Write as _, path::Path};

use serde_json::json;

use super::image::{MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER, MEDIA_OCI_MANIFEST, digest};

/// The image's name (not `latest`: Kubernetes would default its pull policy to Always, and
/// this image lives on nodes, not in a registry).
pub const IMAGE: &str = "skiff.local/busybox:local";

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

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

/// The root filesystem layer (an uncompressed tar).
fn layer(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["bin/", "etc/", "proc/", "sys/", "dev/", "root/", "var/", "var/www/"] {
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
    b.into_inner()
}

fn blob(builder: &mut tar::Builder<std::fs::File>, data: &[u8]) -> std::io::Result<String> {
    let d = digest(data);
    let hex = d.trim_start_matches("sha256:");
    let mut h = header(&format!("blobs/sha256/{hex}"), tar::EntryType::Regular, 0o644, data.len() as u64);
    h.set_cksum();
    builder.append(&h, data)?;
    Ok(d)
}

/// Writes the image as an OCI image layout archive at `out`, from the busybox binary at
/// `busybox` (normally [`BUSYBOX`]).
pub fn build_archive(busybox: &Path, out: &Path) -> std::io::Result<()> {
    let binary = std::fs::read(busybox)?;
    let layer = layer(&binary)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
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
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "local"},
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
