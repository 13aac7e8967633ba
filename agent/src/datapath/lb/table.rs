//! The Maglev map, mapped into the agent's memory: a row is written with plain stores rather than
//! one `bpf_map_update_elem` per slot.

use std::{num::NonZeroUsize, os::fd::AsFd, ptr::NonNull};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use crate::datapath::DatapathError;

/// The kernel stores array values at 8-byte strides (`round_up(value_size, 8)`).
const STRIDE: usize = 8;

/// `rows` rows of `m` backend ids each, shared with the datapath.
#[derive(Debug)]
pub struct MaglevTable {
    base: NonNull<u8>,
    len: usize,
    m: u32,
    rows: u32,
}

// SAFETY: the mapping is owned by this value; access goes through &self / &mut self.
unsafe impl Send for MaglevTable {}

impl MaglevTable {
    /// Maps the array behind `fd`, which holds `entries` = `rows * m` slots.
    pub fn map(fd: impl AsFd, entries: u32, m: u32) -> Result<Self, DatapathError> {
        let len = entries as usize * STRIDE;
        let size = NonZeroUsize::new(len).ok_or(DatapathError::MaglevSize { entries, m })?;
        if m == 0 || !entries.is_multiple_of(m) {
            return Err(DatapathError::MaglevSize { entries, m });
        }
        // SAFETY: a fresh shared mapping of a BPF_F_MMAPABLE array; `len` is its exact value area.
        let base = unsafe {
            mmap(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd, 0)
        }
        .map_err(|errno| DatapathError::Mmap(errno.into()))?;
        Ok(Self { base: base.cast(), len, m, rows: entries / m })
    }

    pub fn m(&self) -> u32 {
        self.m
    }

    pub fn rows(&self) -> u32 {
        self.rows
    }

    fn slot_ptr(&self, row: u32, i: u32) -> *mut u32 {
        let offset = (row as usize * self.m as usize + i as usize) * STRIDE;
        debug_assert!(offset + STRIDE <= self.len);
        // SAFETY: callers check row < rows and i < m, so the offset is inside the mapping.
        unsafe { self.base.as_ptr().add(offset).cast() }
    }

    /// Writes one frontend's row. `ids` must hold exactly `m` backend ids.
    pub fn write_row(&mut self, row: u32, ids: &[u32]) -> Result<(), DatapathError> {
        if row >= self.rows || ids.len() != self.m as usize {
            return Err(DatapathError::MaglevRow { row, len: ids.len(), rows: self.rows, m: self.m });
        }
        for (i, id) in ids.iter().enumerate() {
            // SAFETY: in bounds (checked above); volatile because the kernel reads it concurrently.
            unsafe { self.slot_ptr(row, i as u32).write_volatile(*id) };
        }
        Ok(())
    }

    /// Reads one frontend's row back.
    pub fn read_row(&self, row: u32) -> Option<Vec<u32>> {
        (row < self.rows).then(|| {
            // SAFETY: in bounds (row checked, i < m).
            (0..self.m).map(|i| unsafe { self.slot_ptr(row, i).read_volatile() }).collect()
        })
    }
}

impl Drop for MaglevTable {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped, once.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}
