//! A private OCI registry for a test: Debian's docker-registry on a loopback port with its own
//! storage under `/run/skiff-test/skt-<pid>-<n>-<label>/`, stopped and removed on drop (and swept
//! like a containerd's directory after a killed run); images are pushed into it with skopeo.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    Error, Result, cmd,
    containerd::{CONTAINERD_ROOT, teardown},
    poll_until, require_root, unique_name,
};

#[derive(Debug)]
pub struct Registry {
    /// `None` only while starting.
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
    /// The CA that signed the registry's certificate, when it serves HTTPS.
    ca: Option<PathBuf>,
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
        require_root()?;
        crate::stale::sweep_once();
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("a free port", e))?;
        let dir = Path::new(CONTAINERD_ROOT).join(unique_name(label));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("registry dir", e))?;
        // Dropped on any error below, which removes the directory.
        let mut registry = Registry { child: None, dir, addr, ca: None };
        let dir = &registry.dir;
        let config = dir.join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        if tls {
            registry.ca = Some(make_certificates(dir)?);
            text.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ));
        }
        std::fs::write(&config, text).map_err(|e| Error::io("registry config", e))?;
        let log =
            std::fs::File::create(dir.join("registry.log")).map_err(|e| Error::io("registry log", e))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| Error::io("starting docker-registry (cargo xtask setup installs it)", e))?;
        registry.child = Some(child);
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
        let (from, to) =
            (format!("oci-archive:{}", archive.display()), format!("docker://{}/{name}", self.host()));
        cmd::run("skopeo", &["copy", "--quiet", "--dest-tls-verify=false", &from, &to]).map(drop)
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, with openssl; returns the CA's path.
fn make_certificates(dir: &Path) -> Result<PathBuf> {
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca_key, ca, key, csr, cert, ext) =
        (path("ca.key"), path("ca.pem"), path("key.pem"), path("req.csr"), path("cert.pem"), path("ext.cnf"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| Error::io("ext.cnf", e))?;
    cmd::run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "1",
            "-subj",
            "/CN=skiff-test-ca",
        ],
    )?;
    cmd::run(
        "openssl",
        &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"],
    )?;
    // -CAcreateserial writes ca.srl next to ca.pem.
    cmd::run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    )?;
    Ok(ca.into())
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        teardown(&self.dir);
    }
}
