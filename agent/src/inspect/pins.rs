//! Opening a pinned map with errors that say what to do.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use anyhow::{Context, anyhow, bail};
use aya::maps::{MapData, MapError};

fn needs_root(path: &Path) -> anyhow::Error {
    anyhow!("reading {} needs root (CAP_BPF and CAP_SYS_ADMIN)", path.display())
}

/// The pinned map `name` under `pin_dir`.
pub fn open(pin_dir: &Path, name: &str) -> anyhow::Result<MapData> {
    match std::fs::metadata(pin_dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(needs_root(pin_dir)),
        Ok(meta) if meta.is_dir() => {}
        _ => bail!(
            "no skiff datapath is pinned at {}: is skiff-agent running here (or does --pin-dir name another)?",
            pin_dir.display()
        ),
    }
    let path = pin_dir.join(name);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(needs_root(&path)),
        Err(_) => {
            bail!("{} has no {name}: not a skiff pin dir, or one an older agent made", pin_dir.display())
        }
        Ok(_) => {}
    }
    MapData::from_pin(&path).map_err(|e| match e {
        MapError::SyscallError(ref s) if s.io_error.kind() == io::ErrorKind::PermissionDenied => {
            needs_root(&path)
        }
        other => anyhow!(other).context(format!("opening {}", path.display())),
    })
}

/// BPF_MAP_GET_NEXT_KEY's part of `union bpf_attr`.
#[repr(C)]
struct NextKeyAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// How many keys `map` holds, walked with BPF_MAP_GET_NEXT_KEY (aya only walks maps whose key
/// type it knows). A hash map changing underneath restarts the walk at its start, so the count
/// is capped at `max_entries`.
pub fn count_keys(map: &MapData, key_size: u32, max_entries: u32) -> anyhow::Result<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let (mut key, mut next) = (vec![0u8; key_size as usize], vec![0u8; key_size as usize]);
    let mut count = 0u64;
    while count < u64::from(max_entries) {
        let attr = NextKeyAttr {
            map_fd: fd as u32,
            _pad: 0,
            // A null key asks for the first one.
            key: if count == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `attr` points at two live buffers of the map's key size, and the kernel reads
        // no more of `attr` than the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const NextKeyAttr,
                size_of::<NextKeyAttr>(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(err).context("walking the map's keys");
        }
        std::mem::swap(&mut key, &mut next);
        count += 1;
    }
    Ok(count)
}
