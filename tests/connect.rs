//! Connect end to end on 127.0.0.1: an application talks to its upstream
//! listener, its proxy carries the bytes over mutual TLS to the
//! destination's proxy, which hands them to an echo server. Intentions
//! decide; certificates from another CA, expired ones, ones for the wrong
//! service and plain TCP are all refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::connect::ca::{self, SpiffeId};
use cairn::connect::tls::{self, Identity};

#[path = "common/process.rs"]
mod process;
use process::{cli, free_port, http, http_get, wait_for, Agent, CAIRN};

/// The machine's clock, for TLS configurations made outside any Env.
fn system_clock() -> tls::Clock {
    Arc::new(SystemTime::now)
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proxy(agent: &Agent, args: &[String], log: &std::path::Path) -> Running {
    proxy_as(agent, args, log, "")
}

/// [`proxy`] with `token` as its ACL token (none when empty).
fn proxy_as(agent: &Agent, args: &[String], log: &std::path::Path, token: &str) -> Running {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(CAIRN)
        .arg("connect")
        .arg("proxy")
        .args(args)
        .env("CAIRN_HTTP_ADDR", format!("http://{}", agent.http))
        .env("CAIRN_HTTP_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Running(child)
}

/// An echo server: every connection gets its bytes back.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

/// Sends `data` through `addr` and reads as many bytes back; `None` when
/// the connection is closed first.
fn round_trip(addr: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut w = s.try_clone().ok()?;
    let payload = data.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&payload).is_ok());
    let mut back = vec![0u8; data.len()];
    let got = s.read_exact(&mut back).is_ok();
    let _ = writer.join();
    got.then_some(back)
}

fn payload(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A TLS client presenting `id` to the proxy at `addr` (which must prove
/// it is `db` of `roots`); whether a byte came back through the echo.
fn tls_client(addr: SocketAddr, id: &Identity, roots: &[String], trust_domain: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = tls::client_config(
        id,
        tls::root_store(roots).unwrap(),
        trust_domain,
        "db",
        system_clock(),
    )
    .unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            return false;
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::try_from("db.svc.consul").unwrap();
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await
        else {
            return false;
        };
        if s.write_all(b"x").await.is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut b)).await,
            Ok(Ok(_))
        ) && b == *b"x"
    })
}

/// db's proxy in front of an echo server (registered as a connect-proxy)
/// and web's proxy with db as its upstream, on `agent`.
struct Pair {
    _db: Running,
    web: Running,
    /// db's public mutual-TLS listener.
    public: SocketAddr,
    /// web's upstream listener for db.
    up: SocketAddr,
}

fn db_and_web(agent: &Agent, dir: &std::path::Path, web_extra: &[String]) -> Pair {
    db_and_web_as(agent, dir, web_extra, "")
}

/// [`db_and_web`] with both proxies using `token`.
fn db_and_web_as(agent: &Agent, dir: &std::path::Path, web_extra: &[String], token: &str) -> Pair {
    let echo = echo_server();
    let (db_public, web_up) = (free_port(), free_port());
    let db = proxy_as(
        agent,
        &[
            "-service=db".into(),
            format!("-service-addr={echo}"),
            format!("-listen=127.0.0.1:{db_public}"),
            "-register".into(),
        ],
        &dir.join("db-proxy.log"),
        token,
    );
    let mut web_args = vec!["-service=web".to_string(), format!("-upstream=db:{web_up}")];
    web_args.extend_from_slice(web_extra);
    let web = proxy_as(agent, &web_args, &dir.join("web-proxy.log"), token);
    Pair {
        _db: db,
        web,
        public: format!("127.0.0.1:{db_public}").parse().unwrap(),
        up: format!("127.0.0.1:{web_up}").parse().unwrap(),
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn traffic_flows_over_mutual_tls_and_intentions_and_certificates_decide() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::solo_server(dir.path(), "node1");
    // B: db's proxy, registered as a connect-proxy; A: web's, upstream db.
    let Pair {
        _db,
        web: _web,
        public,
        up,
    } = db_and_web(&agent, dir.path(), &[]);

    // Bytes intact both ways, 1 MiB of them.
    let data = payload(1 << 20);
    let back = wait_for(
        Duration::from_secs(20),
        "a round trip through both proxies",
        || {
            round_trip(up, b"hello")?;
            round_trip(up, &data)
        },
    );
    assert!(back == data, "the echo came back changed");
    let proxies = json(&http_get(&agent.http, "/v1/health/connect/db?passing"));
    assert_eq!(proxies[0]["Service"]["Kind"], "connect-proxy");
    assert_eq!(
        proxies[0]["Service"]["Proxy"]["DestinationServiceName"],
        "db"
    );

    // A deny intention refuses new connections, from the CLI.
    let (ok, out, err) = cli(&agent, &["intention", "create", "-deny", "web", "db"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = cli(&agent, &["intention", "check", "web", "db"]);
    assert!(!ok && out.contains("Denied"), "{out}");
    wait_for(Duration::from_secs(5), "the deny to apply", || {
        round_trip(up, b"ping").is_none().then_some(())
    });
    let (_, list, _) = cli(&agent, &["intention", "list"]);
    assert!(list.contains("web") && list.contains("deny"), "{list}");
    // A second create for the pair fails; -replace turns it into allow.
    let (ok, _, err) = cli(&agent, &["intention", "create", "web", "db"]);
    assert!(!ok && err.contains("-replace"), "{err}");
    let (ok, _, err) = cli(&agent, &["intention", "create", "-replace", "web", "db"]);
    assert!(ok, "{err}");
    wait_for(Duration::from_secs(5), "the allow to apply", || {
        round_trip(up, b"ping")
    });
    let (ok, _, err) = cli(&agent, &["intention", "delete", "web", "db"]);
    assert!(ok, "{err}");

    // A plain TCP client never reaches the application (it gets a TLS
    // alert at most, never its bytes echoed).
    assert_ne!(round_trip(public, b"plain"), Some(b"plain".to_vec()));

    // The cluster's roots, for the TLS clients below.
    let roots = json(&http_get(&agent.http, "/v1/connect/ca/roots"));
    let trust_domain = roots["TrustDomain"].as_str().unwrap().to_string();
    let cluster_id = trust_domain.trim_end_matches(".consul").to_string();
    let root_pems: Vec<String> = roots["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["RootCert"].as_str().unwrap().to_string())
        .collect();
    let id_of = |service: &str| SpiffeId {
        trust_domain: trust_domain.clone(),
        datacenter: "dc1".into(),
        service: service.into(),
    };
    let now = SystemTime::now();

    // A leaf from the agent works as a client of db's proxy directly...
    let leaf = json(&http_get(&agent.http, "/v1/agent/connect/ca/leaf/api"));
    let good = Identity::from_pem(
        leaf["CertPEM"].as_str().unwrap(),
        leaf["PrivateKeyPEM"].as_str().unwrap(),
    )
    .unwrap();
    assert!(tls_client(public, &good, &root_pems, &trust_domain));
    // ...a leaf from another CA, naming the same service, does not.
    let other = ca::generate_root(&trust_domain, 9, now).unwrap();
    let req = ca::leaf_request(&id_of("api")).unwrap();
    let foreign = ca::sign_leaf(&other, &req.csr_pem, &id_of("api"), 1, now, ca::LEAF_TTL).unwrap();
    let foreign = Identity::from_pem(&foreign.cert_pem, &req.key_pem).unwrap();
    assert!(!tls_client(public, &foreign, &root_pems, &trust_domain));

    // A connection open across the rotation below must survive it.
    let mut live = TcpStream::connect(up).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo_on = |s: &mut TcpStream, msg: &[u8]| {
        s.write_all(msg).unwrap();
        let mut b = vec![0u8; msg.len()];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b, msg);
    };
    echo_on(&mut live, b"before rotation");

    // The operator brings a root (Consul's RootCert/PrivateKey), so the
    // test can sign what no agent would: an expired leaf.
    let mine = ca::generate_root(&trust_domain, 50, now).unwrap();
    let body = serde_json::json!({
        "Provider": "consul",
        "Config": { "RootCert": mine.cert_pem, "PrivateKey": mine.key_pem },
    });
    let (st, out) = http(
        &agent.http,
        "PUT",
        "/v1/connect/ca/configuration",
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "{out}");
    let roots = json(&http_get(&agent.http, "/v1/connect/ca/roots"));
    assert_eq!(
        roots["Roots"].as_array().unwrap().len(),
        2,
        "old and new root"
    );
    assert_eq!(roots["ActiveRootID"], mine.signing_key_id.as_str());
    assert_eq!(cluster_id, roots["Roots"][1]["ExternalTrustDomain"]);
    let both: Vec<String> = roots["Roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["RootCert"].as_str().unwrap().to_string())
        .collect();
    // The proxies pick up the new root without a restart, and traffic
    // keeps flowing (old leaves stay valid while both roots are trusted).
    wait_for(
        Duration::from_secs(40),
        "traffic after the root rotation",
        || round_trip(up, b"after rotation"),
    );
    let req = ca::leaf_request(&id_of("api")).unwrap();
    let fresh = ca::sign_leaf(&mine, &req.csr_pem, &id_of("api"), 3, now, ca::LEAF_TTL).unwrap();
    let fresh = Identity::from_pem(&fresh.cert_pem, &req.key_pem).unwrap();
    assert!(wait_for(
        Duration::from_secs(40),
        "db's proxy to trust the new root",
        || { tls_client(public, &fresh, &both, &trust_domain).then_some(true) }
    ));

    // Now that db's proxy trusts the new root, an expired leaf from it is
    // refused for being expired.
    let long_ago = now - Duration::from_secs(10 * 24 * 3600);
    let req = ca::leaf_request(&id_of("api")).unwrap();
    let expired = ca::sign_leaf(
        &mine,
        &req.csr_pem,
        &id_of("api"),
        2,
        long_ago,
        Duration::from_secs(3600),
    )
    .unwrap();
    let expired = Identity::from_pem(&expired.cert_pem, &req.key_pem).unwrap();
    assert!(!tls_client(public, &expired, &both, &trust_domain));

    // A proxy of db that is really `cache`: web's upstream must refuse it.
    let impostor_port = free_port();
    let req = ca::leaf_request(&id_of("cache")).unwrap();
    let cache_leaf =
        ca::sign_leaf(&mine, &req.csr_pem, &id_of("cache"), 4, now, ca::LEAF_TTL).unwrap();
    let impostor = Identity::from_pem(&cache_leaf.cert_pem, &req.key_pem).unwrap();
    let server =
        tls::server_config(&impostor, tls::root_store(&both).unwrap(), system_clock()).unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", impostor_port))
                    .await
                    .unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(server);
                while let Ok((tcp, _)) = l.accept().await {
                    if acceptor.accept(tcp).await.is_ok() {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        });
    }
    // Replace the real db proxy's registration with the impostor's.
    let (st, out) = http(
        &agent.http,
        "PUT",
        "/v1/agent/service/deregister/db-proxy",
        b"",
    )
    .unwrap();
    assert_eq!(st, 200, "{out}");
    let reg = serde_json::json!({
        "ID": "db-impostor", "Name": "db-proxy", "Kind": "connect-proxy",
        "Address": "127.0.0.1", "Port": impostor_port,
        "Proxy": { "DestinationServiceName": "db" },
    });
    let (st, out) = http(
        &agent.http,
        "PUT",
        "/v1/agent/service/register",
        reg.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "{out}");
    wait_for(
        Duration::from_secs(10),
        "the impostor in the catalog",
        || {
            let v = json(&http_get(&agent.http, "/v1/health/connect/db"));
            (v.as_array()?.len() == 1 && v[0]["Service"]["ID"] == "db-impostor").then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        assert!(round_trip(up, b"to the impostor").is_none());
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "web's proxy finished a handshake with a `cache` certificate"
    );
}

/// `Connect.SidecarService` registrations, and proxies that take their
/// whole configuration from them (`-sidecar-for`).
#[test]
fn with_acls_denying_by_default_a_connection_no_intention_allows_is_refused() {
    const ROOT: &str = "a1b2c3d4-0000-4000-8000-00000000cafe";
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}acl {{\n  enabled = true\n  default_policy = \"deny\"\n  tokens {{\n    \
         initial_management = \"{ROOT}\"\n    agent = \"{ROOT}\"\n  }}\n}}\n",
        process::FAST_GOSSIP
    );
    let agent = Agent::solo_server_with(dir.path(), "node1", &config);
    let pair = db_and_web_as(&agent, dir.path(), &[], ROOT);
    let token = format!("-token={ROOT}");
    let intention = |args: &[&str]| {
        let mut all = vec!["intention"];
        all.extend_from_slice(args);
        all.push(&token);
        let (ok, out, err) = cli(&agent, &all);
        assert!(ok, "intention {args:?}: {out}{err}");
    };

    // An allow carries traffic, so both proxies are up and talking...
    intention(&["create", "web", "db"]);
    wait_for(Duration::from_secs(20), "traffic under an allow", || {
        round_trip(pair.up, b"hello")
    });
    // ...and with no intention at all, the ACL default (deny) decides.
    intention(&["delete", "web", "db"]);
    wait_for(
        Duration::from_secs(5),
        "the ACL default to refuse the connection",
        || round_trip(pair.up, b"ping").is_none().then_some(()),
    );
    let (ok, out, _) = cli(&agent, &["intention", "check", "web", "db", &token]);
    assert!(!ok && out.contains("Denied"), "{out}");
    for _ in 0..5 {
        assert_eq!(
            round_trip(pair.up, b"ping"),
            None,
            "a connection got through"
        );
    }
    // What the proxy asked the agent, asked again: the default decided.
    let roots = json(&http_get(&agent.http, "/v1/connect/ca/roots"));
    let web = SpiffeId {
        trust_domain: roots["TrustDomain"].as_str().unwrap().to_string(),
        datacenter: "dc1".into(),
        service: "web".into(),
    };
    let body = serde_json::json!({"Target": "db", "ClientCertURI": web.uri()}).to_string();
    let (status, _, answer) = process::http_with(
        &agent.http,
        "POST",
        "/v1/agent/connect/authorize",
        &format!("X-Consul-Token: {ROOT}\r\n"),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let answer = json(&answer);
    assert_eq!(answer["Authorized"], false, "{answer}");
    assert_eq!(
        answer["Reason"], "Default behavior configured by ACLs",
        "{answer}"
    );
}

#[test]
fn sidecars_registered_with_their_services_carry_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::solo_server(dir.path(), "node1");
    let echo = echo_server();
    let (db_side, web_side, web_up) = (free_port(), free_port(), free_port());
    let register = |body: serde_json::Value| {
        let (st, out) = http(
            &agent.http,
            "PUT",
            "/v1/agent/service/register",
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "{out}");
    };
    register(serde_json::json!({
        "Name": "db", "Port": echo.port(),
        "Connect": { "SidecarService": { "Port": db_side } },
    }));
    register(serde_json::json!({
        "name": "web", "port": 1,
        "connect": { "sidecar_service": {
            "port": web_side,
            "proxy": { "upstreams": [{ "destination_name": "db", "local_bind_port": web_up }] },
        }},
    }));
    let services = json(&http_get(&agent.http, "/v1/agent/services"));
    let side = &services["db-sidecar-proxy"];
    assert_eq!(side["Kind"], "connect-proxy");
    assert_eq!(side["Port"], db_side);
    assert_eq!(side["Proxy"]["DestinationServiceID"], "db");
    assert_eq!(side["Proxy"]["LocalServicePort"], echo.port());
    assert_eq!(
        services["web-sidecar-proxy"]["Proxy"]["Upstreams"][0]["LocalBindPort"],
        web_up
    );

    let _db = proxy(
        &agent,
        &["-sidecar-for=db".into()],
        &dir.path().join("db.log"),
    );
    let _web = proxy(
        &agent,
        &["-sidecar-for=web".into()],
        &dir.path().join("web.log"),
    );
    let up: SocketAddr = format!("127.0.0.1:{web_up}").parse().unwrap();
    // Through web's sidecar to db's, once db's sidecar passes its check.
    let data = payload(64 * 1024);
    let back = wait_for(
        Duration::from_secs(30),
        "traffic between the sidecars",
        || round_trip(up, &data),
    );
    assert!(back == data);

    // Least privilege from what the proxies saw: web => db, nothing else.
    let suggestion = wait_for(
        Duration::from_secs(20),
        "the proxies' record of web => db",
        || {
            let (ok, out, err) = cli(&agent, &["intention", "suggest"]);
            assert!(ok, "{err}");
            out.contains("allow web => db").then_some(out)
        },
    );
    assert!(suggestion.contains("deny  * => *"), "{suggestion}");
    assert!(
        suggestion.contains("Would cut") && suggestion.contains("db => web"),
        "{suggestion}"
    );
    let (ok, out, err) = cli(&agent, &["intention", "suggest", "-apply"]);
    assert!(ok && out.contains("Applied 2"), "{out}{err}");
    let (ok, _, _) = cli(&agent, &["intention", "check", "db", "web"]);
    assert!(!ok, "db => web is cut");
    // The observed traffic still flows under the tightened policy.
    std::thread::sleep(Duration::from_millis(300));
    assert!(round_trip(up, b"still allowed").is_some());
    let (_, out, _) = cli(&agent, &["intention", "suggest"]);
    assert!(out.contains("(nothing to change)"), "{out}");

    // An unknown target says what to register.
    let (ok, _, err) = cli(&agent, &["connect", "proxy", "-sidecar-for=nope"]);
    assert!(!ok && err.contains("SidecarService"), "{err}");
    // Deregistering a service takes its sidecar along.
    let (st, _) = http(&agent.http, "PUT", "/v1/agent/service/deregister/web", b"").unwrap();
    assert_eq!(st, 200);
    let services = json(&http_get(&agent.http, "/v1/agent/services"));
    assert!(services.get("web-sidecar-proxy").is_none(), "{services}");
}

/// The leader signs at most 50 leaves a second (Consul's
/// `csr_max_per_second`, with as many in a burst): a stampede of new
/// services gets 429s for the excess, and what was signed is cached by
/// the agent, so asking again costs no signature.
#[test]
fn leaf_signing_is_rate_limited_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::solo_server(dir.path(), "node1");
    // The CA exists before the stampede.
    http_get(&agent.http, "/v1/connect/ca/roots");
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..150)
            .map(|i| {
                let addr = agent.http.clone();
                s.spawn(move || {
                    http(
                        &addr,
                        "GET",
                        &format!("/v1/agent/connect/ca/leaf/svc-{i}"),
                        b"",
                    )
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|(st, _)| *st == 200).count();
    let limited: Vec<&String> = statuses
        .iter()
        .filter(|(st, _)| *st == 429)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(ok + limited.len(), 150, "only 200s and 429s: {statuses:?}");
    assert!(ok >= 50, "the burst is signed: {ok}");
    assert!(!limited.is_empty(), "150 at once exceed the limit");
    assert!(limited[0].contains("rate limit"), "{}", limited[0]);
    // A cached leaf is served again, the same one.
    let (st, first) = statuses.iter().find(|(st, _)| *st == 200).unwrap().clone();
    assert_eq!(st, 200);
    let v = json(&first);
    let service = v["Service"].as_str().unwrap();
    let again = json(&http_get(
        &agent.http,
        &format!("/v1/agent/connect/ca/leaf/{service}"),
    ));
    assert_eq!(again["SerialNumber"], v["SerialNumber"]);
}

/// SIGTERM: the proxy stops accepting at once, lets the open connection
/// finish, and exits as soon as it has (well before its drain deadline).
#[test]
fn a_stopping_proxy_drains_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::solo_server(dir.path(), "node1");
    let Pair {
        _db, mut web, up, ..
    } = db_and_web(&agent, dir.path(), &["-drain=20s".into()]);
    wait_for(Duration::from_secs(20), "traffic", || round_trip(up, b"hi"));
    let mut open = TcpStream::connect(up).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut echo_on = |msg: &[u8]| {
        open.write_all(msg).unwrap();
        let mut b = vec![0u8; msg.len()];
        open.read_exact(&mut b).unwrap();
        assert_eq!(b, msg);
    };
    echo_on(b"before");
    let pid = web.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // New connections are refused once the listener is gone...
    wait_for(Duration::from_secs(5), "the listener to close", || {
        TcpStream::connect(up).is_err().then_some(())
    });
    // ...while the open one still carries bytes.
    echo_on(b"during the drain");
    assert!(
        web.0.try_wait().unwrap().is_none(),
        "exited with a connection open"
    );
    drop(open);
    let started = std::time::Instant::now();
    let status = wait_for(Duration::from_secs(10), "the proxy to exit", || {
        web.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = std::fs::read_to_string(dir.path().join("web-proxy.log")).unwrap();
    assert!(!log.contains("still open"), "{log}");
}
