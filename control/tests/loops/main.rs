//! The control loops driven deterministically: an in-memory store, a hand-moved clock, and
//! `Manager::settle` to run every reconcile that is due — no sleeps, no background tasks.

mod daemonsets;
mod ipam;
mod lb;
mod leader;
mod nodes;
mod quota;
mod scheduling;
mod slices;
mod workloads;
mod world;
