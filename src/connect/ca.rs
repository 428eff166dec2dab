//! The built-in CA: an ECDSA P-256 root per rotation, leaf certificates
//! that name a service by its SPIFFE ID, and the checks a signer makes on
//! a certificate signing request before it puts the root's name under it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use serde::{Deserialize, Serialize};

use crate::sig::Even;

/// How long a root is valid (Consul's built-in CA: ten years).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf is valid unless configured otherwise (Consul: 72 h).
pub const LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
/// Certificates start this long before they are made, so that a clock a
/// little behind the signer's still accepts them.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why the CA could not do what was asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaError {
    /// A CSR that cannot be read, or whose signature does not verify.
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    /// A CSR asking for an identity other than the caller's.
    #[error("the CSR asks for {asked}, not {expected}")]
    WrongIdentity {
        /// The SPIFFE ID the CSR carries.
        asked: String,
        /// The one it may carry.
        expected: String,
    },
    /// A name that is not a SPIFFE ID of this cluster's form.
    #[error("not a service SPIFFE ID: {0:?}")]
    BadSpiffe(String),
    /// The crypto library refused (a corrupt stored key, for one).
    #[error("certificate generation failed: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> CaError {
    CaError::Crypto(e.to_string())
}

/// A service's identity: `spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<service>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// `<cluster-id>.consul`.
    pub trust_domain: String,
    /// The service's datacenter.
    pub datacenter: String,
    /// The service name.
    pub service: String,
}

impl SpiffeId {
    /// The URI form.
    pub fn uri(&self) -> String {
        format!(
            "spiffe://{}/ns/default/dc/{}/svc/{}",
            self.trust_domain, self.datacenter, self.service
        )
    }

    /// Reads the URI form; any namespace is accepted (cairn has one).
    pub fn parse(uri: &str) -> Result<SpiffeId, CaError> {
        let bad = || CaError::BadSpiffe(uri.to_string());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (trust_domain, path) = rest.split_once('/').ok_or_else(bad)?;
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", ns, "dc", dc, "svc", svc]
                if !trust_domain.is_empty()
                    && !ns.is_empty()
                    && !dc.is_empty()
                    && !svc.is_empty() =>
            {
                Ok(SpiffeId {
                    trust_domain: trust_domain.to_ascii_lowercase(),
                    datacenter: dc.to_string(),
                    service: svc.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The trust domain of a cluster.
pub fn trust_domain(cluster_id: &str) -> String {
    format!("{cluster_id}.consul")
}

/// A root certificate and its key, as the servers keep them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootKeys {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (only the servers hold it).
    pub key_pem: String,
    /// Colon-separated hex of its subject key identifier.
    pub signing_key_id: String,
    /// Its serial number.
    pub serial: u64,
    /// Validity, in ms since the Unix epoch.
    pub not_before_ms: u64,
    /// End of validity, in ms since the Unix epoch.
    pub not_after_ms: u64,
    /// This root cross-signed by the root it replaced (PEM), Consul's
    /// `IntermediateCerts`: leaves carry it, so a peer that still trusts
    /// only the old root accepts them while the new bundle reaches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intermediate_pems: Vec<String>,
}

/// `t` in milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn validity(params: &mut CertificateParams, now: SystemTime, ttl: Duration) {
    let start = now.checked_sub(BACKDATE).unwrap_or(now);
    params.not_before = start.into();
    params.not_after = (now + ttl).into();
}

/// A new root for the cluster with trust domain `trust_domain`.
pub fn generate_root(
    trust_domain: &str,
    serial: u64,
    now: SystemTime,
) -> Result<RootKeys, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    let short = trust_domain
        .split('.')
        .next()
        .unwrap_or("")
        .get(..8)
        .unwrap_or("");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("pri-{serial}.consul.ca.{short}.consul"),
    );
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{trust_domain}")
            .try_into()
            .map_err(crypto)?,
    )];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from(serial));
    validity(&mut params, now, ROOT_TTL);
    let signing_key_id = colon_hex(&params.key_identifier(&key));
    let cert = params.self_signed(&Even(&key)).map_err(crypto)?;
    Ok(RootKeys {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        signing_key_id,
        serial,
        not_before_ms: unix_ms(now.checked_sub(BACKDATE).unwrap_or(now)),
        not_after_ms: unix_ms(now + ROOT_TTL),
        intermediate_pems: Vec::new(),
    })
}

/// A root an operator brings (Consul's `Config.RootCert` and
/// `Config.PrivateKey`): it must be a CA certificate whose key is the one
/// given, and be valid now.
pub fn root_from_pem(cert_pem: &str, key_pem: &str, now: SystemTime) -> Result<RootKeys, CaError> {
    let bad = |why: &str| CaError::Crypto(format!("RootCert/PrivateKey: {why}"));
    let der = pem_certs(cert_pem);
    let [der] = der.as_slice() else {
        return Err(bad("RootCert must hold exactly one PEM certificate"));
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| bad(&format!("unreadable certificate: {e}")))?;
    if !cert.is_ca() {
        return Err(bad(
            "the certificate is not a CA (basicConstraints CA:TRUE)",
        ));
    }
    let key = KeyPair::from_pem(key_pem).map_err(|e| bad(&format!("unreadable key: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad("the private key does not belong to the certificate"));
    }
    let to_ms = |t: x509_parser::time::ASN1Time| {
        u64::try_from(t.timestamp())
            .unwrap_or(0)
            .saturating_mul(1000)
    };
    let (not_before_ms, not_after_ms) = (
        to_ms(cert.validity().not_before),
        to_ms(cert.validity().not_after),
    );
    if !(not_before_ms..not_after_ms).contains(&unix_ms(now)) {
        return Err(bad("the certificate is not valid now"));
    }
    let ski = subject_key_id(&cert).unwrap_or_else(|| der.iter().take(20).copied().collect());
    let serial_bytes = cert.raw_serial();
    let serial = serial_bytes
        .iter()
        .rev()
        .take(8)
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Ok(RootKeys {
        cert_pem: cert_pem.trim().to_string() + "\n",
        key_pem: key.serialize_pem(),
        signing_key_id: colon_hex(&ski),
        serial,
        not_before_ms,
        not_after_ms,
        intermediate_pems: Vec::new(),
    })
}

/// `new` cross-signed by `old`, as Consul does it on a rotation: the same
/// subject, key and extensions as `new`, issued by `old` and valid no
/// longer than `old` is. A verifier that trusts `old` alone then accepts a
/// leaf of `new` that carries it (leaf, cross-signed root, `old`).
pub fn cross_sign(old: &RootKeys, new: &RootKeys) -> Result<String, CaError> {
    let der = pem_certs(&new.cert_pem);
    let der = der
        .first()
        .ok_or_else(|| crypto("the new root has no certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(crypto)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    params.distinguished_name = subject_of(cert.subject())?;
    params.subject_alt_names = uris_of(der)
        .into_iter()
        .map(|u| u.try_into().map(SanType::URI))
        .collect::<Result<_, _>>()
        .map_err(crypto)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(cert.raw_serial()));
    if let Some(ski) = subject_key_id(&cert) {
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ski);
    }
    params.use_authority_key_identifier_extension = true;
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    params.not_before = at(new.not_before_ms).into();
    params.not_after = at(old.not_after_ms.min(new.not_after_ms)).into();
    let new_key = KeyPair::from_pem(&new.key_pem).map_err(crypto)?;
    let old_key = KeyPair::from_pem(&old.key_pem).map_err(crypto)?;
    let issuer = Issuer::from_ca_cert_pem(&old.cert_pem, Even(&old_key)).map_err(crypto)?;
    let cross = params.signed_by(&new_key, &issuer).map_err(crypto)?;
    Ok(cross.pem())
}

/// `name` as rcgen builds names, each attribute in its string type, so a
/// certificate made with it names the same subject byte for byte.
fn subject_of(name: &x509_parser::x509::X509Name) -> Result<rcgen::DistinguishedName, CaError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = rcgen::DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| crypto("an attribute type too long to read"))?
            .collect();
        let data = attr.attr_value().data;
        let text = std::str::from_utf8(data).map_err(crypto)?;
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => {
                rcgen::DnValue::PrintableString(text.try_into().map_err(crypto)?)
            }
            Tag::Ia5String => rcgen::DnValue::Ia5String(text.try_into().map_err(crypto)?),
            Tag::Utf8String => rcgen::DnValue::Utf8String(text.to_string()),
            other => return Err(crypto(format!("a subject attribute of type {other}"))),
        };
        dn.push(rcgen::DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// The subject key identifier a certificate carries.
fn subject_key_id(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// A leaf's private key and the CSR a service sends for it.
pub struct LeafRequest {
    /// The private key, PEM (never leaves the agent).
    pub key_pem: String,
    /// The CSR, PEM.
    pub csr_pem: String,
}

/// A fresh key and a CSR for `id`.
pub fn leaf_request(id: &SpiffeId) -> Result<LeafRequest, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    params.subject_alt_names = vec![SanType::URI(id.uri().try_into().map_err(crypto)?)];
    let csr = params.serialize_request(&Even(&key)).map_err(crypto)?;
    Ok(LeafRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(crypto)?,
    })
}

/// A signed leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedLeaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its serial number, colon-separated hex.
    pub serial: String,
    /// Validity, in ms since the Unix epoch.
    pub not_before_ms: u64,
    /// End of validity, in ms since the Unix epoch.
    pub not_after_ms: u64,
}

/// Signs `csr_pem` with `root`, if it asks for `expected` and nothing else.
/// The certificate's contents are the signer's, not the CSR's: only the
/// public key and the identity (checked) come from the request.
pub fn sign_leaf(
    root: &RootKeys,
    csr_pem: &str,
    expected: &SpiffeId,
    serial: u64,
    now: SystemTime,
    ttl: Duration,
) -> Result<SignedLeaf, CaError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CaError::BadCsr(e.to_string()))?;
    let uris: Vec<String> = csr
        .params
        .subject_alt_names
        .iter()
        .map(|s| match s {
            SanType::URI(u) => u.as_str().to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    let want = expected.uri();
    if uris != [want.clone()] {
        return Err(CaError::WrongIdentity {
            asked: uris.join(", "),
            expected: want,
        });
    }
    let key = KeyPair::from_pem(&root.key_pem).map_err(crypto)?;
    let issuer = Issuer::from_ca_cert_pem(&root.cert_pem, Even(&key)).map_err(crypto)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    params
        .distinguished_name
        .push(DnType::CommonName, expected.service.clone());
    params.subject_alt_names = vec![SanType::URI(want.try_into().map_err(crypto)?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from(serial));
    validity(&mut params, now, ttl);
    let cert = params.signed_by(&csr.public_key, &issuer).map_err(crypto)?;
    // The chain after the leaf: a peer that has only the previous root
    // still finds a path to it.
    let cert_pem = std::iter::once(cert.pem())
        .chain(
            root.intermediate_pems
                .iter()
                .map(|p| p.trim_end().to_string() + "\n"),
        )
        .collect();
    Ok(SignedLeaf {
        cert_pem,
        serial: colon_hex(&serial.to_be_bytes()),
        not_before_ms: unix_ms(now.checked_sub(BACKDATE).unwrap_or(now)),
        not_after_ms: unix_ms(now + ttl),
    })
}

/// The SPIFFE IDs (URI SANs) of a DER certificate.
pub fn uris_of(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// The DER certificates of a PEM bundle (unreadable blocks are skipped).
pub fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(service: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: "11111111-2222-3333-4444-555555555555.consul".into(),
            datacenter: "dc1".into(),
            service: service.into(),
        }
    }

    #[test]
    fn spiffe_ids_round_trip_and_bad_ones_are_refused() {
        let web = id("web");
        assert_eq!(SpiffeId::parse(&web.uri()), Ok(web));
        for bad in [
            "",
            "spiffe://",
            "spiffe://td",
            "spiffe://td/ns/default/dc/dc1/svc/",
            "spiffe://td/ns/default/dc/dc1/svc/web/extra",
            "https://td/ns/default/dc/dc1/svc/web",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_leaf_carries_the_asked_identity_and_a_csr_for_another_is_refused() {
        let now = SystemTime::now();
        let root = generate_root(&id("x").trust_domain, 1, now).unwrap();
        let req = leaf_request(&id("web")).unwrap();
        let leaf = sign_leaf(&root, &req.csr_pem, &id("web"), 7, now, LEAF_TTL).unwrap();
        let der = &pem_certs(&leaf.cert_pem)[0];
        assert_eq!(uris_of(der), [id("web").uri()]);
        assert_eq!(
            leaf.not_after_ms - leaf.not_before_ms,
            (LEAF_TTL + BACKDATE).as_millis() as u64
        );
        let err = sign_leaf(&root, &req.csr_pem, &id("db"), 8, now, LEAF_TTL).unwrap_err();
        assert!(matches!(err, CaError::WrongIdentity { .. }), "{err}");
        assert!(matches!(
            sign_leaf(&root, "garbage", &id("web"), 9, now, LEAF_TTL),
            Err(CaError::BadCsr(_))
        ));
    }

    /// Whether a verifier trusting only `anchor` accepts `chain_pem` (a
    /// leaf and what follows it) as a client certificate.
    fn accepted_by(anchor: &RootKeys, chain_pem: &str) -> bool {
        use rustls::pki_types::{CertificateDer, UnixTime};
        let mut store = rustls::RootCertStore::empty();
        store
            .add(CertificateDer::from(pem_certs(&anchor.cert_pem)[0].clone()))
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(store.into(), provider)
                .build()
                .unwrap();
        let certs: Vec<CertificateDer<'static>> = pem_certs(chain_pem)
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        verifier
            .verify_client_cert(&certs[0], &certs[1..], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn a_leaf_of_a_cross_signed_root_is_accepted_by_peers_that_trust_only_the_old_one() {
        let now = SystemTime::now();
        let td = id("x").trust_domain;
        let old = generate_root(&td, 1, now).unwrap();
        let mut new = generate_root(&td, 2, now).unwrap();
        let req = leaf_request(&id("web")).unwrap();
        let bare = sign_leaf(&new, &req.csr_pem, &id("web"), 3, now, LEAF_TTL).unwrap();
        assert!(accepted_by(&new, &bare.cert_pem));
        assert!(
            !accepted_by(&old, &bare.cert_pem),
            "no path without the cross-signed root"
        );

        new.intermediate_pems = vec![cross_sign(&old, &new).unwrap()];
        let leaf = sign_leaf(&new, &req.csr_pem, &id("web"), 4, now, LEAF_TTL).unwrap();
        assert_eq!(
            pem_certs(&leaf.cert_pem).len(),
            2,
            "the leaf carries the intermediate"
        );
        assert!(accepted_by(&old, &leaf.cert_pem));
        assert!(accepted_by(&new, &leaf.cert_pem));
        // Cross-signed by a root nobody trusts: no help.
        let stranger = generate_root(&td, 9, now).unwrap();
        assert!(!accepted_by(&stranger, &leaf.cert_pem));
    }

    #[test]
    fn a_brought_root_must_be_a_ca_with_its_own_key() {
        let now = SystemTime::now();
        let td = id("x").trust_domain;
        let a = generate_root(&td, 1, now).unwrap();
        let b = generate_root(&td, 2, now).unwrap();
        let read = root_from_pem(&a.cert_pem, &a.key_pem, now).unwrap();
        assert_eq!(read.signing_key_id, a.signing_key_id);
        assert_eq!(read.serial, 1);
        let err = root_from_pem(&a.cert_pem, &b.key_pem, now).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        let req = leaf_request(&id("web")).unwrap();
        let leaf = sign_leaf(&a, &req.csr_pem, &id("web"), 3, now, LEAF_TTL).unwrap();
        let err = root_from_pem(&leaf.cert_pem, &req.key_pem, now).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
        assert!(root_from_pem("junk", &a.key_pem, now).is_err());
    }
}
