//! The raw echo servers: TCP sends every byte back on the same connection; UDP sends every
//! datagram back, unchanged, to the address it came from (so a client sees its own payload and
//! can match replies by content; HTTP is the protocol that says which pod answered).

use std::{
    io,
    net::{TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

/// Idle TCP connections are dropped after this, so stuck clients do not pin threads.
const IDLE: Duration = Duration::from_secs(300);

/// Accepts forever, one thread per connection.
pub fn serve_tcp(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        std::thread::spawn(move || {
            let _ = echo_stream(stream);
        });
    }
}

fn echo_stream(stream: TcpStream) -> io::Result<u64> {
    stream.set_read_timeout(Some(IDLE))?;
    let mut reader = stream.try_clone()?;
    let mut writer = stream;
    let n = io::copy(&mut reader, &mut writer)?;
    // Half-close: the client sees EOF after the last echoed byte.
    writer.shutdown(std::net::Shutdown::Write)?;
    Ok(n)
}

/// Echoes datagrams forever on one thread (a send per receive; no state to share).
pub fn serve_udp(socket: UdpSocket) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let _ = socket.send_to(&buf[..n], from);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // e.g. ECONNREFUSED reported for an earlier reply to a closed port: keep serving.
            Err(_) => {}
        }
    }
}
