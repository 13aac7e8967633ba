//! The control loops driven deterministically: an in-memory store, a hand-moved clock, and
//! `Manager::settle` to run every reconcile that is due — no sleeps, no background tasks.

mod cronjobs;
mod daemonsets;
mod disruption;
mod ipam;
mod jobs;
mod lb;
mod leader;
mod nodes;
mod priority;
mod quota;
mod scheduling;
mod serviceaccounts;
mod slices;
mod workloads;
mod world;
