//! The agent's check kinds against real servers on 127.0.0.1: a gRPC
//! health server and an HTTP/2 server written here with the `h2` crate
//! (plain and TLS), UDP sockets that echo, stay silent or are closed, an
//! HTTP server that redirects, and alias checks of a local service and of
//! another node's. Each check is registered through the HTTP API of a
//! real `cairn agent` and watched through `/v1/agent/checks`, as its
//! status moves.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UdpSocket};
use tokio::runtime::Runtime;

#[path = "common/process.rs"]
mod process;
use process::{http, wait_for, Agent};

/// How long a check may take to reach a status (probes run every second).
const SETTLE: Duration = Duration::from_secs(20);

fn agent(dir: &std::path::Path) -> Agent {
    let a = Agent::solo_server(dir, "checks");
    wait_for(SETTLE, "the agent's HTTP API", || {
        http(&a.http, "GET", "/v1/agent/self", b"")
            .ok()
            .filter(|r| r.0 == 200)
    });
    a
}

fn register(a: &Agent, check: Value) {
    let (status, body) = http(
        &a.http,
        "PUT",
        "/v1/agent/check/register",
        check.to_string().as_bytes(),
    )
    .expect("HTTP");
    assert_eq!(status, 200, "registering {check}: {body}");
}

fn checks(a: &Agent) -> Value {
    let (status, body) = http(&a.http, "GET", "/v1/agent/checks", b"").expect("HTTP");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Waits until check `id` has `status` and an output (checks start out
/// critical with none, before their first try); the check.
fn wait_status(a: &Agent, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    let found = (0..SETTLE.as_millis() / 100).find_map(|_| {
        last = checks(a)[id].clone();
        if last["Status"] == status && last["Output"] != "" {
            return Some(last.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    found.unwrap_or_else(|| panic!("check {id} never turned {status}; last: {last}"))
}

fn output(a: &Agent, id: &str, status: &str) -> String {
    wait_status(a, id, status)["Output"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost`,
/// offering `alpn`.
fn tls_acceptor(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// Serves each connection of a new listener with `serve`, over TLS when
/// `tls` is given; the listener's port.
async fn listen<F, Fut>(tls: Option<tokio_rustls::TlsAcceptor>, serve: F) -> u16
where
    F: Fn(Box<dyn Io>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (serve, tls) = (serve.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(t) => {
                        if let Ok(s) = t.accept(s).await {
                            serve(Box::new(s)).await
                        }
                    }
                    None => serve(Box::new(s)).await,
                }
            });
        }
    });
    port
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

// ---- gRPC and H2PING ----

/// Serving status by service name, as `grpc.health.v1` numbers them.
type Health = Arc<Mutex<HashMap<String, u8>>>;

/// An HTTP/2 server answering `grpc.health.v1.Health/Check` from
/// `health` (an unknown service gets gRPC's NOT_FOUND); h2 answers PINGs
/// by itself.
async fn serve_h2(io: Box<dyn Io>, health: Health) {
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((req, respond))) = conn.accept().await {
        tokio::spawn(answer_health(req, respond, health.clone()));
    }
}

async fn answer_health(
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    health: Health,
) {
    assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
    assert_eq!(req.headers()["content-type"], "application/grpc");
    let mut body = req.into_body();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    // [flag][length][0x0a][length][service], or an empty message.
    let service = String::from_utf8_lossy(data.get(7..).unwrap_or_default()).into_owned();
    let status = health.lock().unwrap().get(&service).copied();
    let head = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let Some(status) = status else {
        let head = head
            .header("grpc-status", "5")
            .header("grpc-message", "unknown%20service")
            .body(())
            .unwrap();
        let _ = respond.send_response(head, true);
        return;
    };
    let Ok(mut send) = respond.send_response(head.body(()).unwrap(), false) else {
        return;
    };
    let _ = send.send_data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]), false);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let _ = send.send_trailers(trailers);
}

#[test]
fn grpc_checks_pass_while_serving_and_turn_critical_otherwise() {
    let rt = Runtime::new().unwrap();
    let health: Health = Arc::new(Mutex::new(HashMap::from([
        (String::new(), 1),
        ("db".to_string(), 2),
    ])));
    let h = health.clone();
    let plain = rt.block_on(listen(None, move |io| serve_h2(io, h.clone())));
    let h = health.clone();
    let tls = rt.block_on(listen(Some(tls_acceptor(&[b"h2"])), move |io| {
        serve_h2(io, h.clone())
    }));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let at = |port: u16, rest: &str| format!("127.0.0.1:{port}{rest}");
    register(
        &a,
        json!({"ID": "grpc", "GRPC": at(plain, ""), "Interval": "1s"}),
    );
    register(
        &a,
        json!({"ID": "grpc-db", "GRPC": at(plain, "/db"), "Interval": "1s"}),
    );
    register(
        &a,
        json!({"ID": "grpc-nope", "GRPC": at(plain, "/nope"), "Interval": "1s"}),
    );
    register(
        &a,
        json!({"ID": "grpc-down", "GRPC": at(closed, ""), "Interval": "1s"}),
    );
    // Config-file spelling, over TLS with a certificate no one vouches for.
    register(
        &a,
        json!({"id": "grpc-tls", "grpc": at(tls, "/db"), "grpc_use_tls": true,
               "tls_skip_verify": true, "interval": "1s"}),
    );
    register(
        &a,
        json!({"ID": "grpc-tls-verified", "GRPC": at(tls, ""), "GRPCUseTLS": true,
               "Interval": "1s"}),
    );

    let ok = wait_status(&a, "grpc", "passing");
    assert_eq!(
        ok["Output"],
        format!("gRPC check {}: success", at(plain, ""))
    );
    assert_eq!(ok["Type"], "grpc");
    assert_eq!(
        output(&a, "grpc-db", "critical"),
        format!("gRPC {} serving status: NOT_SERVING", at(plain, "/db"))
    );
    assert_eq!(
        output(&a, "grpc-nope", "critical"),
        "rpc error: code = NotFound desc = unknown service"
    );
    let down = output(&a, "grpc-down", "critical");
    assert!(down.contains("connection refused"), "{down}");
    let tls_out = output(&a, "grpc-tls", "critical");
    assert!(
        tls_out.ends_with("serving status: NOT_SERVING"),
        "{tls_out}"
    );
    let unverified = output(&a, "grpc-tls-verified", "critical");
    assert!(unverified.contains("certificate"), "{unverified}");

    // The statuses follow the server's.
    health.lock().unwrap().insert("db".into(), 1);
    assert_eq!(
        output(&a, "grpc-tls", "passing"),
        format!("gRPC check {}: success", at(tls, "/db"))
    );
    health.lock().unwrap().insert(String::new(), 3);
    assert_eq!(
        output(&a, "grpc", "critical"),
        format!("gRPC {} serving status: SERVICE_UNKNOWN", at(plain, ""))
    );
}

#[test]
fn h2ping_checks_pass_on_the_pong() {
    let rt = Runtime::new().unwrap();
    let health: Health = Arc::default();
    let h = health.clone();
    let plain = rt.block_on(listen(None, move |io| serve_h2(io, h.clone())));
    let h = health.clone();
    let tls = rt.block_on(listen(Some(tls_acceptor(&[b"h2"])), move |io| {
        serve_h2(io, h.clone())
    }));
    // Accepts and never says a word.
    let mute = rt.block_on(listen(None, |io| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(io);
    }));
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let at = |port: u16| format!("127.0.0.1:{port}");
    register(
        &a,
        json!({"ID": "ping", "H2PING": at(plain), "H2PingUseTLS": false, "Interval": "1s"}),
    );
    // TLS is the default.
    register(
        &a,
        json!({"ID": "ping-tls", "h2ping": at(tls), "tls_skip_verify": true, "interval": "1s"}),
    );
    register(
        &a,
        json!({"ID": "ping-no-tls", "H2PING": at(plain), "TLSSkipVerify": true,
                        "Interval": "1s", "Timeout": "2s"}),
    );
    register(
        &a,
        json!({"ID": "ping-mute", "H2PING": at(mute), "h2ping_use_tls": false,
                        "Interval": "1s", "Timeout": "1s"}),
    );

    let ok = wait_status(&a, "ping", "passing");
    assert_eq!(ok["Output"], "HTTP2 ping was successful");
    assert_eq!(ok["Type"], "h2ping");
    assert_eq!(
        output(&a, "ping-tls", "passing"),
        "HTTP2 ping was successful"
    );
    let no_tls = output(&a, "ping-no-tls", "critical");
    assert!(no_tls.starts_with("Failed to dial to"), "{no_tls}");
    assert_eq!(
        output(&a, "ping-mute", "critical"),
        "HTTP2 ping failed: context deadline exceeded"
    );
}

// ---- UDP ----

#[test]
fn udp_checks_pass_on_a_reply_or_silence_and_fail_on_a_closed_port() {
    let rt = Runtime::new().unwrap();
    let (echo_port, echo) = rt.block_on(async {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = s.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        (port, task)
    });
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let at = |port: u16| format!("127.0.0.1:{port}");
    register(
        &a,
        json!({"ID": "echo", "UDP": at(echo_port), "Interval": "1s", "Timeout": "1s"}),
    );
    let silent_at = at(silent.local_addr().unwrap().port());
    register(
        &a,
        json!({"ID": "silent", "udp": silent_at, "interval": "1s", "timeout": "1s"}),
    );
    register(
        &a,
        json!({"ID": "closed", "UDP": at(closed), "Interval": "1s", "Timeout": "1s"}),
    );

    let ok = wait_status(&a, "echo", "passing");
    assert_eq!(
        ok["Output"],
        format!("UDP connect {}: Success", at(echo_port))
    );
    assert_eq!(ok["Type"], "udp");
    assert_eq!(
        output(&a, "silent", "passing"),
        format!("UDP connect {silent_at}: Success")
    );
    let refused = output(&a, "closed", "critical");
    assert!(refused.contains("connection refused"), "{refused}");

    // The echo goes away: its port answers with ICMP errors from now on.
    echo.abort();
    let _ = rt.block_on(echo);
    let gone = output(&a, "echo", "critical");
    assert!(gone.contains("connection refused"), "{gone}");
    drop(silent);
}

// ---- HTTP ----

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let token = req
        .headers()
        .get_all("x-token")
        .iter()
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .collect::<Vec<_>>()
        .join(",");
    let agent = req
        .headers()
        .get("user-agent")
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .unwrap_or_default();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
    let answer = |code: u16, location: Option<String>, text: String| {
        let mut r = Response::builder().status(code);
        if let Some(l) = location {
            r = r.header("location", l);
        }
        Ok(r.body(Full::new(Bytes::from(text))).unwrap())
    };
    if let Some(n) = path.strip_prefix("/r/") {
        return match n.parse::<u32>() {
            Ok(0) => answer(200, None, "arrived".into()),
            Ok(n) => answer(302, Some(format!("/r/{}", n - 1)), String::new()),
            Err(_) => answer(400, None, "bad hop".into()),
        };
    }
    match path.as_str() {
        "/307" => answer(307, Some("/method".into()), String::new()),
        "/302" => answer(302, Some("method".into()), String::new()),
        "/method" => answer(200, None, format!("{method} {body}")),
        "/busy" => answer(429, None, "slow down".into()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            answer(200, None, "too late".into())
        }
        "/whoami" => answer(200, None, format!("{agent} token={token}")),
        _ => answer(404, None, "no such page".into()),
    }
}

async fn serve_http(io: Box<dyn Io>) {
    let service = hyper::service::service_fn(route);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

#[test]
fn http_checks_follow_redirects_as_go_does() {
    let rt = Runtime::new().unwrap();
    let plain = rt.block_on(listen(None, serve_http));
    let tls = rt.block_on(listen(Some(tls_acceptor(&[b"http/1.1"])), serve_http));
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let url = |rest: &str| format!("http://127.0.0.1:{plain}{rest}");
    let reg = |id: &str, extra: Value| {
        let mut c = json!({"ID": id, "Interval": "1s", "Timeout": "5s"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        register(&a, c);
    };
    reg("nine", json!({"HTTP": url("/r/9")}));
    reg("ten", json!({"HTTP": url("/r/10")}));
    reg(
        "post-307",
        json!({"HTTP": url("/307"), "Method": "POST", "Body": "hello"}),
    );
    reg(
        "post-302",
        json!({"HTTP": url("/302"), "Method": "POST", "Body": "hello"}),
    );
    reg(
        "stay",
        json!({"HTTP": url("/r/1"), "disable_redirects": true}),
    );
    reg("busy", json!({"HTTP": url("/busy")}));
    reg("slow", json!({"HTTP": url("/slow"), "Timeout": "1s"}));
    reg(
        "who",
        json!({"HTTP": url("/whoami"), "Header": {"X-Token": ["a", "b"]}}),
    );
    let https = format!("https://127.0.0.1:{tls}/r/2");
    reg("https", json!({"HTTP": https, "TLSSkipVerify": true}));
    reg("https-verified", json!({"HTTP": https}));

    assert_eq!(
        output(&a, "nine", "passing"),
        format!("HTTP GET {}: 200 OK Output: arrived", url("/r/9"))
    );
    // Go gives up on the tenth redirect, naming where it would have gone.
    assert_eq!(
        output(&a, "ten", "critical"),
        "Get \"/r/0\": stopped after 10 redirects"
    );
    // 307 repeats the request; 302 turns it into a bodiless GET.
    assert_eq!(
        output(&a, "post-307", "passing"),
        format!("HTTP POST {}: 200 OK Output: POST hello", url("/307"))
    );
    assert_eq!(
        output(&a, "post-302", "passing"),
        format!("HTTP POST {}: 200 OK Output: GET ", url("/302"))
    );
    assert_eq!(
        output(&a, "stay", "critical"),
        format!("HTTP GET {}: 302 Found Output: ", url("/r/1"))
    );
    assert_eq!(
        output(&a, "busy", "warning"),
        format!(
            "HTTP GET {}: 429 Too Many Requests Output: slow down",
            url("/busy")
        )
    );
    assert_eq!(
        output(&a, "slow", "critical"),
        format!(
            "Get {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            url("/slow")
        )
    );
    assert!(output(&a, "who", "passing").ends_with("Output: Consul Health Check token=a,b"));
    assert_eq!(
        output(&a, "https", "passing"),
        format!("HTTP GET {https}: 200 OK Output: arrived")
    );
    let unverified = output(&a, "https-verified", "critical");
    assert!(
        unverified.starts_with(&format!("Get \"{https}\": tls:")),
        "{unverified}"
    );
    assert_eq!(checks(&a)["https"]["Type"], "http");
}

// ---- Alias ----

fn put(a: &Agent, path: &str, body: &Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, text) = http(&a.http, "PUT", path, body.as_bytes()).expect("HTTP");
    assert_eq!(status, 200, "PUT {path}: {text}");
}

#[test]
fn alias_checks_mirror_a_local_service_and_another_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    put(
        &a,
        "/v1/agent/service/register",
        &json!({"Name": "web", "Check": {"CheckID": "web-ttl", "TTL": "60s"}}),
    );
    // A sidecar mirroring web, in config-file spelling.
    put(
        &a,
        "/v1/agent/service/register",
        &json!({"name": "web-proxy", "check": {"check_id": "web-alias", "alias_service": "web"}}),
    );
    let first = wait_status(&a, "web-alias", "critical");
    assert_eq!(first["Type"], "alias");
    assert_eq!(first["ServiceID"], "web-proxy");
    put(&a, "/v1/agent/check/pass/web-ttl", &json!(null));
    assert_eq!(output(&a, "web-alias", "passing"), "All checks passing.");
    put(&a, "/v1/agent/check/warn/web-ttl?note=slow", &json!(null));
    assert_eq!(
        output(&a, "web-alias", "warning"),
        "Aliased check \"Service 'web' check\" failing: slow"
    );

    // Another node's service, written straight into the catalog.
    let far = |status: &str| {
        json!({"Node": "far", "Address": "10.9.9.9",
               "Service": {"ID": "db", "Service": "db", "Port": 5432},
               "Check": {"CheckID": "db-check", "Name": "db check", "ServiceID": "db",
                         "Status": status, "Output": format!("db is {status}")}})
    };
    put(&a, "/v1/catalog/register", &far("passing"));
    register(
        &a,
        json!({"ID": "far-db", "AliasNode": "far", "AliasService": "db"}),
    );
    register(
        &a,
        json!({"ID": "far-nope", "AliasNode": "far", "AliasService": "nope"}),
    );
    assert_eq!(output(&a, "far-db", "passing"), "All checks passing.");
    assert_eq!(
        output(&a, "far-nope", "critical"),
        "Service nope could not be found on node far"
    );
    // A blocking read sees the change.
    put(&a, "/v1/catalog/register", &far("critical"));
    assert_eq!(
        output(&a, "far-db", "critical"),
        "Aliased check \"db check\" failing: db is critical"
    );
    put(&a, "/v1/catalog/register", &far("passing"));
    wait_status(&a, "far-db", "passing");
}

#[test]
fn a_check_for_a_service_that_does_not_exist_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let (status, body) = http(
        &a.http,
        "PUT",
        "/v1/agent/check/register",
        json!({"Name": "orphan", "ServiceID": "ghost", "TTL": "10s"})
            .to_string()
            .as_bytes(),
    )
    .expect("HTTP");
    // Refused with Consul's words.
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("ServiceID \"ghost\" does not exist"),
        "{body}"
    );
    assert!(checks(&a).get("orphan").is_none());
}
