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

/// This node's name: `given`, or the host name.
pub fn node_name(given: Option<String>) -> anyhow::Result<String> {
    match given {
        Some(name) => Ok(name),
        None => Ok(nix::unistd::gethostname().context("host name")?.to_string_lossy().into_owned()),
    }
}

/// Refuses any of `interfaces` that this network namespace does not have.
pub fn require_interfaces<'a>(interfaces: impl IntoIterator<Item = &'a String>) -> anyhow::Result<()> {
    for iface in interfaces {
        nix::net::if_::if_nametoindex(iface.as_str())
            .map_err(|_| anyhow::anyhow!("no interface named {iface:?} in this network namespace"))?;
    }
    Ok(())
}
