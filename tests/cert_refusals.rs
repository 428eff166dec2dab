//! Real sockets on 127.0.0.1: each listener that demands a client
//! certificate refuses the bad ones, and still serves a good one.
//!
//! The listeners: the Connect sidecar proxy's public mutual-TLS listener,
//! the agent's HTTPS port with `verify_incoming`, and the server RPC port
//! with TLS and `verify_incoming`. The bad client certificates: one from a
//! CA the listener does not trust, an expired one from the right CA, one
//! from the right CA for the wrong identity, and none at all. Each is
//! tried over TLS 1.3 and TLS 1.2 (every listener offers both, and the
//! client certificate is checked in a different state machine for each).
//!
//! A refusal means no application data came back, and where the listener
//! says why (a TLS alert, or the proxy's record of a denied source), the
//! reason is the expected one: a listener that hung up for some other
//! reason, or never answered, does not pass. A positive control before
//! and after the refusals shows the listener serves the right
//! certificate, so nothing passes because the listener is simply down.
//!
//! "The wrong identity" differs by listener. The proxy authorizes the
//! source service its SPIFFE ID names by intentions, so the wrong
//! identity is a service that `* -> db deny` refuses (and, separately, a
//! trust domain that is not the cluster's). The agent's HTTPS and RPC
//! ports check the chain and the key's purpose, not the names a client
//! certificate carries (as Consul: only the server's name is checked, by
//! the client), so there the wrong identity is a certificate from the
//! right CA that is not for client authentication (server-auth only).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::agent::tls::{create_ca, create_cert, CertSpec, Pair, Role};
use cairn::connect::ca::{self, SpiffeId};
use cairn::connect::proxy::{Proxy, ProxyConfig};
use cairn::env::TokioEnv;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::version::{TLS12, TLS13};
use rustls::SupportedProtocolVersion;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/process.rs"]
mod process;
use process::{cli, free_port, http, http_get, wait_for, Agent, FAST_GOSSIP};

/// The longest any one step may take: a connect, a handshake, a write, a
/// read. Refusals answer in milliseconds; this only bounds a hang.
const STEP: Duration = Duration::from_secs(10);

/// How long a listener may take to come up and serve the positive control.
const READY: Duration = Duration::from_secs(30);

/// A day, for certificates whose validity is far from now either way.
const DAY: Duration = Duration::from_secs(86_400);

/// A client certificate chain and its key, as rustls takes them.
struct Cert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Cert {
    fn from_pem(cert_pem: &str, key_pem: &str) -> Cert {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        assert!(!chain.is_empty(), "no certificate in the PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        Cert { chain, key }
    }
}

/// How the test client judges the listener's own certificate.
enum ServerCheck {
    /// Chained to these roots and proving the name dialled.
    Ca(Arc<RootCertStore>),
    /// Anything (the handshake's signatures are still checked). For the
    /// proxy, whose certificate names a SPIFFE ID and no DNS name: what is
    /// under test is the proxy's check of the client, and tests/connect.rs
    /// covers a client refusing an impostor proxy.
    Any,
}

/// A server certificate verifier that accepts any certificate, see
/// [`ServerCheck::Any`].
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client speaking only `version`, checking the listener as
/// `server` says, presenting `cert` (none: an empty Certificate message).
fn client(
    version: &'static SupportedProtocolVersion,
    server: &ServerCheck,
    cert: Option<&Cert>,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .expect("the ring provider speaks TLS 1.2 and 1.3");
    let builder = match server {
        ServerCheck::Ca(roots) => builder.with_root_certificates(roots.clone()),
        ServerCheck::Any => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider))),
    };
    Arc::new(match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .expect("certificate and key match"),
        None => builder.with_no_client_auth(),
    })
}

/// Connects to `addr` over TLS as `config` says (dialling `name`), sends
/// `request` and reads until `complete` says the answer is whole.
///
/// `Ok` with the bytes when the listener answered with any application
/// data at all; `Err` with everything the client observed otherwise: the
/// handshake's error (where TLS 1.2 reports a refused certificate), or the
/// first read's (where TLS 1.3 does: the client's handshake is over before
/// the server has judged its certificate, so the alert comes after).
/// Every step is bounded by [`STEP`].
async fn ask(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
    request: &[u8],
    complete: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let tcp = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let server = ServerName::try_from(name.to_string()).expect("a valid server name");
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = tokio::time::timeout(STEP, connector.connect(server, tcp))
        .await
        .map_err(|_| "the handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let wrote = tokio::time::timeout(STEP, async {
        tls.write_all(request).await?;
        tls.flush().await
    })
    .await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match tokio::time::timeout(STEP, tls.read(&mut buf)).await {
            Err(_) => break "no answer and no refusal in time".to_string(),
            Ok(Ok(0)) => break "closed".to_string(),
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if complete(&answer) {
                    return Ok(answer);
                }
            }
            Ok(Err(e)) => break format!("read: {e}"),
        }
    };
    if !answer.is_empty() {
        return Ok(answer);
    }
    Err(match wrote {
        Ok(Ok(())) => end,
        Ok(Err(e)) => format!("write: {e}; {end}"),
        Err(_) => format!("the write timed out; {end}"),
    })
}

/// A runtime for the clients (and the in-process proxy).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The two protocol versions every listener offers, by name.
fn versions() -> [(&'static str, &'static SupportedProtocolVersion); 2] {
    [("TLS 1.3", &TLS13), ("TLS 1.2", &TLS12)]
}

/// Asserts `got` is a refusal whose error names one of `reasons`.
fn assert_refused(got: &Result<Vec<u8>, String>, reasons: &[&str], what: &str) {
    match got {
        Ok(answer) => panic!(
            "{what}: answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        ),
        Err(e) => assert!(
            reasons.iter().any(|r| e.contains(r)),
            "{what}: refused, but not for {reasons:?}: {e}"
        ),
    }
}

/// The alerts that say "not from a CA I trust". A Connect root of the
/// same trust domain has the same subject name as the trusted one, so the
/// chain is built to the trusted root by name and its signature fails
/// (rustls's alert for a bad signature is `DecryptError`); a CA of another
/// name is not found at all (`UnknownCA`).
const NOT_OUR_CA: &[&str] = &["UnknownCA", "DecryptError"];

/// The agent TLS material for the HTTPS and RPC tests, from cairn's own
/// `cairn tls` code: the CA the agent trusts (written to disk with the
/// agent's server certificate), a good client certificate, and the bad
/// ones.
struct AgentCerts {
    /// The CA's roots, for the client's check of the agent.
    roots: Arc<RootCertStore>,
    /// `ca_file`, `cert_file`, `key_file` for the agent's configuration.
    files: String,
    good: Cert,
    /// The server's own certificate (`server.dc1.consul`).
    server: Cert,
    /// (case, certificate or none, the alerts the listener may send).
    bad: Vec<(&'static str, Option<Cert>, &'static [&'static str])>,
}

fn agent_certs(dir: &Path) -> AgentCerts {
    let now = SystemTime::now();
    let ca = create_ca("consul", 365, now - 30 * DAY).expect("CA");
    let spec = |role| CertSpec {
        role,
        dc: "dc1".into(),
        domain: "consul".into(),
        extra_dns: Vec::new(),
        extra_ips: Vec::new(),
        days: 30,
    };
    let server = create_cert(&ca, &spec(Role::Server), now).expect("server certificate");
    let good = create_cert(&ca, &spec(Role::Client), now).expect("client certificate");
    // Issued ten days ago for one day: expired nine days ago.
    let expired = create_cert(
        &ca,
        &CertSpec {
            days: 1,
            ..spec(Role::Client)
        },
        now - 10 * DAY,
    )
    .expect("expired certificate");
    let other_ca = create_ca("consul", 365, now - 30 * DAY).expect("another CA");
    let foreign = create_cert(&other_ca, &spec(Role::Client), now).expect("foreign certificate");
    let server_only = server_auth_only(&ca);

    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path.display().to_string()
    };
    let files = format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        write("ca.pem", &ca.cert_pem),
        write("server.pem", &server.cert_pem),
        write("server-key.pem", &server.key_pem),
    );
    let mut roots = RootCertStore::empty();
    for c in Cert::from_pem(&ca.cert_pem, &ca.key_pem).chain {
        roots.add(c).expect("the CA as a root");
    }
    let cert = |p: &Pair| Some(Cert::from_pem(&p.cert_pem, &p.key_pem));
    AgentCerts {
        roots: Arc::new(roots),
        files,
        good: Cert::from_pem(&good.cert_pem, &good.key_pem),
        server: Cert::from_pem(&server.cert_pem, &server.key_pem),
        bad: vec![
            // Each agent CA has a name of its own.
            ("another CA's certificate", cert(&foreign), &["UnknownCA"]),
            (
                "an expired certificate",
                cert(&expired),
                &["CertificateExpired"],
            ),
            (
                "a certificate not for client authentication",
                cert(&server_only),
                &["UnsupportedCertificate"],
            ),
            ("no certificate", None, &["CertificateRequired"]),
        ],
    }
}

/// A certificate from `ca` naming `client.dc1.consul` but whose extended
/// key usage is server authentication only: a right-CA certificate for
/// the wrong role, which `cairn tls cert create` never makes (its
/// certificates carry both usages, as Consul's do).
fn server_auth_only(ca: &Pair) -> Pair {
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P256_SHA256,
    };
    let issuer = Issuer::from_ca_cert_pem(
        &ca.cert_pem,
        KeyPair::from_pem(&ca.key_pem).expect("CA key"),
    )
    .expect("CA");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = CertificateParams::new(vec!["client.dc1.consul".to_string()]).expect("params");
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    p.not_before = (now - DAY).into();
    p.not_after = (now + 30 * DAY).into();
    let cert = p.signed_by(&key, &issuer).expect("sign");
    Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// The agent's HTTPS port with `verify_incoming = true` refuses a client
/// certificate from another CA, an expired one, one not for client
/// authentication, and none; it serves one from its CA before and after.
#[test]
fn agent_https_with_verify_incoming_refuses_bad_client_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let certs = agent_certs(d);
    let https = free_port();
    let config = format!(
        "{FAST_GOSSIP}ports {{\n  https = {https}\n}}\n{}verify_incoming = true\n",
        certs.files
    );
    let agent = Agent::start(d, "a", &config, &[]);
    let addr: SocketAddr = ([127, 0, 0, 1], https).into();
    let rt = runtime();
    let get = |cert: Option<&Cert>, version: &'static SupportedProtocolVersion| {
        let config = client(version, &ServerCheck::Ca(certs.roots.clone()), cert);
        let request = b"GET /v1/agent/self HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        rt.block_on(ask(addr, config, "server.dc1.consul", request, |a| {
            a.windows(4).any(|w| w == b"\r\n\r\n")
        }))
    };
    let served = |cert: &Cert, version: &'static SupportedProtocolVersion, when: &str| {
        let answer = get(Some(cert), version).unwrap_or_else(|e| panic!("{when}: {e}"));
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{when}: {text}");
    };

    wait_for(READY, "the HTTPS API to serve the good client", || {
        get(Some(&certs.good), &TLS13).ok()
    });
    for (vname, version) in versions() {
        served(
            &certs.good,
            version,
            &format!("good certificate, {vname}, before"),
        );
        for (case, cert, reason) in &certs.bad {
            let got = get(cert.as_ref(), version);
            assert_refused(&got, reason, &format!("HTTPS, {case}, {vname}"));
        }
        served(
            &certs.good,
            version,
            &format!("good certificate, {vname}, after"),
        );
    }
    drop(agent);
}

/// One server RPC request, `Status`, framed as cairn frames it: a 4-byte
/// big-endian length and the JSON envelope.
fn status_frame() -> Vec<u8> {
    use cairn::server::{ClientRequest, ServerRpc};
    frame(ServerRpc::Client(ClientRequest::Status))
}

/// A Raft vote request from a candidate of a later term, framed.
fn vote_frame() -> Vec<u8> {
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(99, 42u64), None);
    frame(cairn::server::ServerRpc::Raft(
        cairn::consensus::network::RaftRequest::Vote(vote),
    ))
}

fn frame(req: cairn::server::ServerRpc) -> Vec<u8> {
    let body = serde_json::to_vec(&serde_json::json!({ "id": 7, "body": req }))
        .expect("encode the request");
    let mut frame = u32::try_from(body.len())
        .expect("a small frame")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Whether `a` holds a whole frame.
fn whole_frame(a: &[u8]) -> bool {
    a.len() >= 4 && a.len() - 4 >= u32::from_be_bytes([a[0], a[1], a[2], a[3]]) as usize
}

/// The server RPC port with TLS and `verify_incoming = true` refuses a
/// client certificate from another CA, an expired one, one not for client
/// authentication, and none; it answers one from its CA before and after.
#[test]
fn server_rpc_with_verify_incoming_refuses_bad_client_certificates() {
    use cairn::server::ServerReply;
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let certs = agent_certs(d);
    let config = format!(
        "{FAST_GOSSIP}{}verify_incoming = true\nverify_outgoing = true\n",
        certs.files
    );
    let server = Agent::solo_server_with(d, "s1", &config);
    let addr: SocketAddr = ([127, 0, 0, 1], server.rpc).into();
    let rt = runtime();
    let frame = status_frame();
    let call = |cert: Option<&Cert>, version: &'static SupportedProtocolVersion| {
        let config = client(version, &ServerCheck::Ca(certs.roots.clone()), cert);
        rt.block_on(ask(addr, config, "server.dc1.consul", &frame, whole_frame))
    };
    let answered = |cert: &Cert, version: &'static SupportedProtocolVersion, when: &str| {
        let answer = call(Some(cert), version).unwrap_or_else(|e| panic!("{when}: {e}"));
        assert!(whole_frame(&answer), "{when}: a partial frame");
        let (id, _reply) = cairn::rpc::decode_envelope::<ServerReply>(&answer[4..])
            .unwrap_or_else(|e| panic!("{when}: {e}"));
        assert_eq!(id, 7, "{when}: the answer to another call");
    };

    wait_for(READY, "the RPC port to answer the good client", || {
        call(Some(&certs.good), &TLS13).ok()
    });
    for (vname, version) in versions() {
        answered(
            &certs.good,
            version,
            &format!("good certificate, {vname}, before"),
        );
        for (case, cert, reason) in &certs.bad {
            let got = call(cert.as_ref(), version);
            assert_refused(&got, reason, &format!("RPC, {case}, {vname}"));
        }
        answered(
            &certs.good,
            version,
            &format!("good certificate, {vname}, after"),
        );
    }
    // With verify_server_hostname (on by default), a client agent's
    // certificate, from the same CA, may ask but not speak Raft; the
    // servers' own certificate may (CVE-2021-37219's lesson).
    let vote = vote_frame();
    let raft_as = |cert: &Cert| {
        let config = client(&TLS13, &ServerCheck::Ca(certs.roots.clone()), Some(cert));
        let answer = rt
            .block_on(ask(addr, config, "server.dc1.consul", &vote, whole_frame))
            .expect("an answer");
        cairn::rpc::decode_envelope::<ServerReply>(&answer[4..])
            .expect("a reply")
            .1
    };
    match raft_as(&certs.good) {
        ServerReply::Client(c) => {
            let why = c.answer.expect_err("refused");
            assert!(why.contains("server certificate"), "{why}");
        }
        other => panic!("a client certificate spoke Raft: {other:?}"),
    }
    assert!(
        matches!(raft_as(&certs.server), ServerReply::Raft(_)),
        "the server certificate speaks Raft"
    );
    drop(server);
}

/// A `cairn agent -secure` server takes a TLS connection that brings no
/// client certificate, for one thing only: asking to join with a join
/// token. Anything else on it is refused, Raft included; a certificate
/// that is brought is still checked.
#[test]
fn a_secure_servers_rpc_port_lets_a_connection_without_a_certificate_only_join() {
    use cairn::server::request::JoinRequest;
    use cairn::server::{ClientRequest, ServerReply, ServerRpc};
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let server = Agent::start(d, "s1", FAST_GOSSIP, &["-server".into(), "-secure".into()]);
    let ca_pem = wait_for(READY, "the secure material", || {
        std::fs::read_to_string(d.join("s1/secure/ca.pem")).ok()
    });
    let roots = cairn::connect::tls::root_store(&[ca_pem]).expect("the agent CA");
    let addr: SocketAddr = ([127, 0, 0, 1], server.rpc).into();
    let rt = runtime();
    let anonymous = client(&TLS13, &ServerCheck::Ca(roots.clone()), None);
    let answer = |req: ServerRpc| -> Result<String, String> {
        let bytes = rt.block_on(ask(
            addr,
            anonymous.clone(),
            "server.dc1.consul",
            &frame(req),
            whole_frame,
        ))?;
        match cairn::rpc::decode_envelope::<ServerReply>(&bytes[4..]).map(|(_, r)| r) {
            Ok(ServerReply::Client(c)) => c.answer.map(|a| format!("{a:?}")),
            other => Ok(format!("{other:?}")),
        }
    };
    let refusal = |req: ServerRpc| answer(req).expect_err("refused");
    let why = wait_for(READY, "the RPC port", || {
        answer(ServerRpc::Client(ClientRequest::Status)).err()
    });
    assert!(why.contains("may only ask to join"), "{why}");
    let why = refusal(ServerRpc::Client(
        ClientRequest::Status.with_token("anything"),
    ));
    assert!(why.contains("may only ask to join"), "{why}");
    let vote = vote_frame();
    let got = rt
        .block_on(ask(
            addr,
            anonymous.clone(),
            "server.dc1.consul",
            &vote,
            whole_frame,
        ))
        .expect("an answer");
    match cairn::rpc::decode_envelope::<ServerReply>(&got[4..])
        .expect("a reply")
        .1
    {
        ServerReply::Client(c) => assert!(c.answer.is_err()),
        other => panic!("Raft without a certificate: {other:?}"),
    }
    // A join is heard: a secret the cluster never made is refused as such.
    let join = || {
        ServerRpc::Client(ClientRequest::Join {
            join: Box::new(JoinRequest {
                secret: "guess".into(),
                node: "intruder".into(),
                server: true,
                csr_pem: cairn::pki::key_and_csr().expect("a CSR").1,
            }),
            hops: 0,
        })
    };
    let why = wait_for(READY, "the agent CA in Raft", || {
        answer(join())
            .err()
            .filter(|w| !w.contains("does not admit"))
    });
    assert!(why.contains("not recognised"), "{why}");
    // A certificate from another CA is refused at the handshake.
    let other = agent_certs(d);
    let config = client(&TLS13, &ServerCheck::Ca(roots), Some(&other.good));
    let got = rt.block_on(ask(
        addr,
        config,
        "server.dc1.consul",
        &frame(join()),
        whole_frame,
    ));
    assert_refused(&got, NOT_OUR_CA, "another CA's certificate");
    drop(server);
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// A leaf for `id` signed by `root`, valid for `ttl` from `from`.
fn leaf(root: &ca::RootKeys, id: &SpiffeId, serial: u64, from: SystemTime, ttl: Duration) -> Cert {
    let req = ca::leaf_request(id).expect("CSR");
    let signed = ca::sign_leaf(root, &req.csr_pem, id, serial, from, ttl).expect("sign");
    Cert::from_pem(&signed.cert_pem, &req.key_pem)
}

/// A leaf the agent issues for `service`.
fn agent_leaf(agent: &Agent, service: &str) -> Cert {
    let leaf = json(&http_get(
        &agent.http,
        &format!("/v1/agent/connect/ca/leaf/{service}"),
    ));
    Cert::from_pem(
        leaf["CertPEM"].as_str().expect("CertPEM"),
        leaf["PrivateKeyPEM"].as_str().expect("PrivateKeyPEM"),
    )
}

/// The sidecar proxy of `db` refuses, on its public mutual-TLS listener,
/// a leaf from another CA, an expired leaf from the cluster's CA, a valid
/// leaf for a service the intentions refuse (`* -> db deny`; only
/// `web -> db` is allowed), a leaf of the cluster's CA naming another
/// trust domain, and no certificate; it carries `web`'s connections
/// before and after.
#[test]
fn proxy_public_listener_refuses_bad_client_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = Agent::solo_server(dir.path(), "node1");
    let roots = json(&http_get(&agent.http, "/v1/connect/ca/roots"));
    let trust_domain = roots["TrustDomain"]
        .as_str()
        .expect("TrustDomain")
        .to_string();
    let id = |trust_domain: &str, service: &str| SpiffeId {
        trust_domain: trust_domain.into(),
        datacenter: "dc1".into(),
        service: service.into(),
    };
    let now = SystemTime::now();

    // The operator brings the cluster's root (Consul's RootCert and
    // PrivateKey), so the test holds its key and can sign what no agent
    // would: an expired leaf, a leaf for another trust domain.
    let mine = ca::generate_root(&trust_domain, 50, now).expect("root");
    let body = serde_json::json!({
        "Provider": "consul",
        "Config": { "RootCert": mine.cert_pem, "PrivateKey": mine.key_pem },
    });
    let (status, out) = http(
        &agent.http,
        "PUT",
        "/v1/connect/ca/configuration",
        body.to_string().as_bytes(),
    )
    .expect("PUT the CA configuration");
    assert_eq!(status, 200, "{out}");
    let roots = json(&http_get(&agent.http, "/v1/connect/ca/roots"));
    assert_eq!(roots["ActiveRootID"], mine.signing_key_id.as_str());

    // Only web may reach db: a deny for every source, an allow for web
    // (an exact source takes precedence over `*`).
    for args in [
        &["intention", "create", "-deny", "*", "db"][..],
        &["intention", "create", "web", "db"][..],
    ] {
        let (ok, out, err) = cli(&agent, args);
        assert!(ok, "{args:?}: {out}{err}");
    }

    let good = agent_leaf(&agent, "web");
    let other_ca = ca::generate_root(&trust_domain, 9, now).expect("another root");
    let foreign = leaf(&other_ca, &id(&trust_domain, "web"), 1, now, ca::LEAF_TTL);
    let expired = leaf(
        &mine,
        &id(&trust_domain, "web"),
        2,
        now - 10 * DAY,
        Duration::from_secs(3600),
    );
    let denied = agent_leaf(&agent, "evil");
    let elsewhere = leaf(
        &mine,
        &id("11111111-2222-3333-4444-555555555555.consul", "web"),
        3,
        now,
        ca::LEAF_TTL,
    );

    let rt = runtime();
    let echo = rt.block_on(echo_server());
    let public: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let agent_addr: SocketAddr = agent.http.parse().expect("the agent's HTTP address");
    let cfg = ProxyConfig {
        service: "db".into(),
        agent: agent_addr,
        inbound: Some((public, echo)),
        upstreams: Vec::new(),
    };
    let proxy = rt
        .block_on(async { tokio::time::timeout(READY, Proxy::start(TokioEnv::new(), cfg)).await })
        .expect("the proxy started in time")
        .expect("the proxy started");
    assert_eq!(proxy.public_addr, Some(public));

    let ping = b"ping through db's proxy";
    let connect = |cert: Option<&Cert>, version: &'static SupportedProtocolVersion| {
        let config = client(version, &ServerCheck::Any, cert);
        rt.block_on(ask(public, config, "db.svc.consul", ping, |a| {
            a.len() >= ping.len()
        }))
    };
    let carried = |version: &'static SupportedProtocolVersion, when: &str| {
        let answer = connect(Some(&good), version).unwrap_or_else(|e| panic!("{when}: {e}"));
        assert_eq!(answer, ping, "{when}: the echo came back changed");
    };
    // Waits for the proxy to count one more refusal than `before`.
    let counted = |before: u64, what: &str| {
        wait_for(
            STEP,
            &format!("the proxy to count {what} as refused"),
            || (proxy.refused() > before).then_some(()),
        );
        assert_eq!(
            proxy.refused(),
            before + 1,
            "{what}: refused more than once"
        );
    };

    wait_for(READY, "db's proxy to carry web's connection", || {
        connect(Some(&good), &TLS13).ok()
    });
    let tls_refusals = [
        ("another CA's leaf", Some(&foreign), NOT_OUR_CA),
        ("an expired leaf", Some(&expired), &["CertificateExpired"]),
        ("no certificate", None, &["CertificateRequired"]),
    ];
    let mut evil_denied = 0;
    for (vname, version) in versions() {
        carried(version, &format!("web's leaf, {vname}, before"));
        for (case, cert, reason) in &tls_refusals {
            let what = format!("proxy, {case}, {vname}");
            let before = proxy.refused();
            assert_refused(&connect(*cert, version), reason, &what);
            counted(before, &what);
        }

        // The handshake succeeds (the leaf is the cluster's and valid);
        // the intentions refuse, and the proxy records why.
        let what = format!("proxy, a leaf for a service the intentions deny, {vname}");
        let before = proxy.refused();
        let got = connect(Some(&denied), version);
        assert!(got.is_err(), "{what}: answered {got:?}");
        counted(before, &what);
        evil_denied += 1;
        let seen = proxy.observed();
        let evil = seen.get("evil").cloned().unwrap_or_default();
        assert_eq!(
            (evil.allowed, evil.denied),
            (0, evil_denied),
            "{what}: {seen:?}"
        );

        // Signed by the cluster's CA, but for another cluster's trust
        // domain: the proxy refuses before asking the intentions.
        let what = format!("proxy, a leaf for another trust domain, {vname}");
        let before = proxy.refused();
        let got = connect(Some(&elsewhere), version);
        assert!(got.is_err(), "{what}: answered {got:?}");
        counted(before, &what);

        carried(version, &format!("web's leaf, {vname}, after"));
    }
    let seen = proxy.observed();
    assert!(
        seen.get("web")
            .is_some_and(|o| o.allowed > 0 && o.denied == 0),
        "{seen:?}"
    );
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["evil", "web"],
        "only identified sources are recorded: {seen:?}"
    );
    drop(proxy);
    drop(agent);
}

/// The application behind the proxy: every connection gets its bytes
/// back. Not a listener under test, so it takes any port.
async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the echo server");
    let addr = l.local_addr().expect("the echo server's address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}
