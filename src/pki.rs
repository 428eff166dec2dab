//! Certificates for agents (not Connect's): an agent CA, and certificates
//! naming an agent's role, `server.<dc>.<domain>` or
//! `client.<dc>.<domain>`, as `cairn tls` makes them and as the servers of
//! a `cairn agent -secure` cluster sign them for agents that join. Below
//! both the agent and the server, which use it.

use std::time::{Duration, SystemTime};

use crate::sig::Even;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

/// What went wrong making or reading certificates.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(pub String);

fn err(what: &str) -> impl Fn(rcgen::Error) -> TlsSetupError + '_ {
    move |e| TlsSetupError(format!("{what}: {e}"))
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

/// Which agent a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A server: `server.<dc>.<domain>`.
    Server,
    /// A client agent: `client.<dc>.<domain>`.
    Client,
}

/// A new CA for the agents of `domain`, valid `days` from `now`.
pub fn create_ca(domain: &str, days: u32, now: SystemTime) -> Result<Pair, TlsSetupError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("CA key"))?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err("CA"))?;
    // Each CA's name is its own (as Consul's carry a serial): a verifier
    // that finds another CA of the same name would try its key, and fail
    // as a bad signature rather than as an unknown CA.
    let serial = key
        .public_key_raw()
        .iter()
        .skip(1)
        .take(8)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        >> 1;
    p.serial_number = Some(rcgen::SerialNumber::from(serial));
    p.distinguished_name.push(
        DnType::CommonName,
        format!("Cairn Agent CA {serial} for {domain}"),
    );
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = (now - Duration::from_secs(60)).into();
    p.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
    let cert = p.self_signed(&Even(&key)).map_err(err("CA"))?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The name a `role` certificate of datacenter `dc` carries.
pub fn agent_name(role: Role, dc: &str, domain: &str) -> String {
    let r = match role {
        Role::Server => "server",
        Role::Client => "client",
    };
    format!("{r}.{dc}.{}", domain.trim_matches('.'))
}

/// What an agent certificate says.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Server or client.
    pub role: Role,
    /// Its datacenter.
    pub dc: String,
    /// The domain (`consul`).
    pub domain: String,
    /// More DNS names to carry.
    pub extra_dns: Vec<String>,
    /// More IP addresses to carry (127.0.0.1 always is).
    pub extra_ips: Vec<std::net::IpAddr>,
    /// Days of validity.
    pub days: u32,
}

/// A certificate for an agent as `spec` says, with a key of its own,
/// signed by `ca`, valid from `now`.
pub fn create_cert(ca: &Pair, spec: &CertSpec, now: SystemTime) -> Result<Pair, TlsSetupError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("key"))?;
    Ok(Pair {
        cert_pem: issue(ca, spec, &key, now)?,
        key_pem: key.serialize_pem(),
    })
}

/// The public key a PEM certificate signing request asks a certificate
/// for. Nothing else in it is taken: what the certificate says is the
/// issuer's to decide ([`issue`]).
pub fn csr_public_key(csr_pem: &str) -> Result<rcgen::PublicKey, TlsSetupError> {
    rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map(|csr| csr.public_key)
        .map_err(|e| {
            TlsSetupError(format!(
                "the certificate signing request does not read: {e}"
            ))
        })
}

/// A new key, and a PEM CSR for it (its name is left to the issuer).
pub fn key_and_csr() -> Result<(KeyPair, String), TlsSetupError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("key"))?;
    let p = CertificateParams::new(Vec::<String>::new()).map_err(err("CSR"))?;
    let csr = p
        .serialize_request(&Even(&key))
        .and_then(|csr| csr.pem())
        .map_err(err("CSR"))?;
    Ok((key, csr))
}

/// A certificate for `key` (PEM) as `spec` says, signed by `ca`, valid
/// from `now`.
pub fn issue(
    ca: &Pair,
    spec: &CertSpec,
    key: &impl rcgen::PublicKeyData,
    now: SystemTime,
) -> Result<String, TlsSetupError> {
    let CertSpec {
        role,
        dc,
        domain,
        extra_dns,
        extra_ips,
        days,
    } = spec;
    let (role, days) = (*role, *days);
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(err("the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, Even(&ca_key)).map_err(err("the CA"))?;
    let name = agent_name(role, dc, domain);
    let mut dns = vec![name.clone(), "localhost".to_string()];
    dns.extend(extra_dns.iter().cloned());
    let mut p = CertificateParams::new(dns).map_err(err("certificate"))?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    p.subject_alt_names
        .extend(extra_ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.not_before = (now - Duration::from_secs(60)).into();
    p.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
    let cert = p.signed_by(key, &issuer).map_err(err("certificate"))?;
    Ok(cert.pem())
}
