//! Types and names shared by skiff's eBPF programs and its user-space agent.
//!
//! Everything here is `#![no_std]`, `#[repr(C)]` with explicit layout, and checked for size at
//! compile time, because the kernel side and the user side must agree on every byte. User space
//! enables the `user` feature to get `aya::Pod` impls for the map types.
#![no_std]

pub mod counters;
pub mod drop_reason;
pub mod lb;
pub mod names;
pub mod trace;

pub use counters::{Hook, PacketCounter};
pub use drop_reason::DropReason;
