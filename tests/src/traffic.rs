//! Real traffic between namespaces: a UDP echo server and a lock-step client.

use std::{
    io::ErrorKind,
    net::{SocketAddr, SocketAddrV4, UdpSocket},
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

/// A UDP echo server running in a namespace; stops and joins on drop.
#[derive(Debug)]
pub struct UdpEcho {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl UdpEcho {
    /// Binds `addr` inside `ns` and echoes every datagram back to its sender.
    pub fn start(ns: &NetNs, addr: SocketAddrV4) -> Result<Self> {
        // A socket belongs to the namespace it was created in, whichever thread uses it later.
        let socket =
            ns.run(move || UdpSocket::bind(addr))?.map_err(|e| Error::io(format!("bind {addr}"), e))?;
        socket.set_read_timeout(Some(SERVER_TICK)).map_err(|e| Error::io("set_read_timeout", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || serve(&socket, &flag));
        Ok(Self { addr, stop, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Stops the server and returns how many datagrams it echoed.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve(socket: &UdpSocket, stop: &AtomicBool) -> u64 {
    let mut buf = [0u8; 65536];
    let mut echoed = 0;
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if socket.send_to(&buf[..n], from).is_ok() {
                    echoed += 1;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    echoed
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
