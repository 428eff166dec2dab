//! A minimal HTTP/1.1 client for the agent's API, over an [`Env`] so the
//! CLI and the simulator's checks use the same code.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::env::{timeout, Env};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not usable.
    #[error("bad HTTP address {0:?}: {1}")]
    Address(String, String),
    /// Could not connect.
    #[error("cannot reach the agent at {addr}: {source} (is `cairn agent` running there?)")]
    Connect {
        /// The agent address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request to {addr} failed: {why}")]
    Http {
        /// The agent address.
        addr: SocketAddr,
        /// Why.
        why: String,
    },
    /// No answer in time.
    #[error("no answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    /// The agent answered with an error status.
    #[error("agent answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The agent's explanation.
        body: String,
    },
}

/// The ACL token every request of this process carries (the CLI's
/// `-token`, `$CONSUL_HTTP_TOKEN`); none by default.
static TOKEN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Makes every later request carry `token` as `X-Consul-Token`.
pub fn set_token(token: Option<String>) {
    *TOKEN.lock().unwrap_or_else(|e| e.into_inner()) = token;
}

/// Parses `http://host:port`, `host:port` or `host` (port 8500) into a
/// socket address, resolving names through `env`.
pub async fn parse_addr<E: Env>(env: &E, s: &str) -> Result<SocketAddr, ClientError> {
    let bad = |why: &str| ClientError::Address(s.to_string(), why.to_string());
    let rest = if let Some(r) = s.strip_prefix("http://") {
        r
    } else if s.starts_with("https://") {
        return Err(bad("HTTPS is not supported yet; use http://"));
    } else {
        s
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = crate::format::split_host_port(rest, 8500).map_err(|e| bad(&e))?;
    let addrs = env
        .resolve(&host, port)
        .await
        .map_err(|e| bad(&e.to_string()))?;
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| bad("resolves to no address"))
}

/// Sends `method path` (with an empty body) and returns the body of a 2xx
/// answer.
pub async fn request<E: Env>(
    env: &E,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<Bytes, ClientError> {
    request_with(env, addr, method, path, Bytes::new()).await
}

/// Sends `method path` with `body` and returns the body of a 2xx answer.
pub async fn request_with<E: Env>(
    env: &E,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
) -> Result<Bytes, ClientError> {
    exchange(env, addr, method, path, body, Duration::from_secs(10))
        .await
        .map(|a| a.body)
}

/// A 2xx answer: its body, and its `X-Consul-Index` if it had one.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `X-Consul-Index`, for the next blocking read.
    pub index: Option<u64>,
    /// The body.
    pub body: Bytes,
}

/// Sends `method path` with `body`, waiting at most `limit` for the whole
/// answer (a blocking read needs its `wait` and some slack).
pub async fn exchange<E: Env>(
    env: &E,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
    limit: Duration,
) -> Result<Answer, ClientError> {
    let token = TOKEN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    exchange_as(env, addr, method, path, body, limit, token.as_deref()).await
}

/// [`exchange`] with `token` (instead of the process's) as
/// `X-Consul-Token`: for callers that act for several identities at once.
pub async fn exchange_as<E: Env>(
    env: &E,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
    limit: Duration,
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    let exchange = async {
        let stream = env
            .connect_tcp(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let http = |e: hyper::Error| ClientError::Http {
            addr,
            why: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let driver = env.spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string());
        if let Some(t) = token {
            req = req.header("x-consul-token", t);
        }
        let req = req.body(Full::new(body)).map_err(|e| ClientError::Http {
            addr,
            why: e.to_string(),
        })?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
        drop(driver);
        if !status.is_success() {
            return Err(ClientError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(Answer { index, body })
    };
    timeout(env, limit, exchange)
        .await
        .unwrap_or(Err(ClientError::Timeout(addr, limit)))
}

/// GETs `path` and parses the JSON answer.
pub async fn get_json<E: Env, T: serde::de::DeserializeOwned>(
    env: &E,
    addr: SocketAddr,
    path: &str,
) -> Result<T, ClientError> {
    let body = request(env, addr, "GET", path).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Http {
        addr,
        why: format!("answer is not the expected JSON: {e}"),
    })
}
