//! Writing PKI files: secrets 0600, public material 0644, each through a temporary file and a
//! rename so a crash never leaves half a key behind.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::Context as _;

/// Mode of private keys and of kubeconfigs (which embed one).
pub const SECRET_MODE: u32 = 0o600;
/// Mode of certificates and public keys.
pub const PUBLIC_MODE: u32 = 0o644;

fn write_mode(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("a PKI file needs a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("a PKI file needs a name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    // The umask may have narrowed the mode further; set it exactly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}

/// A private key or anything embedding one.
pub fn write_secret(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_mode(path, contents, SECRET_MODE)
}

/// A certificate or public key.
pub fn write_public(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_mode(path, contents, PUBLIC_MODE)
}

pub fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_0600_and_replace_the_old_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("pki/x.key");
        write_secret(&path, b"one").expect("write");
        write_secret(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, SECRET_MODE);
        assert_eq!(fs::read_dir(dir.path().join("pki")).expect("ls").count(), 1, "no temporary left");
    }
}
