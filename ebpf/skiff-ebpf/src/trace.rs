//! The kernel half of `skiff trace`: each load-balancing program fills a [`Note`] on the stack as
//! it works (a few stores), and on the way out [`emit`] checks one word — is a session on? — and
//! only then builds the event, applies the session's filter and writes to the ring buffer.
//!
//! With `LbConfig::tracing` zero at load the first check is a constant and the verifier removes
//! the whole path, which is what "tracing compiled out" is measured against.

use skiff_common::{
    DropReason,
    lb::CtKey,
    trace::{CtState, NO_ROW, TraceEvent, TraceHook, Verdict},
};

use crate::lb::maps::{SKIFF_TRACE, SKIFF_TRACE_CFG, config};

/// What a program found out about one packet.
pub struct Note {
    /// The tuple as it arrived; protocol 0 until a TCP/UDP (or rejected) packet was parsed, and
    /// such packets are not traced.
    pub orig: CtKey,
    /// The tuple as it leaves; meaningful for [`Verdict::Forward`] and [`Verdict::Reply`].
    pub xlated: CtKey,
    pub backend_id: u32,
    pub svc_id: u32,
    pub verdict: Verdict,
    pub reason: u8,
    pub ct: CtState,
}

impl Note {
    #[inline(always)]
    pub const fn new() -> Self {
        let zero = CtKey { saddr_be: 0, daddr_be: 0, sport_be: 0, dport_be: 0, proto: 0, _pad: [0; 3] };
        Self {
            orig: zero,
            xlated: zero,
            backend_id: 0,
            svc_id: NO_ROW,
            verdict: Verdict::Pass,
            reason: 0,
            ct: CtState::None,
        }
    }

    /// The packet was answered in place for `reason`.
    #[inline(always)]
    pub fn reject(&mut self, reason: DropReason) {
        self.verdict = Verdict::Reject;
        self.reason = reason.slot() as u8;
    }

    /// The packet was dropped for `reason`.
    #[inline(always)]
    pub fn drop(&mut self, reason: DropReason) {
        self.verdict = Verdict::Drop;
        self.reason = reason.slot() as u8;
    }

    /// The backend chosen for a client → frontend packet and where it now goes.
    #[inline(always)]
    pub fn forward(&mut self, svc_id: u32, backend_id: u32, new: bool, xlated: CtKey) {
        self.verdict = Verdict::Forward;
        self.svc_id = svc_id;
        self.backend_id = backend_id;
        self.ct = if new { CtState::New } else { CtState::Established };
        self.xlated = xlated;
    }

    /// A reply reverse-translated to `xlated`.
    #[inline(always)]
    pub fn reply(&mut self, backend_id: u32, xlated: CtKey) {
        self.verdict = Verdict::Reply;
        self.backend_id = backend_id;
        self.ct = CtState::Reply;
        self.xlated = xlated;
    }
}

/// Reports `note` if a trace session is on and its filter lets the packet through.
#[inline(always)]
pub fn emit(hook: TraceHook, ifindex: u32, len: u32, note: &Note) {
    if config().tracing == 0 {
        return;
    }
    let Some(session) = SKIFF_TRACE_CFG.get(0) else { return };
    if session.enabled == 0 || note.orig.proto == 0 {
        return;
    }
    let untouched = matches!(note.verdict, Verdict::Pass | Verdict::Reject | Verdict::Drop);
    let mut event = TraceEvent {
        // Stamped once the filter has let it through.
        ts_ns: 0,
        ifindex,
        len,
        backend_id: note.backend_id,
        svc_id: note.svc_id,
        hook: hook as u8,
        verdict: note.verdict as u8,
        reason: note.reason,
        ct: note.ct as u8,
        _pad: 0,
        orig: note.orig,
        xlated: if untouched { note.orig } else { note.xlated },
    };
    if session.matches(&event) {
        // SAFETY: helper without arguments.
        event.ts_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        // A full ring loses the event, never the packet.
        let _ = SKIFF_TRACE.output::<TraceEvent>(&event, 0);
    }
}
