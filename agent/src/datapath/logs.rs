//! Delivering the programs' aya-log records to the agent's logger (`log` → `tracing`).

use aya_log::EbpfLogger;
use tokio::io::{Interest, unix::AsyncFd};

/// Delivers log records as they arrive, until the task is dropped or the ring buffer fd fails.
/// aya-log only reads when told to; this waits for the ring buffer's fd to become readable.
pub async fn forward<L: log::Log + Send + 'static>(logger: EbpfLogger<L>) -> std::io::Result<()> {
    // SAFETY: the logger owns the ring buffer fd, and the AsyncFd owns the logger, so the fd stays
    // open for as long as it is registered.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }?;
    loop {
        let mut guard = fd.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
