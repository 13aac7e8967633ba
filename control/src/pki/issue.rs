//! Issuing certificates: the cluster CA, and leaf certificates it signs (ECDSA P-256, the key
//! type Go, rustls and Python's ssl all accept).

use std::net::IpAddr;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (the API server).
    Server,
    /// TLS client (users, nodes, control loops).
    Client,
}

/// Who a certificate names and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Common name: the user name the API server authenticates (`system:node:<name>`).
    pub common_name: String,
    /// Organizations: the user's groups (`system:masters`, `system:nodes`).
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (servers).
    pub sans: Vec<String>,
    pub usage: Usage,
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn serial() -> SerialNumber {
    // 128 random bits, the top one clear so the DER integer stays positive.
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, not_before: OffsetDateTime, lifetime: Duration) {
    params.not_before = not_before;
    params.not_after = not_before + lifetime;
}

/// What every leaf the CA signs has: key and extended key usages for `usage`, an authority key
/// identifier, a fresh serial, and its validity. The subject is the caller's.
fn leaf_params(usage: Usage, not_before: OffsetDateTime, lifetime: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial());
    validity(&mut params, not_before, lifetime);
    params
}

/// A new self-signed CA named `common_name`, valid from now (less a minute of clock skew).
pub fn new_ca(common_name: &str, lifetime: Duration) -> anyhow::Result<Issued> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(serial());
    validity(&mut params, OffsetDateTime::now_utc() - Duration::minutes(1), lifetime);
    let cert = params.self_signed(&key).context("signing the CA")?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The cluster CA, loaded to sign with.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    pub fn load(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).context("the CA key is not a PEM private key")?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).context("the CA certificate does not parse")?;
        Ok(Self { issuer, cert_pem: cert_pem.to_owned() })
    }

    /// A leaf for `subject` with a fresh key, valid from `not_before` for `lifetime`.
    pub fn issue(
        &self,
        subject: &Subject,
        not_before: OffsetDateTime,
        lifetime: Duration,
    ) -> anyhow::Result<Issued> {
        let key = KeyPair::generate().context("generating a key")?;
        let cert_pem = self.sign(subject, &key, not_before, lifetime)?;
        Ok(Issued { cert_pem, key_pem: key.serialize_pem() })
    }

    /// A leaf for `subject` over an existing key (renewal keeps the key).
    pub fn reissue(&self, subject: &Subject, key_pem: &str, lifetime: Duration) -> anyhow::Result<Issued> {
        let key = KeyPair::from_pem(key_pem).context("the key is not a PEM private key")?;
        let cert_pem =
            self.sign(subject, &key, OffsetDateTime::now_utc() - Duration::minutes(1), lifetime)?;
        Ok(Issued { cert_pem, key_pem: key_pem.to_owned() })
    }

    /// Signs a PEM certificate signing request for `usage`, valid for `lifetime`: only the
    /// subject, the key and (for a serving certificate) the SANs come from the request; usages,
    /// validity and serial are ours.
    pub fn sign_request(&self, pem: &str, usage: Usage, lifetime: Duration) -> anyhow::Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(pem).context("not a valid PEM CSR")?;
        let mut params = leaf_params(usage, OffsetDateTime::now_utc() - Duration::minutes(1), lifetime);
        params.distinguished_name = csr.params.distinguished_name.clone();
        if usage == Usage::Server {
            params.subject_alt_names = csr.params.subject_alt_names.clone();
        }
        csr.params = params;
        Ok(csr.signed_by(&self.issuer).context("signing the request")?.pem())
    }

    fn sign(
        &self,
        subject: &Subject,
        key: &KeyPair,
        not_before: OffsetDateTime,
        lifetime: Duration,
    ) -> anyhow::Result<String> {
        let mut params = leaf_params(subject.usage, not_before, lifetime);
        params.distinguished_name = DistinguishedName::new();
        for org in &subject.organizations {
            params.distinguished_name.push(DnType::OrganizationName, org.as_str());
        }
        params.distinguished_name.push(DnType::CommonName, subject.common_name.as_str());
        params.subject_alt_names = subject
            .sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.clone().try_into().map(SanType::DnsName).with_context(|| format!("SAN {s:?}")),
            })
            .collect::<anyhow::Result<_>>()?;
        let cert = params
            .signed_by(key, &self.issuer)
            .with_context(|| format!("signing {}", subject.common_name))?;
        Ok(cert.pem())
    }
}

fn dn_text(value: &rcgen::DnValue) -> String {
    match value {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_owned(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_owned(),
        _ => String::new(),
    }
}

/// The subject a PEM certificate signing request asks for (its signature checked).
pub fn csr_subject(pem: &str) -> anyhow::Result<Subject> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem).context("not a valid PEM CSR")?;
    let mut subject = Subject {
        common_name: String::new(),
        organizations: Vec::new(),
        sans: Vec::new(),
        usage: Usage::Client,
    };
    for (kind, value) in csr.params.distinguished_name.iter() {
        match kind {
            DnType::CommonName => subject.common_name = dn_text(value),
            DnType::OrganizationName => subject.organizations.push(dn_text(value)),
            _ => {}
        }
    }
    subject.sans = csr
        .params
        .subject_alt_names
        .iter()
        .map(|s| match s {
            SanType::DnsName(d) => d.as_str().to_owned(),
            SanType::IpAddress(ip) => ip.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    Ok(subject)
}
