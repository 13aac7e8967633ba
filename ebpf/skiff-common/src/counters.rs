//! Per-hook packet counters kept in a per-CPU array.

/// Where in the packet path a program runs; the value is the slot in the counters map.
///
/// Stable numbering: a value, once released, is never reused or renumbered, because pinned maps
/// outlive agent upgrades.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// XDP, before the kernel allocates an skb.
    Xdp = 0,
    /// TC (tcx) ingress.
    TcIngress = 1,
    /// TC (tcx) egress.
    TcEgress = 2,
}

impl Hook {
    /// Number of slots the counters map needs.
    pub const COUNT: u32 = Self::ALL.len() as u32;
    /// Every hook, in slot order.
    pub const ALL: [Hook; 3] = [Hook::Xdp, Hook::TcIngress, Hook::TcEgress];

    /// The slot index in the counters map.
    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// Short lower-case name for tables and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::TcIngress => "tc-ingress",
            Hook::TcEgress => "tc-egress",
        }
    }
}

/// Packets and bytes seen by one hook on one CPU. Bytes count the whole frame, L2 header included.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<PacketCounter>() == 16);
const _: () = assert!(core::mem::align_of::<PacketCounter>() == 8);

impl PacketCounter {
    /// Counts one packet of `len` bytes.
    #[inline(always)]
    pub fn record(&mut self, len: u64) {
        self.packets = self.packets.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(len);
    }

    /// Adds another counter (used to sum the per-CPU values in user space).
    pub fn merge(&mut self, other: &PacketCounter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

// SAFETY: repr(C), only u64 fields, no padding (asserted above), every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PacketCounter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_slots_are_dense_and_stable() {
        for (i, hook) in Hook::ALL.iter().enumerate() {
            assert_eq!(hook.slot() as usize, i);
        }
        assert_eq!(Hook::TcEgress.slot(), 2, "slots are a stable ABI with pinned maps");
    }

    #[test]
    fn record_and_merge_sum_packets_and_bytes() {
        let mut a = PacketCounter::default();
        a.record(60);
        a.record(100);
        let mut b = PacketCounter::default();
        b.record(40);
        a.merge(&b);
        assert_eq!(a, PacketCounter { packets: 3, bytes: 200 });
    }
}
