//! TLS for checks (`https://` HTTP checks, `GRPCUseTLS`, `H2PingUseTLS`):
//! the server is verified against the system's trust store unless the
//! check says `TLSSkipVerify`, under `TLSServerName` or else the host
//! dialled.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::spec::TlsOptions;
use crate::connect::tls::{CertCheck, Verifier};

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trust store, read once (certificates it cannot parse are
/// left out, as Go leaves them out).
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "reading the system's trust store");
            }
            let mut roots = RootCertStore::empty();
            let (_, bad) = roots.add_parsable_certificates(found.certs);
            if bad > 0 {
                tracing::debug!(bad, "system CA certificates left out");
            }
            Arc::new(roots)
        })
        .clone()
}

/// Accepts any certificate (`TLSSkipVerify`); signatures are still
/// checked, so the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate;

impl CertCheck for AnyCertificate {
    fn check(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
        _provider: &CryptoProvider,
    ) -> Result<(), rustls::Error> {
        Ok(())
    }
}

/// A client configuration for `opts`, offering `alpn` (`h2` for gRPC and
/// H2PING, none for HTTP/1.1).
fn config(opts: &TlsOptions, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut c = if opts.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                check: AnyCertificate,
                provider: provider(),
            }))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(system_roots())
            .with_no_client_auth()
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// Runs a TLS handshake over `io` with the server at `host`; errors in
/// words for the check's output.
pub async fn connect<S>(
    io: S,
    host: &str,
    opts: &TlsOptions,
    alpn: &[&[u8]],
) -> Result<TlsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = if opts.server_name.is_empty() {
        host
    } else {
        &opts.server_name
    };
    // An IPv6 literal comes bracketed out of a URL.
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let server = ServerName::try_from(name.to_string())
        .map_err(|e| format!("tls: invalid server name {name:?}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config(opts, alpn)?));
    connector
        .connect(server, io)
        .await
        .map_err(|e| format!("tls: {e}"))
}
