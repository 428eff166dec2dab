//! TLS for the agent itself (not Connect's): a CA and agent certificates
//! as `cairn tls ca create` and `cairn tls cert create` make them (Consul's
//! commands and file names), and the HTTPS API (`ports.https`, with
//! `ca_file`, `cert_file`, `key_file` and `verify_incoming`).
//!
//! A server certificate names `server.<dc>.<domain>` (what a client checks
//! when it verifies a server's hostname) and `localhost`; a client's names
//! `client.<dc>.<domain>`. Both carry the server and client extended key
//! usages, as Consul's do.
//!
//! Server RPC over TLS ([`rpc_tls`]): with `verify_outgoing`, an agent
//! dials its servers over TLS and checks that they prove
//! `server.<dc>.<domain>` with a certificate from `ca_file` (the name check
//! can be turned off with `verify_server_hostname = false`, which is not
//! advised); with `verify_incoming`, a server takes only connections that
//! present a certificate from `ca_file`.

use std::path::Path;
use std::sync::Arc;

pub use crate::pki::{agent_name, create_ca, create_cert, CertSpec, Pair, Role, TlsSetupError};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{RootCertStore, ServerConfig};

fn read(what: &str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path)
        .map_err(|e| TlsSetupError(format!("cannot read {what} {}: {e}", path.display())))
}

/// The roots of a PEM CA file.
pub fn root_store(ca_file: &Path) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let pem = String::from_utf8_lossy(&read("ca_file", ca_file)?).into_owned();
    crate::connect::tls::root_store(&[pem])
        .map_err(|e| TlsSetupError(format!("ca_file {}: {e}", ca_file.display())))
}

/// The HTTPS API's TLS: the agent's certificate and key, and with
/// `verify_incoming` a client certificate chained to `ca_file` required.
pub fn https_config(
    cert_file: &Path,
    key_file: &Path,
    ca_file: Option<&Path>,
    verify_incoming: bool,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let mut config = server_config(cert_file, key_file, ca_file, verify_incoming, false)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The agent's certificate chain and key.
fn identity(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<SingleCertAndKey>, TlsSetupError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("cert_file", cert_file)?)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsSetupError(format!("cert_file {}: {e}", cert_file.display())))?;
    if chain.is_empty() {
        return Err(TlsSetupError(format!(
            "cert_file {} holds no certificate",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("key_file", key_file)?)
        .map_err(|e| TlsSetupError(format!("key_file {}: {e}", key_file.display())))?;
    let certified = crate::sig::certified_key(provider, chain, key)
        .map_err(|e| TlsSetupError(format!("cert_file and key_file do not match: {e}")))?;
    Ok(Arc::new(SingleCertAndKey::from(certified)))
}

/// A server side presenting `cert_file`, and with `verify_incoming`
/// requiring a client certificate chained to `ca_file`.
fn server_config(
    cert_file: &Path,
    key_file: &Path,
    ca_file: Option<&Path>,
    verify_incoming: bool,
    anonymous_joins: bool,
) -> Result<ServerConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let id = identity(cert_file, key_file, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?;
    let builder = if verify_incoming {
        let ca = ca_file.ok_or_else(|| {
            TlsSetupError(
                "verify_incoming needs ca_file, the CA client certificates chain to".into(),
            )
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(root_store(ca)?, provider);
        // A certificate that is offered is still checked; one that is not
        // leaves the connection able to ask for a join alone.
        let verifier = if anonymous_joins {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        let verifier = verifier.build().map_err(|e| TlsSetupError(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Ok(builder.with_cert_resolver(id))
}

/// TLS for server RPC, from the agent's settings: how it dials servers
/// (`None`: plain TCP), and on a server, how it answers (`None`: plain
/// only). A server with a certificate answers TLS, and plain TCP too
/// unless `verify_incoming`, so TLS rolls out one agent at a time. A
/// server dials over TLS when it demands TLS of others (`verify_incoming`),
/// so servers that demand it reach each other.
pub fn rpc_tls(
    config: &super::AgentConfig,
) -> Result<(Option<crate::rpc::ClientTls>, Option<crate::rpc::ServerTls>), TlsSetupError> {
    let server_side = config.server && config.verify_incoming;
    let dial = config.verify_outgoing || server_side;
    let server = match (config.server, &config.cert_file, &config.key_file) {
        (true, Some(cert), Some(key)) => Some(crate::rpc::ServerTls {
            config: Arc::new(server_config(
                cert,
                key,
                config.ca_file.as_deref(),
                config.verify_incoming,
                config.secure,
            )?),
            plain_too: !config.verify_incoming,
            anonymous_joins: config.secure && config.verify_incoming,
            servers_are: (config.verify_incoming && config.verify_server_hostname).then(|| {
                format!(
                    "server.{}.{}",
                    config.datacenter,
                    config.dns.domain.trim_matches('.')
                )
            }),
        }),
        (true, _, _) if dial => {
            return Err(TlsSetupError(
                "a server with verify_incoming or verify_outgoing needs cert_file and key_file (cairn tls cert create -server)".into(),
            ))
        }
        _ => None,
    };
    if !dial {
        return Ok((None, server));
    }
    let ca = config.ca_file.as_deref().ok_or_else(|| {
        TlsSetupError("verify_outgoing and verify_incoming need ca_file, the CA servers' certificates chain to".into())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = root_store(ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?;
    let builder = if config.verify_server_hostname {
        builder.with_root_certificates(roots)
    } else {
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsSetupError(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
    };
    let client = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            builder.with_client_cert_resolver(identity(cert, key, &provider)?)
        }
        _ => builder.with_no_client_auth(),
    };
    Ok((
        Some(crate::rpc::ClientTls {
            config: Arc::new(client),
            datacenter: config.datacenter.clone(),
            domain: config.dns.domain.clone(),
        }),
        server,
    ))
}

/// With `verify_server_hostname = false`: a server's chain is checked
/// against the CA, but not the name it proves (Consul's legacy default;
/// any certificate from the CA, a client's included, then passes).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        // Checked against a name the certificate itself carries: the
        // chain and validity are verified, the name is not.
        let name = first_dns_name(end_entity).ok_or_else(|| {
            rustls::Error::General("the server certificate carries no DNS name".into())
        })?;
        let name = rustls::pki_types::ServerName::try_from(name)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        self.0
            .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The first DNS name among a certificate's subject alternative names.
fn first_dns_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn certificates_name_their_role_and_chain_to_the_ca() {
        let now = SystemTime::now();
        let ca = create_ca("consul", 30, now).unwrap();
        let spec = CertSpec {
            role: Role::Server,
            dc: "dc1".into(),
            domain: "consul.".into(),
            extra_dns: Vec::new(),
            extra_ips: Vec::new(),
            days: 30,
        };
        let s = create_cert(&ca, &spec, now).unwrap();
        let der = CertificateDer::from_pem_slice(s.cert_pem.as_bytes()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names: Vec<String> = x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect();
        assert!(
            names.iter().any(|n| n.contains("server.dc1.consul")),
            "{names:?}"
        );
        assert_eq!(
            agent_name(Role::Client, "dc2", "consul"),
            "client.dc2.consul"
        );
    }
}
