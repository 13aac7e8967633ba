//! The spec's error result: `{cniVersion, code, msg, details}` on stdout and a non-zero exit.

use serde_json::json;

/// Error codes: 1–99 are the spec's, 100 and up are skiff's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const BAD_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    /// The plugin cannot serve ADD (the datapath is not loaded).
    pub const UNAVAILABLE: u32 = 50;
    /// Interface `CNI_IFNAME` already exists in the container.
    pub const INTERFACE_EXISTS: u32 = 100;
    /// No free address left in the pod CIDR.
    pub const POOL_EXHAUSTED: u32 = 101;
    /// A netlink operation failed (creating the veth, addresses, routes).
    pub const NETLINK: u32 = 102;
    /// Attaching the Service datapath to the veth failed.
    pub const DATAPATH: u32 = 103;
    /// CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 104;
}

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: String::new() }
    }

    pub fn details(mut self, details: impl std::fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }

    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        Self::new(code::IO, what.to_string()).details(err)
    }

    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

pub type Result<T, E = CniError> = std::result::Result<T, E>;
