//! A minimal HTTP/1.1 server: enough for curl, kubectl probes and load generators (keep-alive
//! is honoured, so `wrk`/`ab -k` measure the datapath, not connection setup). Requests with a
//! body are refused rather than parsed: this is a demo target, not a web server.

use std::{
    io::{BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

use crate::identity::Identity;

/// A request line and its headers may not exceed this.
const MAX_HEAD: usize = 16 * 1024;
/// Idle keep-alive connections are dropped after this, so stuck clients do not pin threads.
const IDLE: Duration = Duration::from_secs(30);

/// Accepts forever, one thread per connection.
pub fn serve(listener: TcpListener, id: Arc<Identity>) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let id = Arc::clone(&id);
        std::thread::spawn(move || {
            let _ = connection(stream, &id);
        });
    }
}

/// One parsed request head.
#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    keep_alive: bool,
    has_body: bool,
}

fn connection(stream: TcpStream, id: &Identity) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(head) = read_head(&mut reader)? {
        let keep = head.keep_alive && !head.has_body;
        let (status, kind, body) = respond(&head, id, peer);
        let head_only = head.method == "HEAD";
        let text = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
            body.len(),
            if keep { "keep-alive" } else { "close" },
            if head_only { "" } else { body.as_str() },
        );
        out.write_all(text.as_bytes())?;
        if !keep {
            break;
        }
    }
    Ok(())
}

/// Status line, content type and body for a request.
fn respond(head: &Head, id: &Identity, peer: SocketAddr) -> (&'static str, &'static str, String) {
    match (head.method.as_str(), head.path.as_str()) {
        ("GET" | "HEAD", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET" | "HEAD", path) => ("200 OK", "application/json", id.json(&peer.to_string(), path)),
        _ => ("405 Method Not Allowed", "text/plain", "only GET and HEAD\n".to_owned()),
    }
}

/// Reads a request line and headers; `None` when the client closed between requests.
fn read_head(reader: &mut impl std::io::BufRead) -> std::io::Result<Option<Head>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut total = 0;
    let mut line = String::new();
    // RFC 9112 §2.2: ignore empty lines before the request line.
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if total > MAX_HEAD {
            return Err(bad("request head too long"));
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("malformed request line"));
    };
    let mut head = Head {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or(target).to_owned(),
        keep_alive: version == "HTTP/1.1",
        has_body: false,
    };
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return Err(bad("truncated or oversized request head"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(Some(head));
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" if value.contains("close") => head.keep_alive = false,
            "connection" if value.contains("keep-alive") => head.keep_alive = true,
            "content-length" if value != "0" => head.has_body = true,
            "transfer-encoding" => head.has_body = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        read_head(&mut raw.as_bytes()).expect("parses").expect("a request")
    }

    #[test]
    fn parses_heads() {
        let h = head("\r\nGET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.keep_alive, h.has_body),
            ("GET", "/x", true, false)
        );
        let h = head("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc");
        assert!(!h.keep_alive && h.has_body);
        assert!(read_head(&mut "".as_bytes()).expect("eof is fine").is_none());
        assert!(read_head(&mut "GET\r\n\r\n".as_bytes()).is_err());
        assert!(read_head(&mut "GET / HTTP/1.1\r\nHost: a\r\n".as_bytes()).is_err());
    }
}
