//! Real traffic between namespaces: UDP echo, TCP and UDP servers that say who they are, and the
//! clients that talk to them.

use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{Error, NetNs, Result};

/// How long the server waits in `recv` before rechecking its stop flag.
const SERVER_TICK: Duration = Duration::from_millis(20);

/// A server loop on its own thread, stopped and joined on drop.
#[derive(Debug)]
struct Worker<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T: Default + Send + 'static> Worker<T> {
    fn spawn(body: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        Self { stop, thread: Some(std::thread::spawn(move || body(&flag))) }
    }

    /// Stops the loop and returns what it produced; a panic in the loop is re-raised.
    fn finish(&mut self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(value)) => value,
            Some(Err(panic)) if !std::thread::panicking() => std::panic::resume_unwind(panic),
            _ => T::default(),
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP server in a namespace answering every datagram: with the datagram itself (echo) or with
/// a fixed identity. Stops on drop.
#[derive(Debug)]
pub struct UdpServer {
    addr: SocketAddrV4,
    worker: Worker<u64>,
}

impl UdpServer {
    /// Echoes every datagram back to its sender.
    pub fn echo(ns: &NetNs, addr: SocketAddrV4) -> Result<Self> {
        Self::start(ns, addr, |payload, _| payload.to_vec())
    }

    /// Answers every datagram with `identity`.
    pub fn identity(ns: &NetNs, addr: SocketAddrV4, identity: &str) -> Result<Self> {
        let identity = identity.as_bytes().to_vec();
        Self::start(ns, addr, move |_, _| identity.clone())
    }

    /// Answers every datagram with the address it came from (`ip:port`): what NAT did on the way.
    pub fn peer(ns: &NetNs, addr: SocketAddrV4) -> Result<Self> {
        Self::start(ns, addr, |_, from| from.to_string().into_bytes())
    }

    fn start(
        ns: &NetNs,
        addr: SocketAddrV4,
        reply: impl Fn(&[u8], SocketAddr) -> Vec<u8> + Send + 'static,
    ) -> Result<Self> {
        // A socket belongs to the namespace it was created in, whichever thread uses it later.
        let socket =
            ns.run(move || UdpSocket::bind(addr))?.map_err(|e| Error::io(format!("bind {addr}"), e))?;
        socket.set_read_timeout(Some(SERVER_TICK)).map_err(|e| Error::io("set_read_timeout", e))?;
        let worker = Worker::spawn(move |stop| {
            let mut buf = [0u8; 65536];
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if socket.send_to(&reply(&buf[..n], from), from).is_ok() {
                            answered += 1;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            answered
        });
        Ok(Self { addr, worker })
    }

    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Stops the server and returns how many datagrams it answered.
    pub fn stop(mut self) -> u64 {
        self.worker.finish()
    }
}

/// Sends `count` datagrams of `payload` bytes from inside `ns` to `target`, one at a time, each
/// waiting up to `timeout` for its echo. Returns how many echoes came back intact.
pub fn udp_ping(
    ns: &NetNs,
    target: SocketAddrV4,
    count: usize,
    payload: usize,
    timeout: Duration,
) -> Result<usize> {
    ns.run(move || -> Result<usize> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |e| Error::io(what, e)
        };
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(io("bind client"))?;
        socket.connect(SocketAddr::V4(target)).map_err(io("connect"))?;
        socket.set_read_timeout(Some(timeout)).map_err(io("set_read_timeout"))?;
        let mut answered = 0;
        let mut buf = vec![0u8; payload + 1];
        for seq in 0..count {
            let msg: Vec<u8> = (0..payload).map(|i| (seq + i) as u8).collect();
            socket.send(&msg).map_err(io("send"))?;
            match socket.recv(&mut buf) {
                Ok(n) if buf[..n] == msg[..] => answered += 1,
                Ok(_) => return Err(Error::EchoAltered { seq }),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(Error::io("recv", e)),
            }
        }
        Ok(answered)
    })?
}

/// A TCP server that greets each connection with `identity` and a newline, then echoes lines.
#[derive(Debug)]
pub struct TcpIdentity {
    _worker: Worker<()>,
}

impl TcpIdentity {
    pub fn start(ns: &NetNs, addr: SocketAddrV4, identity: &str) -> Result<Self> {
        let listener =
            ns.run(move || TcpListener::bind(addr))?.map_err(|e| Error::io(format!("listen {addr}"), e))?;
        listener.set_nonblocking(true).map_err(|e| Error::io("set_nonblocking", e))?;
        let greeting = format!("{identity}\n");
        let worker = Worker::spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let greeting = greeting.clone();
                        std::thread::spawn(move || serve_tcp(conn, &greeting));
                    }
                    // Idle wait of the server loop (not test synchronisation): recheck the flag.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(SERVER_TICK / 4),
                    Err(_) => break,
                }
            }
        });
        Ok(Self { _worker: worker })
    }
}

fn serve_tcp(conn: TcpStream, greeting: &str) {
    let _ = conn.set_nonblocking(false);
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    if writer.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if writer.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

/// A client connection made from inside a namespace: read the greeting, then echo lines.
#[derive(Debug)]
pub struct TcpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The server's greeting: which backend answered.
    pub identity: String,
}

impl TcpClient {
    pub fn connect(ns: &NetNs, target: SocketAddrV4, timeout: Duration) -> Result<Self> {
        let stream = ns
            .run(move || TcpStream::connect_timeout(&SocketAddr::V4(target), timeout))?
            .map_err(|e| Error::io(format!("connect {target}"), e))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| Error::io("set_read_timeout", e))?;
        let writer = stream.try_clone().map_err(|e| Error::io("clone stream", e))?;
        let mut reader = BufReader::new(stream);
        let mut identity = String::new();
        reader.read_line(&mut identity).map_err(|e| Error::io(format!("greeting from {target}"), e))?;
        Ok(Self { reader, writer, identity: identity.trim_end().to_owned() })
    }

    /// Sends `line` and returns the echo.
    pub fn echo(&mut self, line: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        let mut back = String::new();
        let n = self.reader.read_line(&mut back)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "connection closed"));
        }
        Ok(back.trim_end().to_owned())
    }
}

/// Sends one datagram from `ns` (from `local`, or an ephemeral port) to `target` and returns the
/// answer; the error of a refused or unanswered datagram comes back as is.
pub fn udp_ask(
    ns: &NetNs,
    local: Option<SocketAddrV4>,
    target: SocketAddrV4,
    timeout: Duration,
) -> Result<std::io::Result<String>> {
    ns.run(move || -> std::io::Result<String> {
        let socket = UdpSocket::bind(local.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), SocketAddr::V4))?;
        socket.connect(SocketAddr::V4(target))?;
        socket.set_read_timeout(Some(timeout))?;
        socket.send(b"who")?;
        let mut buf = [0u8; 2048];
        let n = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}
