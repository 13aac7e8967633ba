//! The CNI protocol (spec 1.1.0, accepting 0.4.0 and 1.0.0 configurations): environment,
//! configuration, results and errors. Owned here: the `cni-plugin` crate stops at 1.0.

pub mod config;
pub mod env;
pub mod error;
pub mod result;

/// The versions VERSION reports and configurations may name.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The newest version, used for errors when the configuration could not be read.
pub const LATEST: &str = "1.1.0";
