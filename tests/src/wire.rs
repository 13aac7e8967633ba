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
//!
//! [`XdpRedirect`] is the other half of a wire: a port that hands every frame it receives to
//! another interface's transmit as a raw XDP frame (`bpf_redirect`), so a veth behind it gets
//! frames in its ring as a NIC gets them from DMA, never an skb.

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

// The instructions below are laid out in the machine's byte order: little-endian only.
#[cfg(target_endian = "big")]
compile_error!("wire.rs assembles eBPF for little-endian machines only");

/// One eBPF instruction: opcode, destination and source registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: u32) -> u64 {
    let (o, i) = (off.to_le_bytes(), imm.to_le_bytes());
    u64::from_le_bytes([code, (src << 4) | dst, o[0], o[1], i[0], i[1], i[2], i[3]])
}
/// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
fn mov_imm(dst: u8, imm: u32) -> u64 {
    insn(0xb7, dst, 0, 0, imm)
}
/// `BPF_JMP | BPF_CALL` of helper `id`.
fn call(id: u32) -> u64 {
    insn(0x85, 0, 0, 0, id)
}
/// `BPF_JMP | BPF_EXIT`.
const EXIT: u64 = 0x95;
const XDP_PASS: u32 = 2;
const HELPER_REDIRECT: u32 = 23;

/// `bpf_redirect(to, 0)` and return its verdict.
fn redirect(to: u32) -> [u64; 4] {
    [mov_imm(1, to), mov_imm(2, 0), call(HELPER_REDIRECT), EXIT]
}

/// Redirects frames whose destination MAC is `mac` to `to`; passes every other frame.
fn redirect_mac(mac: [u8; 6], to: u32) -> Vec<u64> {
    let lo = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let hi = u32::from(u16::from_le_bytes([mac[4], mac[5]]));
    let mut p = vec![
        insn(0x61, 2, 1, 0, 0),  // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),  // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),  // r4 = r2
        insn(0x07, 4, 0, 0, 6),  // r4 += 6
        insn(0x2d, 4, 3, 8, 0),  // if r4 > r3 goto pass
        insn(0x61, 5, 2, 0, 0),  // r5 = *(u32 *)(r2 + 0)
        insn(0x56, 5, 0, 6, lo), // if w5 != lo goto pass
        insn(0x69, 5, 2, 4, 0),  // r5 = *(u16 *)(r2 + 4)
        insn(0x56, 5, 0, 4, hi), // if w5 != hi goto pass
    ];
    p.extend(redirect(to));
    p.extend([mov_imm(0, XDP_PASS), EXIT]); // pass:
    p
}

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

/// The index of `iface` in the calling thread's namespace.
pub(crate) fn ifindex(iface: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(iface).map_err(|e| Error::io(format!("no interface {iface}"), e.into()))
}

/// Loads `program` (XDP, named `name`) and attaches it to `iface` in native (driver) mode; the
/// link, which detaches it when closed.
fn attach_program(program: &[u64], name: &str, iface: &str) -> Result<OwnedFd> {
    crate::require_root()?;
    let ifindex = ifindex(iface)?;
    let license = CString::new("GPL").expect("no NUL");
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
    put_u32(&mut attr, 4, program.len() as u32);
    put_u64(&mut attr, 8, program.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..48 + name.len()].copy_from_slice(name.as_bytes());
    put_u32(&mut attr, 68, BPF_XDP);
    let prog = bpf(BPF_PROG_LOAD, &mut attr, &format!("loading the XDP program {name}"))?;

    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, ifindex);
    put_u32(&mut attr, 8, BPF_XDP);
    // XDP_FLAGS_DRV_MODE: only a native program makes the peer poll.
    put_u32(&mut attr, 12, 1 << 2);
    bpf(BPF_LINK_CREATE, &mut attr, &format!("attaching the XDP program {name} to {iface}"))
}

/// A port that sends every frame it receives out of another interface, as a raw XDP frame
/// (`bpf_redirect`), attached to an interface of the calling thread's namespace. Detached when
/// dropped.
#[derive(Debug)]
pub struct XdpRedirect {
    _link: OwnedFd,
}

impl XdpRedirect {
    /// Redirects everything `iface` receives to `to` (both in the calling thread's namespace).
    /// The frames reach `to`'s peer only if that peer polls (a native XDP program, or GRO on).
    pub fn attach(iface: &str, to: &str) -> Result<Self> {
        Ok(XdpRedirect { _link: attach_program(&redirect(ifindex(to)?), "skiff_port", iface)? })
    }

    /// Redirects the frames `iface` receives for `mac` to `to`, and passes the rest on (to the
    /// bridge it is a port of, say): a switch's fast path for one destination.
    pub fn attach_for(iface: &str, mac: [u8; 6], to: &str) -> Result<Self> {
        let program = redirect_mac(mac, ifindex(to)?);
        Ok(XdpRedirect { _link: attach_program(&program, "skiff_port", iface)? })
    }
}

impl XdpPass {
    /// Loads the program and attaches it to `iface` in native (driver) mode.
    pub fn attach(iface: &str) -> Result<Self> {
        let link = attach_program(&[mov_imm(0, XDP_PASS), EXIT], "skiff_wire", iface)?;
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
