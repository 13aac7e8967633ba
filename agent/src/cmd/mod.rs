//! The agent's subcommands.

pub mod datapath;
pub mod run;
pub mod service_proxy;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

/// Installs SIGTERM and SIGINT handlers now and returns a future that completes on either.
/// Installing first matters: a signal that arrives before the handler would kill the process.
pub fn wait_for_shutdown() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
