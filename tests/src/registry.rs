//! A private OCI registry for a test: Debian's docker-registry on a loopback port with its own
//! storage, stopped and removed on drop; images are pushed into it with skopeo.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{Error, Result, poll_until};

#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile_dir::Dir,
    addr: SocketAddr,
    /// The CA that signed the registry's certificate, when it serves HTTPS.
    ca: Option<std::path::PathBuf>,
}

mod tempfile_dir {
    /// A directory removed on drop.
    #[derive(Debug)]
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    s.read(&mut head).is_ok_and(|n| String::from_utf8_lossy(&head[..n]).contains("200"))
}

impl Registry {
    /// Starts a registry on a free loopback port, over plain HTTP.
    pub fn start(label: &str) -> Result<Self> {
        Self::start_with(label, false)
    }

    /// Starts a registry serving HTTPS with a certificate for 127.0.0.1 from a CA of its own
    /// ([`Registry::ca`]).
    pub fn start_tls(label: &str) -> Result<Self> {
        Self::start_with(label, true)
    }

    /// The CA certificate (PEM) of an HTTPS registry.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    fn start_with(label: &str, tls: bool) -> Result<Self> {
        let dir = tempfile_dir::Dir(std::env::temp_dir().join(crate::unique_name(label)));
        std::fs::create_dir_all(&dir.0).map_err(|e| Error::io("registry dir", e))?;
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("a free port", e))?;
        let config = dir.0.join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.0.join("data").display()
        );
        let ca = if tls {
            let ca = make_certificates(&dir.0)?;
            text.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.0.join("cert.pem").display(),
                dir.0.join("key.pem").display()
            ));
            Some(ca)
        } else {
            None
        };
        std::fs::write(&config, text).map_err(|e| Error::io("registry config", e))?;
        let log =
            std::fs::File::create(dir.0.join("registry.log")).map_err(|e| Error::io("registry log", e))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| Error::io("starting docker-registry (cargo xtask setup installs it)", e))?;
        let registry = Registry { child, dir, addr, ca };
        let ready = |a| {
            if tls { TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok() } else { answers(a) }
        };
        poll_until("the registry", Duration::from_secs(15), || ready(addr).then_some(()))?;
        Ok(registry)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Pushes the OCI archive at `archive` as `<host>/<name>` with skopeo.
    pub fn push(&self, archive: &Path, name: &str) -> Result<()> {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{name}", self.host()))
            .output()
            .map_err(|e| Error::io("running skopeo (cargo xtask setup installs it)", e))?;
        if !out.status.success() {
            return Err(Error::io(
                "skopeo copy",
                std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
            ));
        }
        Ok(())
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, with openssl; returns the CA's path.
fn make_certificates(dir: &Path) -> Result<std::path::PathBuf> {
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| Error::io("running openssl", e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::io(
                "openssl",
                std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
            ))
        }
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| Error::io("ext.cnf", e))?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=skiff-test-ca",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ])?;
    Ok(dir.join("ca.pem"))
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}
