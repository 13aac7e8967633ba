//! Reading certificates back: who they name, who issued them, when they expire. Used by
//! `certs check-expiration`, by servers to turn a client certificate into a user,
//! and by the agent to decide whether its serving certificate is still good.

use anyhow::Context as _;
use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, x509::X509Name};

/// The parts of a certificate skiff cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub issuer: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    /// DNS names and IP addresses.
    pub sans: Vec<String>,
}

fn common_names(name: &X509Name<'_>) -> Vec<String> {
    name.iter_common_name().filter_map(|a| a.as_str().ok().map(str::to_owned)).collect()
}

fn organizations(name: &X509Name<'_>) -> Vec<String> {
    name.iter_organization().filter_map(|a| a.as_str().ok().map(str::to_owned)).collect()
}

/// Reads a parsed certificate.
pub fn info(cert: &X509Certificate<'_>) -> CertInfo {
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) if b.len() == 4 => {
                        Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    CertInfo {
        common_name: common_names(cert.subject()).into_iter().next().unwrap_or_default(),
        organizations: organizations(cert.subject()),
        issuer: common_names(cert.issuer()).into_iter().next().unwrap_or_default(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
        sans,
    }
}

/// Reads the first certificate of a PEM text.
pub fn parse_pem(pem: &str) -> anyhow::Result<CertInfo> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| anyhow::anyhow!("not PEM: {e}"))?;
    let cert = block.parse_x509().map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    Ok(info(&cert))
}

/// Reads a DER certificate (what a TLS peer presents).
pub fn parse_der(der: &[u8]) -> anyhow::Result<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("not an X.509 certificate")?;
    Ok(info(&cert))
}
