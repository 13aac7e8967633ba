//! Joining a cluster with a bootstrap token (TLS bootstrapping): the node makes its own key, asks
//! the control plane to certify `system:node:<name>` through a CertificateSigningRequest, waits
//! for the signed certificate, and writes a kubeconfig with it — so no private key is ever
//! copied between machines.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::{Api, Client, api::PostParams, config::Kubeconfig};
use serde_json::json;

/// The signer kubelet client certificates come from.
const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// How long the control plane gets to sign.
const WAIT: Duration = Duration::from_secs(60);

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Asks the control plane to sign the PEM CSR `request` by `signer` for `usages` (a
/// CertificateSigningRequest named `<prefix><random>`) and waits up to `wait` for the certificate
/// (PEM). An administrator may approve a pending request meanwhile (`kubectl certificate approve`).
pub async fn certify(
    client: Client,
    request: &str,
    signer: &str,
    usages: &[&str],
    prefix: &str,
    wait: Duration,
) -> anyhow::Result<Vec<u8>> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"generateName": prefix},
        "spec": {"request": b64(request.as_bytes()), "signerName": signer, "usages": usages},
    }))?;
    let created =
        csrs.create(&PostParams::default(), &csr).await.context("creating the CertificateSigningRequest")?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, %signer, "asked the control plane for a certificate");
    let deadline = tokio::time::Instant::now() + wait;
    let mut told = false;
    loop {
        let current = csrs.get(&name).await.with_context(|| format!("reading CSR {name}"))?;
        let status = current.status.unwrap_or_default();
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok(cert.0);
        }
        if status.conditions.iter().flatten().any(|c| c.type_ == "Denied" || c.type_ == "Failed") {
            bail!("the control plane refused CSR {name}");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "CSR {name} was not signed within {wait:?} (approve it: kubectl certificate approve {name})"
            );
        }
        if !told {
            tracing::warn!(csr = %name, "waiting for the certificate (approve it: kubectl certificate approve {name})");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Obtains a client certificate for `node` with the bootstrap kubeconfig `bootstrap` and writes
/// the node's kubeconfig to `out` (0600).
pub async fn join(bootstrap: &Path, out: &Path, node: &str) -> anyhow::Result<()> {
    let raw = Kubeconfig::read_from(bootstrap).with_context(|| format!("reading {}", bootstrap.display()))?;
    let config = kube::Config::from_custom_kubeconfig(raw.clone(), &Default::default())
        .await
        .with_context(|| format!("using {}", bootstrap.display()))?;
    let client = Client::try_from(config).context("building the bootstrap client")?;

    let key = rcgen::KeyPair::generate().context("generating the node key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let request =
        params.serialize_request(&key).context("building the CSR")?.pem().context("encoding the CSR")?;

    let usages = ["digital signature", "key encipherment", "client auth"];
    let certificate = certify(client, &request, SIGNER, &usages, &format!("node-csr-{node}-"), WAIT).await?;

    // The node's kubeconfig: the bootstrap one's cluster, this certificate as the user.
    let cluster = raw
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("the bootstrap kubeconfig names no cluster")?;
    let server = cluster.server.clone().context("the bootstrap kubeconfig names no server")?;
    let ca = cluster.certificate_authority_data.clone().unwrap_or_default();
    let user = format!("system:node:{node}");
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "skiff", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(&certificate), "client-key-data": b64(key.serialize_pem().as_bytes())}}],
        "contexts": [{"name": "node", "context": {"cluster": "skiff", "user": user}}],
        "current-context": "node",
    });
    write_private(out, serde_yaml::to_string(&kubeconfig)?.as_bytes())
}

/// Writes `contents` to `path` with mode 0600, through a temporary file and a rename.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let dir = path.parent().context("the kubeconfig path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}
