//! Health-check node ports: for a LoadBalancer Service with `externalTrafficPolicy: Local` the
//! API server allocates `spec.healthCheckNodePort`, and every node's proxy answers HTTP on it — 200
//! where the node has local endpoints for the Service, 503 where it has none — so an external load
//! balancer sends traffic only to nodes that can serve it without a second hop. The answer is
//! kube-proxy's: a JSON body naming the Service and its local endpoint count, and the
//! `X-Load-Balancing-Endpoint-Weight` header.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::model::ServiceRef;

/// One Service's health port.
#[derive(Debug)]
struct Port {
    service: ServiceRef,
    local_endpoints: usize,
    /// The listener; `None` when it could not bind (logged) or no runtime was running.
    task: Option<JoinHandle<()>>,
}

impl Drop for Port {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The health ports this node serves: a cheap handle, shared by the proxy and the listeners.
#[derive(Debug, Clone)]
pub struct HealthChecks {
    bind: Ipv4Addr,
    ports: Arc<Mutex<HashMap<u16, Port>>>,
}

impl HealthChecks {
    /// Health ports bound on `bind` (kube-proxy binds every address: 0.0.0.0).
    pub fn new(bind: Ipv4Addr) -> Self {
        Self { bind, ports: Arc::default() }
    }

    /// What the proxy computed for `service`: its health port and local endpoint count, or `None`
    /// when it has none (any port it had is closed).
    pub fn set(&self, service: &ServiceRef, check: Option<(u16, usize)>) {
        let Ok(mut ports) = self.ports.lock() else { return };
        ports.retain(|port, p| &p.service != service || check.is_some_and(|(want, _)| want == *port));
        let Some((port, local_endpoints)) = check else { return };
        if let Some(p) = ports.get_mut(&port) {
            p.local_endpoints = local_endpoints;
            return;
        }
        // Bound here, by the calling thread: in its network namespace (the node's).
        let addr = SocketAddr::from((self.bind, port));
        let listener = std::net::TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l));
        let task = match (listener, tokio::runtime::Handle::try_current()) {
            (Ok(listener), Ok(rt)) => {
                let shared = self.clone();
                Some(rt.spawn(async move { shared.serve(listener, port).await }))
            }
            (Err(error), _) => {
                tracing::warn!(%addr, %error, "cannot serve a health check node port");
                None
            }
            (Ok(_), Err(_)) => None,
        };
        ports.insert(port, Port { service: service.clone(), local_endpoints, task });
    }

    /// The Service and local endpoint count behind `port`.
    pub fn get(&self, port: u16) -> Option<(ServiceRef, usize)> {
        let ports = self.ports.lock().ok()?;
        ports.get(&port).map(|p| (p.service.clone(), p.local_endpoints))
    }

    async fn serve(self, listener: std::net::TcpListener, port: u16) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(port, %error, "cannot serve a health check node port");
                return;
            }
        };
        loop {
            let Ok((conn, _)) = listener.accept().await else { continue };
            let answer = self.get(port);
            tokio::spawn(async move {
                let _ = answer_request(conn, answer).await;
            });
        }
    }
}

/// Status line and body for a Service's health check.
pub fn response(answer: Option<&(ServiceRef, usize)>) -> (u16, String) {
    match answer {
        Some((service, local)) => {
            let body = serde_json::json!({
                "service": {"namespace": service.namespace, "name": service.name},
                "localEndpoints": local,
                "serviceProxyHealthy": true,
            });
            (if *local > 0 { 200 } else { 503 }, body.to_string())
        }
        None => (503, String::from("{\"localEndpoints\":0,\"serviceProxyHealthy\":true}")),
    }
}

async fn answer_request(mut conn: TcpStream, answer: Option<(ServiceRef, usize)>) -> std::io::Result<()> {
    // Read the request head (any method or path gets the same answer, as kube-proxy's does).
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = response(answer.as_ref());
    let reason = if status == 200 { "OK" } else { "Service Unavailable" };
    let weight = answer.as_ref().map_or(0, |(_, n)| *n);
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\
         X-Load-Balancing-Endpoint-Weight: {weight}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(text.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ServiceRef {
        ServiceRef { namespace: "default".into(), name: "web".into() }
    }

    #[test]
    fn local_endpoints_decide_the_status_and_the_body_is_kube_proxys() {
        let (status, body) = response(Some(&(web(), 2)));
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["service"]["name"], "web");
        assert_eq!(json["localEndpoints"], 2);
        assert_eq!(response(Some(&(web(), 0))).0, 503);
    }

    #[test]
    fn a_service_moving_to_another_port_releases_the_old_one() {
        let checks = HealthChecks::new(Ipv4Addr::LOCALHOST);
        checks.set(&web(), Some((30100, 1)));
        checks.set(&web(), Some((30101, 0)));
        assert!(checks.get(30100).is_none());
        assert_eq!(checks.get(30101), Some((web(), 0)));
        checks.set(&web(), None);
        assert!(checks.get(30101).is_none());
    }

    #[tokio::test]
    async fn the_port_answers_over_http() {
        let checks = HealthChecks::new(Ipv4Addr::LOCALHOST);
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr").port();
        checks.set(&web(), Some((port, 1)));
        let mut answer = String::new();
        for _ in 0..200 {
            if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)).await {
                conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
                conn.read_to_string(&mut answer).await.expect("read");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.contains("X-Load-Balancing-Endpoint-Weight: 1") && answer.contains("\"localEndpoints\":1")
        );
    }
}
