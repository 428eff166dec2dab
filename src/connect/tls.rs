//! Mutual TLS between proxies with rustls: each side presents its leaf,
//! and accepts only a peer whose certificate chains to one of the CA's
//! current roots. The client also checks that the server is the service
//! it meant to reach, by SPIFFE ID rather than by DNS name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use super::ca::{uris_of, SpiffeId};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// PEM that holds no certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// ring's provider, AES-128-GCM first: with AES instructions it is the
/// fastest suite, and both ends of a mesh hop are cairn (the server
/// follows the client's order).
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// Where certificate validity is judged from: the [`Env`]'s wall clock,
/// so that in the simulator certificates age with simulated time.
///
/// [`Env`]: crate::env::Env
pub type Clock = Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>;

/// A [`Clock`] as rustls asks for the time.
struct ClockTime(Clock);

impl std::fmt::Debug for ClockTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClockTime")
    }
}

impl rustls::time_provider::TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        let d = (self.0)().duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(UnixTime::since_unix_epoch(d))
    }
}

/// A leaf and its key, as rustls takes them (signing handshakes with
/// signatures of one length: see [`crate::sig`]).
#[derive(Debug)]
pub struct Identity(Arc<SingleCertAndKey>);

impl Identity {
    /// From the PEM the agent's leaf endpoint gives.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Identity, TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Pem(format!("leaf certificate: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::Pem("no certificate in the leaf PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::Pem(format!("leaf key: {e}")))?;
        let certified = crate::sig::certified_key(&provider(), chain, key)
            .map_err(|e| TlsError::Pem(format!("leaf key: {e}")))?;
        Ok(Identity(Arc::new(SingleCertAndKey::from(certified))))
    }
}

/// The roots as a trust store; a root that does not parse is an error,
/// not a silently smaller trust set.
pub fn root_store(roots_pem: &[String]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for pem in roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| TlsError::Pem(format!("root: {e}")))?;
            store
                .add(cert)
                .map_err(|e| TlsError::Pem(format!("root: {e}")))?;
        }
    }
    if store.is_empty() {
        return Err(TlsError::Pem("no CA root to trust".into()));
    }
    Ok(Arc::new(store))
}

/// The public listener's configuration: a client certificate chained to
/// `roots` is required (which service it names is the intentions' call).
pub fn server_config(
    id: &Identity,
    roots: Arc<RootCertStore>,
    clock: Clock,
) -> Result<Arc<ServerConfig>, TlsError> {
    let rustls = |e: &dyn std::fmt::Display| TlsError::Rustls(e.to_string());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| rustls(&e))?;
    let config = ServerConfig::builder_with_details(provider(), Arc::new(ClockTime(clock)))
        .with_safe_default_protocol_versions()
        .map_err(|e| rustls(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(id.0.clone());
    Ok(Arc::new(config))
}

/// An upstream connection's configuration: present our leaf, and accept
/// only a server chained to `roots` whose SPIFFE ID names `service` in
/// `trust_domain`.
pub fn client_config(
    id: &Identity,
    roots: Arc<RootCertStore>,
    trust_domain: &str,
    service: &str,
    clock: Clock,
) -> Result<Arc<ClientConfig>, TlsError> {
    let rustls = |e: &dyn std::fmt::Display| TlsError::Rustls(e.to_string());
    let verifier = Verifier {
        check: SpiffeCheck {
            roots,
            trust_domain: trust_domain.to_ascii_lowercase(),
            service: service.to_string(),
        },
        provider: provider(),
    };
    let config = ClientConfig::builder_with_details(provider(), Arc::new(ClockTime(clock)))
        .with_safe_default_protocol_versions()
        .map_err(|e| rustls(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(id.0.clone());
    Ok(Arc::new(config))
}

/// The SPIFFE ID of a peer's end-entity certificate, if it has exactly one.
pub fn peer_id(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = certs?.first()?;
    match uris_of(leaf).as_slice() {
        [uri] => SpiffeId::parse(uri).ok(),
        _ => None,
    }
}

/// How a [`Verifier`] judges a server's certificate; the handshake's
/// signatures it checks itself.
pub(crate) trait CertCheck: std::fmt::Debug + Send + Sync {
    /// Whether `end_entity` (with `intermediates`) is acceptable at `now`.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        provider: &CryptoProvider,
    ) -> Result<(), rustls::Error>;
}

/// A server certificate verifier: the certificate as its [`CertCheck`]
/// says, the handshake's signatures with the provider's algorithms.
#[derive(Debug)]
pub(crate) struct Verifier<C> {
    /// How the certificate is judged.
    pub(crate) check: C,
    /// Whose signature algorithms check the handshake.
    pub(crate) provider: Arc<CryptoProvider>,
}

impl<C: CertCheck> ServerCertVerifier for Verifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check
            .check(end_entity, intermediates, now, &self.provider)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Checks the chain as WebPKI does, and the identity by SPIFFE ID; the
/// server name the client dialled means nothing in the mesh.
#[derive(Debug)]
struct SpiffeCheck {
    roots: Arc<RootCertStore>,
    trust_domain: String,
    service: String,
}

impl CertCheck for SpiffeCheck {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        provider: &CryptoProvider,
    ) -> Result<(), rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            provider.signature_verification_algorithms.all,
        )?;
        let ok = match peer_id(Some(std::slice::from_ref(end_entity))) {
            Some(id) => id.trust_domain == self.trust_domain && id.service == self.service,
            None => false,
        };
        if !ok {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(())
    }
}
