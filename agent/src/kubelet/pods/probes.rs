//! Container probes — startup, liveness, readiness — by HTTP GET, TCP connect or a command run
//! in the container, with Kubernetes' timing (initial delay, period, timeout, success and
//! failure thresholds). HTTP and TCP probes connect from the node to the pod's IP, inside the
//! node's network namespace when the agent drives one.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::runtime::Runtime;

/// What a probe concluded this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// The running state of one probe of one container instance.
#[derive(Debug, Clone)]
pub struct Prober {
    probe: Probe,
    started: Instant,
    last: Option<Instant>,
    successes: i32,
    failures: i32,
    /// The probe's verdict so far (`None` until it has one).
    pub passing: Option<bool>,
    pub last_failure: Option<String>,
}

impl Prober {
    pub fn new(probe: &Probe) -> Self {
        Self {
            probe: probe.clone(),
            started: Instant::now(),
            last: None,
            successes: 0,
            failures: 0,
            passing: None,
            last_failure: None,
        }
    }

    /// Whether the probe is due now.
    pub fn due(&self) -> bool {
        let delay = Duration::from_secs(self.probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let period = Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64);
        self.started.elapsed() >= delay && self.last.is_none_or(|t| t.elapsed() >= period)
    }

    /// Records an outcome; returns the verdict when it changed.
    pub fn record(&mut self, outcome: Outcome) -> Option<bool> {
        self.last = Some(Instant::now());
        let before = self.passing;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.passing = Some(true);
                }
            }
            Outcome::Failure(why) => {
                self.successes = 0;
                self.failures += 1;
                self.last_failure = Some(why);
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.passing = Some(false);
                }
            }
        }
        (self.passing != before).then_some(self.passing).flatten()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.probe.timeout_seconds.unwrap_or(1).max(1) as u64)
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }
}

/// A port given by number or by the name of one of the container's ports.
fn port(value: &IntOrString, container: &Container) -> Result<u16, String> {
    match value {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// Connects from the node (inside `node_netns` if given) with a deadline; runs on a thread of
/// its own, since entering a namespace must not leak into a shared pool thread.
fn connect(node_netns: Option<PathBuf>, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    crate::kubelet::netns::on_thread(node_netns.as_deref(), move || {
        TcpStream::connect_timeout(&addr, timeout)
    })?
}

/// Runs the probe once against `container` of the pod at `ip` (container id `id`).
pub async fn run(
    probe: &Prober,
    container: &Container,
    ip: Option<Ipv4Addr>,
    id: &str,
    runtime: &Runtime,
    node_netns: Option<PathBuf>,
) -> Outcome {
    let p = probe.probe();
    let timeout = probe.timeout();
    if let Some(exec) = &p.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match tokio::time::timeout(timeout, runtime.exec(id, &command)).await {
            Ok(Ok(0)) => Outcome::Success,
            Ok(Ok(code)) => Outcome::Failure(format!("command exited with {code}")),
            Ok(Err(e)) => Outcome::Failure(e.to_string()),
            Err(_) => Outcome::Failure(format!("command timed out after {timeout:?}")),
        };
    }
    let Some(ip) = ip else { return Outcome::Failure("the pod has no IP".into()) };
    if let Some(tcp) = &p.tcp_socket {
        let port = match port(&tcp.port, container) {
            Ok(p) => p,
            Err(e) => return Outcome::Failure(e),
        };
        let addr = SocketAddr::from((ip, port));
        let result = tokio::task::spawn_blocking(move || connect(node_netns, addr, timeout)).await;
        return match result {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {e}")),
            Err(e) => Outcome::Failure(e.to_string()),
        };
    }
    if let Some(http) = &p.http_get {
        let port = match port(&http.port, container) {
            Ok(p) => p,
            Err(e) => return Outcome::Failure(e),
        };
        if http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
            return Outcome::Failure("HTTPS probes are not supported yet".into());
        }
        let addr = SocketAddr::from((ip, port));
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let host = http.host.clone().unwrap_or_else(|| ip.to_string());
        let headers: Vec<(String, String)> =
            http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<u16> {
            let mut s = connect(node_netns, addr, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            let mut request =
                format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: skiff-probe/1.0\r\n");
            for (k, v) in headers {
                request.push_str(&format!("{k}: {v}\r\n"));
            }
            request.push_str("\r\n");
            s.write_all(request.as_bytes())?;
            let mut head = [0u8; 32];
            let n = s.read(&mut head)?;
            let line = String::from_utf8_lossy(&head[..n]);
            line.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {line:?}")))
        })
        .await;
        return match result {
            Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
            Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Outcome::Failure(format!("Get http://{addr}: {e}")),
            Err(e) => Outcome::Failure(e.to_string()),
        };
    }
    Outcome::Failure("the probe has no handler".into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn thresholds_decide_the_verdict() {
        let probe: Probe =
            serde_json::from_value(json!({"periodSeconds": 1, "failureThreshold": 2, "successThreshold": 2}))
                .expect("probe");
        let mut p = Prober::new(&probe);
        assert!(p.due());
        assert_eq!(p.record(Outcome::Success), None);
        assert_eq!(p.record(Outcome::Success), Some(true));
        assert!(!p.due(), "the period has not passed");
        assert_eq!(p.record(Outcome::Failure("x".into())), None);
        assert_eq!(p.record(Outcome::Failure("y".into())), Some(false));
        assert_eq!(p.last_failure.as_deref(), Some("y"));
    }
}
