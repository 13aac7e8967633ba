//! The agent's serving certificate: given (`--tls-cert-file`, `--tls-private-key-file`), or
//! asked of the control plane with a CertificateSigningRequest (signer
//! `kubernetes.io/kubelet-serving`, subject `system:node:<name>`, SANs the node's name and
//! addresses) and kept under the agent's root dir until it nears its end. skiff-control signs a
//! node's own request at once when the SANs are what the Node reports; elsewhere an administrator
//! approves it.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use kube::Client;

/// What the agent serves with: PEM certificate (chain) and key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

const SIGNER: &str = "kubernetes.io/kubelet-serving";
/// A kept certificate is replaced when it has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);

impl Identity {
    /// The files an administrator gave.
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        Ok(Self { cert_pem: read(cert)?, key_pem: read(key)? })
    }

    /// The SANs and remaining lifetime (seconds) of the certificate.
    fn inspect(&self) -> Option<(Vec<String>, i64)> {
        let info = skiff_tls::cert::parse_pem(&self.cert_pem).ok()?;
        Some((info.sans, (info.not_after - time::OffsetDateTime::now_utc()).whole_seconds()))
    }

    /// The certificate kept in `dir` if it names exactly `sans` and has a day left, else a new
    /// one signed through the API (waiting up to `wait` for an approval), then kept.
    pub async fn obtain(
        client: Client,
        node: &str,
        sans: &[String],
        dir: &Path,
        wait: Duration,
    ) -> anyhow::Result<Self> {
        let (cert_path, key_path) = (dir.join("kubelet-server.crt"), dir.join("kubelet-server.key"));
        if let Ok(kept) = Self::from_files(&cert_path, &key_path)
            && let Some((names, left)) = kept.inspect()
        {
            let mut names = names;
            let mut wanted = sans.to_vec();
            names.sort();
            wanted.sort();
            if names == wanted && left > RENEW_BEFORE.as_secs() as i64 {
                return Ok(kept);
            }
        }
        let key = rcgen::KeyPair::generate().context("generating the serving key")?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).context("CSR parameters")?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
                Err(_) => {
                    s.clone().try_into().map(rcgen::SanType::DnsName).with_context(|| format!("SAN {s:?}"))
                }
            })
            .collect::<anyhow::Result<_>>()?;
        let request =
            params.serialize_request(&key).context("building the CSR")?.pem().context("encoding the CSR")?;
        let usages = ["digital signature", "key encipherment", "server auth"];
        let cert = super::super::join::certify(
            client,
            &request,
            SIGNER,
            &usages,
            &format!("kubelet-serving-{node}-"),
            wait,
        )
        .await
        .context("obtaining the serving certificate")?;
        let identity = Self {
            cert_pem: String::from_utf8(cert).context("the certificate is not PEM")?,
            key_pem: key.serialize_pem(),
        };
        super::super::join::write_private(&key_path, identity.key_pem.as_bytes())?;
        super::super::join::write_private(&cert_path, identity.cert_pem.as_bytes())?;
        Ok(identity)
    }
}
