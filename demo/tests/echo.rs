//! skiff-echo end to end on loopback: the real binary, ephemeral ports, real sockets.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// A running skiff-echo, killed on drop (also when a test panics).
struct Echo {
    child: Child,
    http: u16,
    tcp: u16,
    udp: u16,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Echo {
    fn start(env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff-echo"));
        cmd.args(["--http", "0", "--tcp", "0", "--udp", "0", "--bind", "127.0.0.1"])
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_IP")
            .env_remove("NODE_NAME")
            .envs(env.iter().copied())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn skiff-echo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // The banner is read on a thread so a silent binary fails the test at the deadline.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so later prints never block on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut echo = Self { child, http: 0, tcp: 0, udp: 0 };
        let banner = rx.recv_timeout(DEADLINE).expect("skiff-echo printed its banner");
        for word in banner.split_whitespace() {
            let port = |v: &str| v.parse().expect("port");
            match word.split_once('=') {
                Some(("http", v)) => echo.http = port(v),
                Some(("tcp", v)) => echo.tcp = port(v),
                Some(("udp", v)) => echo.udp = port(v),
                _ => {}
            }
        }
        assert!(echo.http > 0 && echo.tcp > 0 && echo.udp > 0, "ports in {banner:?}");
        echo
    }

    fn connect(&self, port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        s
    }
}

/// Sends one request on `conn` and reads exactly one response (by Content-Length).
fn request(conn: &mut BufReader<TcpStream>, raw: &str) -> (String, String) {
    conn.get_mut().write_all(raw.as_bytes()).expect("send request");
    let mut status = String::new();
    conn.read_line(&mut status).expect("status line");
    let mut len = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).expect("header");
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).expect("body");
    (status.trim().to_owned(), String::from_utf8(body).expect("utf-8"))
}

#[test]
fn http_names_the_pod_and_the_client() {
    let echo = Echo::start(&[("POD_NAME", "echo-7f9c"), ("POD_IP", "10.1.2.3"), ("NODE_NAME", "node-a")]);
    let stream = echo.connect(echo.http);
    let client = stream.local_addr().expect("local addr").to_string();
    let mut conn = BufReader::new(stream);
    let (status, body) = request(&mut conn, "GET /hello?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        body,
        format!(
            "{{\"pod\":\"echo-7f9c\",\"namespace\":null,\"podIP\":\"10.1.2.3\",\"node\":\"node-a\",\
             \"client\":\"{client}\",\"path\":\"/hello\"}}\n"
        )
    );
    // Same connection (keep-alive): the health check, then a refused method.
    assert_eq!(
        request(&mut conn, "GET /healthz HTTP/1.1\r\n\r\n"),
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    let (status, _) = request(&mut conn, "DELETE / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

#[test]
fn http_falls_back_to_the_hostname() {
    let echo = Echo::start(&[]);
    let hostname = nix::unistd::gethostname().expect("hostname").into_string().expect("utf-8");
    let mut conn = BufReader::new(echo.connect(echo.http));
    let (_, body) = request(&mut conn, "GET / HTTP/1.0\r\n\r\n");
    assert!(body.starts_with(&format!("{{\"pod\":\"{hostname}\",")), "{body}");
    // HTTP/1.0 without keep-alive: the server closes after the answer.
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).expect("EOF"), 0);
}

#[test]
fn tcp_echoes_every_byte() {
    let echo = Echo::start(&[]);
    let mut conn = echo.connect(echo.tcp);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Write from a second handle while reading, so neither side's buffers can deadlock.
    let mut writer = conn.try_clone().expect("clone");
    let sent = payload.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut back = Vec::new();
    conn.read_to_end(&mut back).expect("read echo");
    w.join().expect("writer");
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
}

#[test]
fn udp_echoes_each_datagram_unchanged() {
    let echo = Echo::start(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(("127.0.0.1", echo.udp)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut buf = [0u8; 2048];
    for msg in [&b"one"[..], b"", &[0xff; 1400]] {
        // UDP may drop: resend until the reply arrives or the deadline passes.
        let start = Instant::now();
        let n = loop {
            sock.send(msg).expect("send");
            match sock.recv(&mut buf) {
                Ok(n) => break n,
                Err(e) if start.elapsed() < DEADLINE => drop(e),
                Err(e) => panic!("no echo for {} bytes: {e}", msg.len()),
            }
        };
        assert_eq!(&buf[..n], msg);
    }
}

#[test]
fn sigterm_exits_zero() {
    let mut echo = Echo::start(&[]);
    // Serving first, so the signal arrives while the threads are busy accepting.
    drop(echo.connect(echo.tcp));
    kill(Pid::from_raw(echo.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = echo.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "skiff-echo ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{status}");
}
