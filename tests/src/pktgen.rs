//! A packet generator that hands whole Ethernet frames to an interface's driver: an `AF_PACKET`
//! socket bound to the interface, with the qdisc bypassed (`PACKET_QDISC_BYPASS`), sending
//! batches with `sendmmsg`. No socket layer, routing or neighbour work is spent per frame, so one
//! core offers more than a node's receive path takes. On a veth each frame lands in the peer's
//! receive queue as an skb; a [`crate::wire::XdpRedirect`] port on that peer turns them into raw
//! frames for the interface behind it.
//!
//! (The kernel's own XDP traffic generator, `BPF_PROG_TEST_RUN` with live frames, would make raw
//! frames directly; this machine's kernel answers every live-frame run with `EPERM`, even as
//! root, while the same run without live frames works.)

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::{Error, Result};

/// Frames per `sendmmsg` call.
const BATCH: usize = 64;

/// Sends frames out of one interface of the namespace it was made in.
#[derive(Debug)]
pub struct Pktgen {
    socket: OwnedFd,
}

impl Pktgen {
    /// A generator on `iface` of the calling thread's namespace (once bound, it sends from any
    /// thread).
    pub fn new(iface: &str) -> Result<Self> {
        crate::require_root()?;
        let ifindex = crate::wire::ifindex(iface)?;
        // Protocol 0: a send-only socket, which receives nothing.
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::io("opening a packet socket", io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor we now own.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is valid before the fields are set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let ret = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(Error::io(format!("binding a packet socket to {iface}"), io::Error::last_os_error()));
        }
        let one: libc::c_int = 1;
        // SAFETY: an int option of the size passed.
        let ret = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(Error::io("bypassing the qdisc", io::Error::last_os_error()));
        }
        Ok(Pktgen { socket })
    }

    /// Sends `frames` (whole Ethernet frames) once each, in batches. A frame the interface
    /// refuses (`ENOBUFS`: its queue is full) is skipped and counted, and sending goes on with
    /// the next; any other error ends the call. A frame the receiving side has no room for is
    /// dropped there, as a full NIC queue drops it, and counts as sent.
    pub fn send(&self, frames: &[Vec<u8>]) -> Result<Sent> {
        let mut out = Sent::default();
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec { iov_base: f.as_ptr().cast_mut().cast(), iov_len: f.len() })
            .collect();
        let mut at = 0;
        while at < iov.len() {
            let end = (at + BATCH).min(iov.len());
            let mut msgs: Vec<libc::mmsghdr> = iov[at..end]
                .iter_mut()
                .map(|v| {
                    // SAFETY: msghdr is plain data; all-zero is an empty message.
                    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                    hdr.msg_iov = v;
                    hdr.msg_iovlen = 1;
                    libc::mmsghdr { msg_hdr: hdr, msg_len: 0 }
                })
                .collect();
            // SAFETY: `msgs` points into `iov`, which points into `frames`; all outlive the call.
            let n =
                unsafe { libc::sendmmsg(self.socket.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ENOBUFS) {
                    return Err(Error::io("sending frames", err));
                }
                // The first frame of the batch was refused.
                out.refused += 1;
                at += 1;
                continue;
            }
            // `n` frames went; if the batch stopped short, the next one failed (its error is
            // reported by the next call, which starts there).
            out.sent += n as usize;
            at += n as usize;
        }
        Ok(out)
    }
}

/// What one [`Pktgen::send`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Frames the interface took.
    pub sent: usize,
    /// Frames it refused for a full queue.
    pub refused: usize,
}
