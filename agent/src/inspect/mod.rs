//! What `skiff` reads on a node: the datapath's pinned maps, opened read-only by path, so the
//! commands work whether or not the agent is running (its pins outlive it) and never load or
//! attach anything.

pub mod agent;
pub mod ct;
pub mod drops;
pub mod explain;
pub mod maps;
pub mod output;
mod pins;
pub mod svc;
pub mod trace;

pub use output::Format;
