//! Per-CPU packet and byte counters, one slot per hook.

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::map,
    maps::PerCpuArray,
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use skiff_common::{Hook, PacketCounter};

/// Pinned by name, so counters survive an agent restart. Named like `names::MAP_COUNTERS`.
#[map]
static SKIFF_COUNTERS: PerCpuArray<PacketCounter> = PerCpuArray::pinned(Hook::COUNT, 0);

/// The only way a counting program fails: the slot lookup returned nothing.
pub struct MissingSlot;

#[inline(always)]
fn record(hook: Hook, len: u64) -> Result<(), MissingSlot> {
    let slot = SKIFF_COUNTERS.get_ptr_mut(hook.slot()).ok_or(MissingSlot)?;
    // SAFETY: the pointer comes from a successful per-CPU array lookup and stays valid for this
    // program run; per-CPU storage means no other CPU writes it concurrently.
    unsafe { (*slot).record(len) };
    Ok(())
}

pub fn try_count_xdp(ctx: &XdpContext) -> Result<u32, MissingSlot> {
    let len = (ctx.data_end() - ctx.data()) as u64;
    record(Hook::Xdp, len)?;
    debug!(ctx, "xdp: {} bytes on ifindex {}", len, ctx.ingress_ifindex() as u32);
    Ok(xdp_action::XDP_PASS)
}

pub fn try_count_tc(ctx: &TcContext, hook: Hook) -> Result<i32, MissingSlot> {
    let len = u64::from(ctx.len());
    record(hook, len)?;
    // SAFETY: `skb` points at the context the kernel handed this program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    debug!(ctx, "{}: {} bytes on ifindex {}", hook.as_str(), len, ifindex);
    Ok(TC_ACT_OK)
}
