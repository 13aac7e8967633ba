//! The cluster's PKI, kubeadm-style: `skiff-control init` creates a CA and issues the API
//! server's serving certificate, the admin's client certificate (group `system:masters`), one
//! per node (`system:node:<name>`, group `system:nodes`) and the control loops' identities, and
//! writes kubeconfigs; `certs check-expiration` and `certs renew` keep them alive.
//!
//! Layout under the PKI root (default `/etc/skiff`, mirroring kubeadm's `/etc/kubernetes`):
//! `pki/ca.{crt,key}`, `pki/apiserver.{crt,key}`, `pki/apiserver-kubelet-client.{crt,key}` (the
//! API server's identity towards node agents), `pki/sa.{key,pub}` (ServiceAccount token
//! signing), `pki/init.json` (what `init` was asked, so `renew` reissues the same names),
//! `admin.conf`, `scheduler.conf`, `controller-manager.conf`, `nodes/<name>.conf`. Keys and
//! kubeconfigs are 0600; nothing secret is ever printed or logged.

pub mod files;
pub mod inspect;
pub mod issue;
pub mod kubeconfig;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use self::issue::{Ca, Issued, Subject, Usage};

/// The user the API server is to node agents (bound to `system:kubelet-api-admin`).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// Where the PKI lives unless told otherwise.
pub const DEFAULT_ROOT: &str = "/etc/skiff";

/// What `init` was asked for; kept in `pki/init.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// The cluster's name in kubeconfigs.
    pub cluster_name: String,
    /// The API server's URL as clients reach it (`https://<address>:6443`).
    pub server: String,
    /// Extra names and addresses of the API server (its advertise addresses, load balancer
    /// names); `localhost`, `127.0.0.1`, the `kubernetes` Service names and its ClusterIP are
    /// always in.
    pub apiserver_sans: Vec<String>,
    /// ClusterIP range; its first address is the `kubernetes` Service's.
    pub service_cidr: String,
    /// Nodes to issue client certificates and kubeconfigs for.
    pub nodes: Vec<String>,
    /// Lifetime of leaf certificates, days (kubeadm: 365).
    pub cert_days: u32,
    /// Lifetime of the CA, days (kubeadm: 3650).
    pub ca_days: u32,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            cluster_name: "skiff".into(),
            server: "https://127.0.0.1:6443".into(),
            apiserver_sans: Vec::new(),
            service_cidr: "10.96.0.0/12".into(),
            nodes: Vec::new(),
            cert_days: 365,
            ca_days: 3650,
        }
    }
}

/// The `kubernetes` Service's ClusterIP: the first address of the range.
pub fn kubernetes_service_ip(service_cidr: &str) -> anyhow::Result<Ipv4Addr> {
    let (net, bits) = service_cidr.split_once('/').context("the service CIDR is not ADDRESS/BITS")?;
    let net: Ipv4Addr = net.parse().context("the service CIDR's address")?;
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 30).context("the service CIDR's prefix length")?;
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    Ok(Ipv4Addr::from((u32::from(net) & mask) + 1))
}

/// One leaf of the PKI: a certificate file pair or a kubeconfig.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The name `check-expiration` prints and `renew` takes (`apiserver`, `admin.conf`,
    /// `nodes/n1.conf`).
    pub name: String,
    pub subject: Subject,
    pub place: Place,
}

#[derive(Debug, Clone)]
pub enum Place {
    /// `<name>.crt` and `<name>.key`.
    Files { cert: PathBuf, key: PathBuf },
    /// A kubeconfig embedding the certificate and key.
    Kubeconfig(PathBuf),
}

/// What `init` did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub path: PathBuf,
    pub what: String,
    /// `created`, `kept` (valid, same names) or `reissued`.
    pub action: &'static str,
}

/// One row of `certs check-expiration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expiry {
    pub name: String,
    /// RFC 3339.
    pub expires: String,
    /// Whole days left (negative: expired).
    pub residual_days: i64,
    pub authority: String,
    pub is_ca: bool,
}

/// A PKI root directory.
#[derive(Debug, Clone)]
pub struct Pki {
    root: PathBuf,
}

fn client(cn: impl Into<String>, orgs: &[&str]) -> Subject {
    Subject {
        common_name: cn.into(),
        organizations: orgs.iter().map(|o| (*o).to_owned()).collect(),
        sans: Vec::new(),
        usage: Usage::Client,
    }
}

impl Pki {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("pki/ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.root.join("pki/ca.key")
    }

    pub fn apiserver_cert(&self) -> PathBuf {
        self.root.join("pki/apiserver.crt")
    }

    pub fn apiserver_key(&self) -> PathBuf {
        self.root.join("pki/apiserver.key")
    }

    /// The identity the API server shows node agents (their log and metrics endpoints).
    pub fn kubelet_client_cert(&self) -> PathBuf {
        self.root.join("pki/apiserver-kubelet-client.crt")
    }

    pub fn kubelet_client_key(&self) -> PathBuf {
        self.root.join("pki/apiserver-kubelet-client.key")
    }

    pub fn sa_key(&self) -> PathBuf {
        self.root.join("pki/sa.key")
    }

    pub fn sa_pub(&self) -> PathBuf {
        self.root.join("pki/sa.pub")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.root.join("admin.conf")
    }

    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(format!("{node}.conf"))
    }

    fn config_path(&self) -> PathBuf {
        self.root.join("pki/init.json")
    }

    /// What `init` was last asked.
    pub fn config(&self) -> anyhow::Result<InitConfig> {
        let text = files::read(&self.config_path())
            .with_context(|| format!("no PKI at {} (run `skiff-control init`)", self.root.display()))?;
        serde_json::from_str(&text).context("pki/init.json does not parse")
    }

    /// The CA, to sign with.
    pub fn ca(&self) -> anyhow::Result<Ca> {
        Ca::load(&files::read(&self.ca_cert())?, &files::read(&self.ca_key())?)
    }

    /// Every leaf `config` asks for.
    pub fn leaves(&self, config: &InitConfig) -> anyhow::Result<Vec<Leaf>> {
        let mut sans: Vec<String> = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        sans.push(kubernetes_service_ip(&config.service_cidr)?.to_string());
        for extra in &config.apiserver_sans {
            if !sans.contains(extra) {
                sans.push(extra.clone());
            }
        }
        let mut leaves = vec![Leaf {
            name: "apiserver".into(),
            subject: Subject {
                common_name: "kube-apiserver".into(),
                organizations: Vec::new(),
                sans,
                usage: Usage::Server,
            },
            place: Place::Files { cert: self.apiserver_cert(), key: self.apiserver_key() },
        }];
        leaves.push(Leaf {
            name: "apiserver-kubelet-client".into(),
            subject: client(KUBELET_CLIENT_USER, &[]),
            place: Place::Files { cert: self.kubelet_client_cert(), key: self.kubelet_client_key() },
        });
        for (name, subject) in [
            ("admin.conf", client("kubernetes-admin", &["system:masters"])),
            ("scheduler.conf", client("system:kube-scheduler", &[])),
            ("controller-manager.conf", client("system:kube-controller-manager", &[])),
        ] {
            leaves.push(Leaf { name: name.into(), subject, place: Place::Kubeconfig(self.root.join(name)) });
        }
        for node in &config.nodes {
            leaves.push(Leaf {
                name: format!("nodes/{node}.conf"),
                subject: client(format!("system:node:{node}"), &["system:nodes"]),
                place: Place::Kubeconfig(self.node_kubeconfig(node)),
            });
        }
        Ok(leaves)
    }

    /// The certificate a leaf holds now, if it is there.
    fn current(&self, leaf: &Leaf) -> Option<Issued> {
        match &leaf.place {
            Place::Files { cert, key } => {
                Some(Issued { cert_pem: files::read(cert).ok()?, key_pem: files::read(key).ok()? })
            }
            Place::Kubeconfig(path) => kubeconfig::client_of(&files::read(path).ok()?).ok(),
        }
    }

    fn store(&self, config: &InitConfig, leaf: &Leaf, issued: &Issued, ca_pem: &str) -> anyhow::Result<()> {
        match &leaf.place {
            Place::Files { cert, key } => {
                files::write_secret(key, issued.key_pem.as_bytes())?;
                files::write_public(cert, issued.cert_pem.as_bytes())
            }
            Place::Kubeconfig(path) => {
                let text = kubeconfig::render(
                    &config.cluster_name,
                    &config.server,
                    ca_pem,
                    &leaf.subject.common_name,
                    issued,
                );
                files::write_secret(path, text.as_bytes())
            }
        }
    }

    /// Creates what is missing: the CA (kept if present), the ServiceAccount signing key, and
    /// every leaf; a leaf already there is kept when it is valid, signed by this CA and names
    /// the same subject, else reissued.
    pub fn init(&self, config: &InitConfig) -> anyhow::Result<Vec<Done>> {
        if config.nodes.iter().any(|n| n.is_empty() || n.contains(['/', ' '])) {
            bail!("node names must be non-empty and hold no '/' or space");
        }
        let mut done = Vec::new();
        if self.ca_cert().exists() && self.ca_key().exists() {
            done.push(Done { path: self.ca_cert(), what: "cluster CA".into(), action: "kept" });
        } else {
            let ca = issue::new_ca("skiff-ca", Duration::days(i64::from(config.ca_days)))?;
            files::write_secret(&self.ca_key(), ca.key_pem.as_bytes())?;
            files::write_public(&self.ca_cert(), ca.cert_pem.as_bytes())?;
            done.push(Done { path: self.ca_cert(), what: "cluster CA".into(), action: "created" });
        }
        if self.sa_key().exists() {
            done.push(Done {
                path: self.sa_key(),
                what: "ServiceAccount signing key".into(),
                action: "kept",
            });
        } else {
            let key = rcgen::KeyPair::generate().context("generating the ServiceAccount key")?;
            files::write_secret(&self.sa_key(), key.serialize_pem().as_bytes())?;
            files::write_public(&self.sa_pub(), key.public_key_pem().as_bytes())?;
            done.push(Done {
                path: self.sa_key(),
                what: "ServiceAccount signing key".into(),
                action: "created",
            });
        }
        files::write_public(&self.config_path(), serde_json::to_string_pretty(config)?.as_bytes())?;
        let ca = self.ca()?;
        let ca_info = inspect::parse_pem(&ca.cert_pem)?;
        let lifetime = Duration::days(i64::from(config.cert_days));
        for leaf in self.leaves(config)? {
            let path = match &leaf.place {
                Place::Files { cert, .. } => cert.clone(),
                Place::Kubeconfig(p) => p.clone(),
            };
            let what = leaf.subject.common_name.clone();
            let existing = self.current(&leaf);
            let keep =
                existing.as_ref().and_then(|e| inspect::parse_pem(&e.cert_pem).ok()).is_some_and(|info| {
                    info.issuer == ca_info.common_name
                        && info.not_after > OffsetDateTime::now_utc()
                        && info.common_name == leaf.subject.common_name
                        && info.organizations == leaf.subject.organizations
                        && info.sans == leaf.subject.sans
                });
            if keep {
                done.push(Done { path, what, action: "kept" });
                continue;
            }
            let issued =
                ca.issue(&leaf.subject, OffsetDateTime::now_utc() - Duration::minutes(1), lifetime)?;
            self.store(config, &leaf, &issued, &ca.cert_pem)?;
            let action = if existing.is_some() { "reissued" } else { "created" };
            done.push(Done { path, what, action });
        }
        Ok(done)
    }

    /// Every certificate's expiry, the CA first.
    pub fn check_expiration(&self) -> anyhow::Result<Vec<Expiry>> {
        let config = self.config()?;
        let now = OffsetDateTime::now_utc();
        let row = |name: String, pem: &str| -> anyhow::Result<Expiry> {
            let info = inspect::parse_pem(pem).with_context(|| format!("{name}'s certificate"))?;
            Ok(Expiry {
                name,
                expires: info
                    .not_after
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                residual_days: (info.not_after - now).whole_days(),
                authority: if info.is_ca { String::new() } else { "ca".into() },
                is_ca: info.is_ca,
            })
        };
        let mut rows = vec![row("ca".into(), &files::read(&self.ca_cert())?)?];
        for leaf in self.leaves(&config)? {
            match self.current(&leaf) {
                Some(issued) => rows.push(row(leaf.name.clone(), &issued.cert_pem)?),
                None => bail!("{} is missing: run `skiff-control init` again", leaf.name),
            }
        }
        Ok(rows)
    }

    /// Reissues `which` (a leaf name, or `all`) for another `cert_days`, keeping each key.
    pub fn renew(&self, which: &str) -> anyhow::Result<Vec<String>> {
        let config = self.config()?;
        let ca = self.ca()?;
        let leaves = self.leaves(&config)?;
        let chosen: Vec<&Leaf> = leaves.iter().filter(|l| which == "all" || l.name == which).collect();
        if chosen.is_empty() {
            let known: Vec<&str> = leaves.iter().map(|l| l.name.as_str()).collect();
            bail!("no certificate named {which:?}; known: all, {}", known.join(", "));
        }
        let lifetime = Duration::days(i64::from(config.cert_days));
        let mut renewed = Vec::new();
        for leaf in chosen {
            let current = self
                .current(leaf)
                .with_context(|| format!("{} is missing: run `skiff-control init` again", leaf.name))?;
            let issued = ca.reissue(&leaf.subject, &current.key_pem, lifetime)?;
            match &leaf.place {
                Place::Kubeconfig(path) => {
                    let text = kubeconfig::with_client(&files::read(path)?, &issued)?;
                    files::write_secret(path, text.as_bytes())?;
                }
                Place::Files { .. } => self.store(&config, leaf, &issued, &ca.cert_pem)?,
            }
            renewed.push(leaf.name.clone());
        }
        Ok(renewed)
    }
}

/// `check-expiration` as kubeadm prints it.
pub fn expiry_table(rows: &[Expiry]) -> String {
    let mut out =
        format!("{:<28} {:<26} {:>14}  {}\n", "CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "AUTHORITY");
    for r in rows {
        let residual =
            if r.residual_days < 0 { "expired".to_owned() } else { format!("{}d", r.residual_days) };
        let authority = if r.is_ca { "-" } else { &r.authority };
        out.push_str(&format!("{:<28} {:<26} {:>14}  {}\n", r.name, r.expires, residual, authority));
    }
    out
}

#[cfg(test)]
mod tests;
