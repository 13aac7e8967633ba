use std::{io, path::PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Harness failures, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("privileged test harness: run as root (needs CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF)")]
    NotRoot,
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: std::process::ExitStatus, stderr: String },
    #[error("{what}: {path}")]
    Path {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {after_ms} ms waiting for {what}")]
    Timeout { what: String, after_ms: u128 },
    #[error("echo {seq} came back altered")]
    EchoAltered { seq: usize },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}
