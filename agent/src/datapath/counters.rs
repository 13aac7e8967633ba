//! Reading the per-CPU packet counters.

use aya::maps::{Map, PerCpuArray};
use skiff_common::{Hook, PacketCounter, names};

use super::DatapathError;

/// Counters of every hook, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    per_hook: [PacketCounter; Hook::COUNT as usize],
}

impl Counters {
    pub(super) fn read(map: &Map) -> Result<Self, DatapathError> {
        let err = |source| DatapathError::Map { name: names::MAP_COUNTERS, source };
        let array: PerCpuArray<_, PacketCounter> = PerCpuArray::try_from(map).map_err(err)?;
        let mut counters = Counters::default();
        for hook in Hook::ALL {
            let per_cpu = array.get(&hook.slot(), 0).map_err(err)?;
            for value in per_cpu.iter() {
                counters.per_hook[hook.slot() as usize].merge(value);
            }
        }
        Ok(counters)
    }

    /// The summed counter of one hook.
    pub fn get(&self, hook: Hook) -> PacketCounter {
        self.per_hook[hook.slot() as usize]
    }

    /// Counts since `earlier` (pinned maps keep counting across agent restarts).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut delta = *self;
        for (now, then) in delta.per_hook.iter_mut().zip(earlier.per_hook.iter()) {
            now.packets = now.packets.wrapping_sub(then.packets);
            now.bytes = now.bytes.wrapping_sub(then.bytes);
        }
        delta
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<12} {:>12} {:>14}", "HOOK", "PACKETS", "BYTES")?;
        for hook in Hook::ALL {
            let c = self.get(hook);
            writeln!(f, "{:<12} {:>12} {:>14}", hook.as_str(), c.packets, c.bytes)?;
        }
        Ok(())
    }
}
