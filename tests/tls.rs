//! TLS for the agent: `cairn tls ca create` and `cairn tls cert create`
//! make a CA and agent certificates, and the HTTPS API (`ports.https`,
//! `verify_incoming`) serves only clients with a certificate from that CA;
//! a client checking for another datacenter's server name refuses the
//! agent's certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[path = "common/process.rs"]
mod process;

use process::{cairn, free_port, wait_for, Agent, FAST_GOSSIP};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn run_ok(args: &[&str]) -> String {
    let out = cairn(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cairn {args:?}: {text}");
    text
}

/// Asks the server at `rpc` for its status over RPC (TLS with `tls`,
/// checking for `dc`'s server name): whether it answered.
fn rpc_status(
    rpc: std::net::SocketAddr,
    tls: Option<cairn::rpc::ClientTls>,
    dc: Option<&str>,
) -> Result<(), String> {
    use cairn::env::{Env, TokioEnv};
    use cairn::rpc::Client;
    use cairn::server::{ClientRequest, ServerReply, ServerRpc};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = TokioEnv::new();
        let c: Client<TokioEnv, ServerRpc, ServerReply> = Client::with_tls(env.clone(), tls);
        let deadline = env.now() + Duration::from_secs(10);
        c.call_in(rpc, dc, &ServerRpc::Client(ClientRequest::Status), deadline)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A TLS client trusting `ca`, presenting `client` (cert, key) if given.
fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs(cert), PrivateKeyDer::from_pem_file(key).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// GET `path` over HTTPS from `addr`, checking the server's certificate
/// against `ca` for `name`, presenting `client` (cert, key) if given.
fn https_get(
    addr: &str,
    ca: &Path,
    name: &str,
    client: Option<(&Path, &Path)>,
    path: &str,
) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let connector = tokio_rustls::TlsConnector::from(client_config(ca, client));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let server = ServerName::try_from(name.to_string()).unwrap();
        let work = async {
            let mut s = connector
                .connect(server, tcp)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let mut out = String::new();
            s.read_to_string(&mut out)
                .await
                .map_err(|e| e.to_string())?;
            if out.is_empty() {
                return Err("no answer".to_string());
            }
            Ok(out)
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .map_err(|_| "timed out".to_string())?
    })
}

#[test]
fn https_serves_only_clients_with_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = d.display().to_string();
    let out = run_ok(&["tls", "ca", "create", &format!("-dir={ds}")]);
    assert!(out.contains("consul-agent-ca.pem"), "{out}");
    run_ok(&["tls", "cert", "create", "-server", &format!("-dir={ds}")]);
    run_ok(&["tls", "cert", "create", "-client", &format!("-dir={ds}")]);
    // A second server certificate gets the next number, as in Consul.
    let out = run_ok(&["tls", "cert", "create", "-server", &format!("-dir={ds}")]);
    assert!(out.contains("dc1-server-consul-1.pem"), "{out}");
    // A CA of someone else's, and a client certificate from it.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let os = other.display().to_string();
    run_ok(&["tls", "ca", "create", &format!("-dir={os}")]);
    run_ok(&["tls", "cert", "create", "-client", &format!("-dir={os}")]);
    let out = cairn(&["tls", "cert", "create", "-server", "-client"]);
    assert!(!out.status.success());

    let https = free_port();
    let ca = d.join("consul-agent-ca.pem");
    let config = format!(
        "{FAST_GOSSIP}ports {{\n  https = {https}\n}}\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nverify_incoming = true\n",
        ca.display(),
        d.join("dc1-server-consul-0.pem").display(),
        d.join("dc1-server-consul-0-key.pem").display(),
    );
    let _a = Agent::start(d, "a", &config, &[]);
    let addr = format!("127.0.0.1:{https}");
    let client = (
        d.join("dc1-client-consul-0.pem"),
        d.join("dc1-client-consul-0-key.pem"),
    );
    let mine = Some((client.0.as_path(), client.1.as_path()));
    let answer = wait_for(Duration::from_secs(20), "the HTTPS API", || {
        https_get(&addr, &ca, "server.dc1.consul", mine, "/v1/agent/self").ok()
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""NodeName":"a""#), "{answer}");

    // No client certificate, or one from another CA: refused.
    let none = https_get(&addr, &ca, "server.dc1.consul", None, "/v1/agent/self");
    assert!(none.is_err(), "{none:?}");
    let theirs = (
        other.join("dc1-client-consul-0.pem"),
        other.join("dc1-client-consul-0-key.pem"),
    );
    let foreign = https_get(
        &addr,
        &ca,
        "server.dc1.consul",
        Some((theirs.0.as_path(), theirs.1.as_path())),
        "/v1/agent/self",
    );
    assert!(foreign.is_err(), "{foreign:?}");
    // A client that wants dc2's server refuses dc1's certificate.
    let wrong_dc = https_get(&addr, &ca, "server.dc2.consul", mine, "/v1/agent/self");
    assert!(
        wrong_dc.as_ref().is_err_and(|e| e.contains("certificate")),
        "{wrong_dc:?}"
    );
    // The agent still serves the right client afterwards.
    let again = https_get(&addr, &ca, "server.dc1.consul", mine, "/v1/agent/members");
    assert!(
        again.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
        "{again:?}"
    );
}

#[test]
fn https_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (config, want) in [
        (
            "ports {\n  https = 8501\n}\n",
            "ports.https needs cert_file and key_file",
        ),
        ("verify_incoming = true\n", "verify_incoming needs ca_file"),
        // Files that are not there are named.
        (
            "ports {\n  https = 8501\n}\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent-key.pem\"\n",
            "cannot read cert_file /nonexistent.pem",
        ),
    ] {
        let file = d.join("c.hcl");
        std::fs::write(&file, config).unwrap();
        let out = cairn(&[
            "agent",
            "-dev",
            "-node=x",
            &format!("-config-file={}", file.display()),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{err}");
    }
}

#[test]
fn server_rpc_over_tls_takes_only_certificates_from_the_ca_for_the_right_dc() {
    use cairn::rpc::ClientTls;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = format!("-dir={}", d.display());
    run_ok(&["tls", "ca", "create", &ds]);
    run_ok(&["tls", "cert", "create", "-server", &ds]);
    run_ok(&["tls", "cert", "create", "-client", &ds]);
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let os = format!("-dir={}", other.display());
    run_ok(&["tls", "ca", "create", &os]);
    run_ok(&["tls", "cert", "create", "-client", &os]);
    let ca = d.join("consul-agent-ca.pem");
    let server_config = format!(
        "{FAST_GOSSIP}ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nverify_incoming = true\nverify_outgoing = true\n",
        ca.display(),
        d.join("dc1-server-consul-0.pem").display(),
        d.join("dc1-server-consul-0-key.pem").display(),
    );
    let s1 = Agent::solo_server_with(d, "s1", &server_config);
    let client = (
        d.join("dc1-client-consul-0.pem"),
        d.join("dc1-client-consul-0-key.pem"),
    );
    // An agent with a client certificate from the CA works through it.
    let client_config_text = format!(
        "{FAST_GOSSIP}ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nverify_outgoing = true\n",
        ca.display(),
        client.0.display(),
        client.1.display(),
    );
    let c1 = Agent::start(
        d,
        "c1",
        &client_config_text,
        &[
            format!("-retry-join=127.0.0.1:{}", s1.serf),
            "-retry-interval=200ms".into(),
        ],
    );
    wait_for(Duration::from_secs(30), "a KV write through c1", || {
        let (st, body) = process::http(&c1.http, "PUT", "/v1/kv/over-tls", b"yes").ok()?;
        (st == 200 && body == "true").then_some(())
    });

    // Direct RPC clients, each asking for the servers' status.
    let rpc = std::net::SocketAddr::from(([127, 0, 0, 1], s1.rpc));
    let ask = |tls: Option<ClientTls>, dc: Option<&str>| rpc_status(rpc, tls, dc);
    let tls = |client: Option<(&Path, &Path)>| {
        Some(ClientTls {
            config: client_config(&ca, client),
            datacenter: "dc1".into(),
            domain: "consul".into(),
        })
    };
    let mine = Some((client.0.as_path(), client.1.as_path()));
    assert_eq!(ask(tls(mine), None), Ok(()));
    // No certificate, one from another CA, or no TLS at all: refused.
    let none = ask(tls(None), None);
    assert!(none.is_err(), "{none:?}");
    let theirs = (
        other.join("dc1-client-consul-0.pem"),
        other.join("dc1-client-consul-0-key.pem"),
    );
    let foreign = ask(tls(Some((theirs.0.as_path(), theirs.1.as_path()))), None);
    assert!(foreign.is_err(), "{foreign:?}");
    let plain = ask(None, None);
    assert!(plain.is_err(), "{plain:?}");
    // A client that wants dc2's servers refuses dc1's certificate.
    let wrong_dc = ask(tls(mine), Some("dc2"));
    assert!(
        wrong_dc
            .as_ref()
            .is_err_and(|e| e.contains("server.dc2.consul")),
        "{wrong_dc:?}"
    );
    // ... and the server still serves the right client.
    assert_eq!(ask(tls(mine), None), Ok(()));
    let log = std::fs::read_to_string(&s1.log).unwrap_or_default();
    assert!(log.contains("RPC TLS handshake refused"), "{log}");
}

/// Rolling TLS out on server RPC one agent at a time, as Consul's guide
/// does it, with writes between every step and none lost: servers first
/// take TLS beside plain TCP (a certificate, `verify_incoming = false`;
/// the first byte tells a handshake from a frame), then dial with it
/// (`verify_outgoing`), then the client dials with it, then servers
/// demand it (`verify_incoming`). At the end a plain connection is
/// refused.
#[test]
fn rpc_tls_rolls_out_one_agent_at_a_time_without_losing_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = format!("-dir={}", d.display());
    run_ok(&["tls", "ca", "create", &ds]);
    run_ok(&["tls", "cert", "create", "-server", &ds]);
    run_ok(&["tls", "cert", "create", "-client", &ds]);
    let ca = d.join("consul-agent-ca.pem");
    let files = |kind: &str| {
        format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            ca.display(),
            d.join(format!("dc1-{kind}-consul-0.pem")).display(),
            d.join(format!("dc1-{kind}-consul-0-key.pem")).display(),
        )
    };
    let plain = FAST_GOSSIP.to_string();
    let accept = format!("{FAST_GOSSIP}{}", files("server"));
    let dial = format!("{accept}verify_outgoing = true\n");
    let demand = format!("{dial}verify_incoming = true\n");
    let client_tls = format!("{FAST_GOSSIP}{}verify_outgoing = true\n", files("client"));

    let server = |name: &str, join: Option<u16>| {
        let mut f = vec!["-server".to_string(), "-bootstrap-expect=3".to_string()];
        if let Some(p) = join {
            f.push(format!("-retry-join=127.0.0.1:{p}"));
            f.push("-retry-interval=200ms".into());
        }
        Agent::start(d, name, &plain, &f)
    };
    let s1 = server("s1", None);
    let s2 = server("s2", Some(s1.serf));
    let s3 = server("s3", Some(s1.serf));
    let mut c1 = Agent::start(
        d,
        "c1",
        &plain,
        &[
            format!("-retry-join=127.0.0.1:{}", s1.serf),
            "-retry-interval=200ms".into(),
        ],
    );
    let mut servers = [s1, s2, s3];

    let mut acked: Vec<String> = Vec::new();
    let mut write = |c1: &Agent, step: &str| {
        let key = format!("roll/{:02}", acked.len());
        wait_for(
            Duration::from_secs(60),
            &format!("a write after {step}"),
            || {
                let (st, body) =
                    process::http(&c1.http, "PUT", &format!("/v1/kv/{key}"), step.as_bytes())
                        .ok()?;
                (st == 200 && body.trim() == "true").then_some(())
            },
        );
        acked.push(key);
    };
    wait_for(Duration::from_secs(30), "three voters", || {
        let (st, body) = process::http(&c1.http, "GET", "/v1/status/peers", b"").ok()?;
        let peers: Vec<String> = serde_json::from_str(&body).ok()?;
        (st == 200 && peers.len() == 3).then_some(())
    });
    write(&c1, "all plain");

    let restart = |a: &mut Agent, config: &str| {
        a.kill();
        std::fs::write(d.join(format!("{}.hcl", a.name)), config).unwrap();
        a.restart();
    };
    for (phase, config) in [("takes TLS", &accept), ("dials TLS", &dial)] {
        for s in servers.iter_mut() {
            restart(s, config);
            write(&c1, &format!("{} {phase}", s.name));
        }
    }
    restart(&mut c1, &client_tls);
    write(&c1, "c1 dials TLS");

    // Mid-rollout, a server takes both: a plain RPC client and a TLS one.
    let ask = |port: u16, tls: bool| {
        let tls = tls.then(|| cairn::rpc::ClientTls {
            config: client_config(
                &ca,
                Some((
                    &d.join("dc1-client-consul-0.pem"),
                    &d.join("dc1-client-consul-0-key.pem"),
                )),
            ),
            datacenter: "dc1".into(),
            domain: "consul".into(),
        });
        rpc_status(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            tls,
            None,
        )
    };
    let port = servers[0].rpc;
    assert_eq!(ask(port, false), Ok(()), "plain, before TLS is demanded");
    assert_eq!(ask(port, true), Ok(()), "TLS, before it is demanded");

    for s in servers.iter_mut() {
        restart(s, &demand);
        write(&c1, &format!("{} demands TLS", s.name));
    }
    let refused = ask(servers[0].rpc, false);
    assert!(
        refused.is_err(),
        "a plain connection once TLS is demanded: {refused:?}"
    );
    assert_eq!(ask(servers[0].rpc, true), Ok(()));
    assert!(servers[0]
        .log_text()
        .contains("plain RPC connection refused"));

    // Nothing acknowledged was lost.
    for key in &acked {
        let (st, _) =
            process::http(&c1.http, "GET", &format!("/v1/kv/{key}?consistent"), b"").unwrap();
        assert_eq!(st, 200, "{key} was acknowledged, then lost");
    }
    assert_eq!(acked.len(), 11);
}
