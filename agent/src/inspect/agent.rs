//! Asking the running agent, over its status socket (a Unix socket, so only local root-owned
//! processes reach it): what it wants programmed (`/v1/state`).

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

use super::svc::AgentState;

/// The agent's status socket unless told otherwise.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/skiff/agent.sock";

/// The status socket of the agent whose datapath is pinned at `pin_dir`: the default socket for
/// the default pin dir, else one named after the pin dir, so several agents on one machine (the
/// lab's nodes, tests) each have theirs and `skiff --pin-dir X` finds the right one.
pub fn socket_for(pin_dir: &Path) -> PathBuf {
    if pin_dir == Path::new(skiff_common::names::DEFAULT_PIN_DIR) {
        return PathBuf::from(DEFAULT_STATUS_SOCKET);
    }
    // FNV-1a of the path: stable across runs and builds.
    let hash = pin_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    PathBuf::from(format!("/run/skiff/agent-{hash:016x}.sock"))
}

/// `GET path` on the agent's socket; the body of a 200 answer.
pub fn get(socket: &Path, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => anyhow!("{} needs root", socket.display()),
        _ => anyhow!(
            "no agent answers on {} ({e}): is skiff-agent running here (or does --agent-socket name another)?",
            socket.display()
        ),
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).context("socket timeout")?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: skiff-agent\r\n\r\n").context("asking the agent")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).context("reading the agent's answer")?;
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n").context("the agent's answer has no body")?;
    let head = String::from_utf8_lossy(&reply[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let body = reply[split + 4..].to_vec();
    if status != "200" {
        bail!("the agent answered {path} with {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(body)
}

/// What the agent wants in the datapath.
pub fn state(socket: &Path) -> anyhow::Result<AgentState> {
    let body = get(socket, "/v1/state")?;
    serde_json::from_slice(&body).context("the agent's /v1/state is not what this skiff expects")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pin_dir_has_its_own_socket() {
        assert_eq!(socket_for(Path::new("/sys/fs/bpf/skiff")), Path::new(DEFAULT_STATUS_SOCKET));
        let a = socket_for(Path::new("/sys/fs/bpf/lab/n1"));
        assert_ne!(a, socket_for(Path::new("/sys/fs/bpf/lab/n2")));
        assert_eq!(a, socket_for(Path::new("/sys/fs/bpf/lab/n1")));
    }
}
