//! Making a veth behave like a wire for XDP, the way a physical NIC does. Two things differ on a
//! veth, and the uplink's XDP program needs both fixed wherever it runs on one:
//!
//! - **Complete checksums.** With TX checksum offload on, a veth passes locally generated packets
//!   on with a partial (pseudo-header) checksum that a real NIC would have completed. XDP cannot
//!   tell such a packet apart, so its incremental checksum update would be wrong. Offload off on
//!   the sending side ([`checksums_complete`]) makes the kernel complete them first.
//! - **The far end must poll.** Frames a veth sends back with `XDP_TX` go into its peer's ring,
//!   and the kernel kicks the peer's NAPI only when the peer has a native XDP program itself;
//!   otherwise they wait for the next unrelated packet (seconds, in a quiet lab). A program that
//!   passes everything on the peer ([`XdpPass`]) is the standard remedy.
//!
//! The pass program is two instructions loaded with bpf(2) directly, so the lab can attach it
//! without the eBPF toolchain (`cargo xtask` must build before that toolchain exists).

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use crate::{Error, Result, cmd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

/// `r0 = XDP_PASS; exit`.
const PASS_PROGRAM: [u64; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 2 (XDP_PASS)
    u64::from_le_bytes([0xb7, 0x00, 0, 0, 2, 0, 0, 0]),
    // BPF_JMP | BPF_EXIT
    u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
];

/// Turns TX checksum offload off on `iface` of `netns` (`None`: the calling namespace).
pub fn checksums_complete(netns: Option<&str>, iface: &str) -> Result<()> {
    match netns {
        Some(ns) => cmd::run("ip", &["netns", "exec", ns, "ethtool", "-K", iface, "tx", "off"]),
        None => cmd::run("ethtool", &["-K", iface, "tx", "off"]),
    }
    .map(drop)
}

/// A pass-everything XDP program attached (as a bpf link) to an interface of the namespace the
/// calling thread is in. Detached when dropped, unless pinned.
#[derive(Debug)]
pub struct XdpPass {
    link: OwnedFd,
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128], what: &str) -> Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size passed; the kernel reads only the
    // fields of `cmd` and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(Error::io(what, std::io::Error::last_os_error()));
    }
    // SAFETY: a non-negative return of these commands is a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put_u32(attr: &mut [u8; 128], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

impl XdpPass {
    /// Loads the program and attaches it to `iface` in native (driver) mode.
    pub fn attach(iface: &str) -> Result<Self> {
        crate::require_root()?;
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|e| Error::io(format!("no interface {iface}"), e.into()))?;
        let license = CString::new("GPL").expect("no NUL");
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, PASS_PROGRAM.len() as u32);
        put_u64(&mut attr, 8, PASS_PROGRAM.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        let name = b"skiff_wire";
        attr[48..48 + name.len()].copy_from_slice(name);
        put_u32(&mut attr, 68, BPF_XDP);
        let prog = bpf(BPF_PROG_LOAD, &mut attr, "loading the XDP pass program")?;

        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
        put_u32(&mut attr, 4, ifindex);
        put_u32(&mut attr, 8, BPF_XDP);
        // XDP_FLAGS_DRV_MODE: only a native program makes the peer poll.
        put_u32(&mut attr, 12, 1 << 2);
        let link = bpf(BPF_LINK_CREATE, &mut attr, &format!("attaching the XDP pass program to {iface}"))?;
        Ok(XdpPass { link })
    }

    /// Pins the link at `path` (on bpffs), so it outlives this process; removing the pin (or the
    /// interface) detaches it.
    pub fn pin(self, path: &Path) -> Result<()> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| Error::io("pin path", std::io::Error::other(e)))?;
        let mut attr = [0u8; 128];
        put_u64(&mut attr, 0, c.as_ptr() as u64);
        put_u32(&mut attr, 8, self.link.as_raw_fd() as u32);
        // SAFETY: as in `bpf`; OBJ_PIN returns 0 or -1 and creates no descriptor.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_mut_ptr(), attr.len()) };
        if ret < 0 {
            return Err(Error::Path {
                what: "pinning the XDP pass link",
                path: path.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}
