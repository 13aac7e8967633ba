//! A private etcd for a test: Debian's etcd-server on free loopback ports with its data in a
//! temporary directory, killed and removed on drop (a panicking test included).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Etcd {
    child: Child,
    client: SocketAddr,
    peer: SocketAddr,
    dir: tempfile::TempDir,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Whether etcd at `addr` says it is healthy.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// The member name every test etcd has.
pub const NAME: &str = "skt";

fn spawn(data: &Path, client: SocketAddr, peer: SocketAddr, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log");
    Command::new("etcd")
        .args(["--name", NAME, "--data-dir"])
        .arg(data)
        .args(["--listen-client-urls", &format!("http://{client}")])
        .args(["--advertise-client-urls", &format!("http://{client}")])
        .args(["--listen-peer-urls", &format!("http://{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
        .args(["--initial-cluster", &format!("skt=http://{peer}")])
        .args(["--logger", "zap", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("etcd (cargo xtask setup installs etcd-server)")
}

fn wait_healthy(client: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthy(client) {
        assert!(Instant::now() < deadline, "etcd did not become healthy on {client}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tmp");
        let (client, peer) = (free_port(), free_port());
        let child = spawn(&dir.path().join("data"), client, peer, &dir.path().join("etcd.log"));
        let etcd = Etcd { child, client, peer, dir };
        wait_healthy(client);
        etcd
    }

    /// Stops this etcd (SIGKILL) and starts it again, same ports, on `data` (a restored
    /// snapshot's data dir).
    pub fn restart_on(&mut self, data: &Path) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(data, self.client, self.peer, &self.dir.path().join("etcd-restored.log"));
        wait_healthy(self.client);
    }

    /// `etcdctl snapshot restore` options for a data dir this etcd can start on.
    pub fn restore_options(&self) -> Vec<String> {
        vec![
            format!("--name={NAME}"),
            format!("--initial-cluster={NAME}=http://{}", self.peer),
            format!("--initial-advertise-peer-urls=http://{}", self.peer),
        ]
    }

    /// A scratch directory that lives as long as this etcd.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
