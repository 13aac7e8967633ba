//! Traffic the lab sends to prove itself: HTTP requests to skiff-echo from inside a network
//! namespace (a pod's, or the outside one), each on a new connection so every request is a new
//! flow for the load balancer, and a long-lived TCP echo session that must survive an agent
//! restart.
//!
//! Sockets are made by a thread that has entered the namespace (setns); a socket keeps the
//! namespace it was made in, so the session can be used from any thread afterwards.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `f` on a fresh thread inside the network namespace at `netns`.
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let file = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Who answered an HTTP request: skiff-echo's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub pod: String,
    pub node: String,
    /// The peer address the backend saw.
    pub client: String,
}

/// `GET /` on a new connection to `addr`, in the calling thread's namespace.
pub fn http_get(addr: SocketAddr) -> anyhow::Result<Answer> {
    let mut conn =
        TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    conn.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    conn.read_to_string(&mut response).with_context(|| format!("reading the answer from {addr}"))?;
    let (head, body) = response.split_once("\r\n\r\n").context("no end of headers in the answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr} answered {:?}", head.lines().next().unwrap_or_default());
    }
    let json: Value = serde_json::from_str(body.trim()).with_context(|| format!("parsing {body:?}"))?;
    let field = |k: &str| json[k].as_str().unwrap_or("?").to_owned();
    Ok(Answer { pod: field("pod"), node: field("node"), client: field("client") })
}

/// `n` requests to `addr` from inside `netns`, each on its own connection: the answers, or the
/// errors, in order.
pub fn http_many(netns: &Path, addr: SocketAddr, n: usize) -> anyhow::Result<Vec<anyhow::Result<Answer>>> {
    in_netns(netns, || (0..n).map(|_| http_get(addr)).collect())
}

/// A TCP connection to skiff-echo's echo port that stays open.
#[derive(Debug)]
pub struct EchoSession {
    conn: TcpStream,
    addr: SocketAddr,
}

impl EchoSession {
    /// Connects from inside `netns`.
    pub fn open(netns: &Path, addr: SocketAddr) -> anyhow::Result<Self> {
        let conn = in_netns(netns, || TcpStream::connect_timeout(&addr, TIMEOUT))?
            .with_context(|| format!("connecting to {addr}"))?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        Ok(EchoSession { conn, addr })
    }

    /// Sends `msg` and checks it comes back unchanged on the same connection.
    pub fn round_trip(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        self.conn.write_all(msg).with_context(|| format!("sending to {}", self.addr))?;
        let mut back = vec![0u8; msg.len()];
        self.conn.read_exact(&mut back).with_context(|| format!("reading the echo from {}", self.addr))?;
        if back != msg {
            bail!(
                "{} echoed {:?} for {:?}",
                self.addr,
                String::from_utf8_lossy(&back),
                String::from_utf8_lossy(msg)
            );
        }
        Ok(())
    }
}
