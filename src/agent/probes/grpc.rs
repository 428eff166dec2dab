//! gRPC and H2PING checks, both over HTTP/2 (the `h2` crate) on a
//! connection made through the [`Env`] seam, in plain text or TLS.
//!
//! gRPC: one call of `grpc.health.v1.Health/Check` with the service
//! after the address's `/` (none: the whole server). Its two messages are
//! tiny protobufs, written and read here by hand:
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }`. SERVING passes,
//! anything else (another status, a gRPC error, no answer) is critical,
//! with grpc-go's words for it, as Consul reports them.
//!
//! H2PING: an HTTP/2 PING frame; its acknowledgement passes.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::spec::TlsOptions;
use super::tls;
use crate::env::Env;
use crate::state::Health;

/// The health service's method, as a gRPC path.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The largest answer read (a health answer is a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// The ALPN protocol both speak over TLS.
const H2: &[u8] = b"h2";

/// A TCP connection to `host:port`, through `env`; Go's words on failure.
async fn dial<E: Env>(env: &E, target: &str) -> Result<(E::TcpStream, String), String> {
    let (host, port) =
        crate::format::split_host_port(target, 0).map_err(|e| format!("dial tcp {target}: {e}"))?;
    let addrs = env
        .resolve(&host, port)
        .await
        .map_err(|e| format!("dial tcp: lookup {host}: {e}"))?;
    let addr = addrs
        .into_iter()
        .next()
        .ok_or_else(|| format!("dial tcp: lookup {host}: no such host"))?;
    let stream = env.connect_tcp(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {addr}: connect: connection refused")
        }
        _ => format!("dial tcp {addr}: {e}"),
    })?;
    Ok((stream, host))
}

/// One try of a gRPC check of `target` (`host:port[/service]`).
pub async fn check<E: Env>(
    env: &E,
    target: &str,
    tls: Option<&TlsOptions>,
    timeout: Duration,
) -> (Health, String) {
    let (server, service) = target.split_once('/').unwrap_or((target, ""));
    let attempt = async {
        let (stream, host) = dial(env, server).await.map_err(|e| {
            format!(
                "rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: {e}\""
            )
        })?;
        match tls {
            Some(opts) => {
                let s = tls::connect(stream, &host, opts, &[H2])
                    .await
                    .map_err(|e| {
                        format!(
                            "rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: {e}\""
                        )
                    })?;
                health_call(env, s, "https", server, service).await
            }
            None => health_call(env, stream, "http", server, service).await,
        }
    };
    match crate::env::timeout(env, timeout, attempt).await {
        Ok(Ok(1)) => (Health::Passing, format!("gRPC check {target}: success")),
        Ok(Ok(status)) => (
            Health::Critical,
            format!("gRPC {target} serving status: {}", serving_status(status)),
        ),
        Ok(Err(e)) => (Health::Critical, e),
        Err(_) => (
            Health::Critical,
            "rpc error: code = DeadlineExceeded desc = context deadline exceeded".into(),
        ),
    }
}

/// The name of a `ServingStatus` value (a number it does not know stays
/// a number, as Go prints it).
fn serving_status(v: u64) -> String {
    match v {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// grpc-go's name of a status code.
fn code_name(code: &str) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    code.trim()
        .parse::<usize>()
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("Unknown")
}

/// grpc-go's code for an HTTP status that is not 200.
fn code_for_http(status: u16) -> &'static str {
    match status {
        400 => "Internal",
        401 => "Unauthenticated",
        403 => "PermissionDenied",
        404 => "Unimplemented",
        429 | 502..=504 => "Unavailable",
        _ => "Unknown",
    }
}

/// `grpc-message` with its percent-escapes undone.
fn unescape(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            s[i],
            s.get(i + 1).and_then(|b| hex(*b)),
            s.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The error a non-zero `grpc-status` in `headers` stands for, if any.
fn status_error(headers: &hyper::HeaderMap) -> Option<Result<(), String>> {
    let code = headers.get("grpc-status")?;
    let code = String::from_utf8_lossy(code.as_bytes()).into_owned();
    if code.trim() == "0" {
        return Some(Ok(()));
    }
    let msg = headers
        .get("grpc-message")
        .map(|m| unescape(m.as_bytes()))
        .unwrap_or_default();
    Some(Err(format!(
        "rpc error: code = {} desc = {msg}",
        code_name(&code)
    )))
}

/// A `HealthCheckRequest` for `service`, framed as a gRPC message.
fn request_frame(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + msg.len());
    frame.put_u8(0); // not compressed
    frame.put_u32(msg.len() as u32);
    frame.put_slice(&msg);
    frame.freeze()
}

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// The `status` of a `HealthCheckResponse` (0, UNKNOWN, when absent);
/// fields it does not know are skipped.
fn decode_status(msg: &[u8]) -> Result<u64, String> {
    let mut at = 0;
    let mut status = 0;
    while at < msg.len() {
        let key = varint(msg, &mut at)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(msg, &mut at)?,
            (_, 0) => {
                varint(msg, &mut at)?;
            }
            (_, 1) => at += 8,
            (_, 2) => at += varint(msg, &mut at)? as usize,
            (_, 5) => at += 4,
            (_, wire) => return Err(format!("unknown wire type {wire}")),
        }
        if at > msg.len() {
            return Err("truncated field".into());
        }
    }
    Ok(status)
}

/// The status in a gRPC answer's body: one framed message.
fn answer_status(body: &[u8]) -> Result<u64, String> {
    let internal = |why: &str| format!("rpc error: code = Internal desc = grpc: {why}");
    if body.len() < 5 {
        return Err(internal("the server sent no response message"));
    }
    if body[0] != 0 {
        return Err(internal(
            "compressed flag set with identity or empty encoding",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let msg = body
        .get(5..5 + len)
        .ok_or_else(|| internal("truncated response message"))?;
    decode_status(msg)
        .map_err(|e| internal(&format!("failed to unmarshal the received message: {e}")))
}

/// The health call over `io`: the serving status, or grpc-go's error.
async fn health_call<E, S>(
    env: &E,
    io: S,
    scheme: &str,
    authority: &str,
    service: &str,
) -> Result<u64, String>
where
    E: Env,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let unavailable =
        |e: h2::Error| format!("rpc error: code = Unavailable desc = connection error: {e}");
    let (client, conn) = h2::client::handshake(io).await.map_err(unavailable)?;
    let _driver = env.spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.map_err(unavailable)?;
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("{scheme}://{authority}{CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "cairn-health-check")
        .body(())
        .map_err(|e| format!("rpc error: code = Internal desc = {e}"))?;
    let (answer, mut send) = client.send_request(req, false).map_err(unavailable)?;
    send.send_data(request_frame(service), true)
        .map_err(unavailable)?;
    let answer = answer.await.map_err(unavailable)?;
    let (head, mut body) = answer.into_parts();
    if head.status != hyper::StatusCode::OK {
        return Err(format!(
            "rpc error: code = {} desc = unexpected HTTP status code received from server: {} ({})",
            code_for_http(head.status.as_u16()),
            head.status.as_u16(),
            head.status.canonical_reason().unwrap_or("")
        ));
    }
    // A "trailers-only" answer carries its status in the headers.
    if let Some(Err(e)) = status_error(&head.headers) {
        return Err(e);
    }
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(unavailable)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > MAX_ANSWER {
            return Err(
                "rpc error: code = ResourceExhausted desc = grpc: received message larger than max"
                    .into(),
            );
        }
    }
    let trailers = body.trailers().await.map_err(unavailable)?;
    match trailers.as_ref().and_then(status_error) {
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => {}
        None if head.headers.contains_key("grpc-status") => {}
        None => return Err(
            "rpc error: code = Internal desc = server closed the stream without sending trailers"
                .into(),
        ),
    }
    answer_status(&data)
}

/// One try of an H2PING check of `addr` (`host:port`).
pub async fn ping<E: Env>(
    env: &E,
    addr: &str,
    tls: Option<&TlsOptions>,
    timeout: Duration,
) -> (Health, String) {
    let attempt = async {
        let (stream, host) = dial(env, addr)
            .await
            .map_err(|e| format!("Failed to dial to {addr}: {e}"))?;
        match tls {
            Some(opts) => {
                let s = tls::connect(stream, &host, opts, &[H2])
                    .await
                    .map_err(|e| format!("Failed to dial to {addr}: {e}"))?;
                ping_over(env, s).await
            }
            None => ping_over(env, stream).await,
        }
    };
    match crate::env::timeout(env, timeout, attempt).await {
        Ok(Ok(())) => (Health::Passing, "HTTP2 ping was successful".into()),
        Ok(Err(e)) => (Health::Critical, e),
        Err(_) => (
            Health::Critical,
            "HTTP2 ping failed: context deadline exceeded".into(),
        ),
    }
}

async fn ping_over<E, S>(env: &E, io: S) -> Result<(), String>
where
    E: Env,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The request handle stays until the PONG: dropping the last one
    // closes the connection.
    let (_client, mut conn) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("Failed to create client connection {e}"))?;
    let mut pings = conn
        .ping_pong()
        .ok_or("Failed to create client connection: no PING handle")?;
    let _driver = env.spawn(async move {
        let _ = conn.await;
    });
    pings
        .ping(h2::Ping::opaque())
        .await
        .map(drop)
        .map_err(|e| format!("HTTP2 ping failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_round_trip_by_hand() {
        assert_eq!(&request_frame("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &request_frame("db")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
        );
        // status = SERVING, with an unknown field before it.
        assert_eq!(
            answer_status(&[0, 0, 0, 0, 4, 0x10, 0x05, 0x08, 0x01]),
            Ok(1)
        );
        assert_eq!(answer_status(&[0, 0, 0, 0, 0]), Ok(0));
        assert!(answer_status(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert!(answer_status(&[1, 0, 0, 0, 0]).is_err());
        assert_eq!(serving_status(2), "NOT_SERVING");
        assert_eq!(code_name("5"), "NotFound");
        assert_eq!(unescape(b"unknown%20service"), "unknown service");
    }
}
