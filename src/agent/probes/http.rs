//! HTTP checks, as Consul's (which use Go's HTTP client): the request
//! (`Method`, `Header`, `Body`) goes to `http://` or `https://` URLs,
//! redirects are followed as Go follows them (301, 302 and 303 turn into
//! a GET without a body, 307 and 308 repeat the request; the tenth
//! redirect stops it with Go's "stopped after 10 redirects"), unless
//! `DisableRedirects` makes the redirect itself the answer. 2xx passes,
//! 429 warns, anything else is critical; the output is Consul's
//! `HTTP GET <url>: 200 OK Output: <the end of the body>`.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::spec::HttpTarget;
use super::tls;
use crate::env::{Env, Task};
use crate::state::Health;

/// Most of a body kept as the check's output (Consul's 4 KiB), from its
/// end, as Consul's circular buffer keeps it.
const MAX_OUTPUT: usize = 4096;

/// Go's limit: the tenth redirect is not followed.
const MAX_REDIRECTS: usize = 10;

/// Consul's `User-Agent` for its checks; services may look for it.
const USER_AGENT: &str = "Consul Health Check";

/// Headers Go drops when a redirect leaves the first request's host.
const SENSITIVE: &[&str] = &["authorization", "www-authenticate", "cookie", "cookie2"];

/// One request of the chain.
struct Hop {
    method: String,
    url: Uri,
    /// The URL as written (for messages).
    text: String,
    with_body: bool,
    host: Option<String>,
    referer: Option<String>,
}

/// One try of the HTTP check `t`: its new status and output.
pub async fn check<E: Env>(env: &E, t: &HttpTarget, timeout: Duration) -> (Health, String) {
    let method = if t.method.is_empty() {
        "GET".to_string()
    } else {
        t.method.clone()
    };
    let op = url_error_op(&method);
    // The timeout covers the body too, as Go's client timeout does.
    let attempt = async {
        let (resp, _driver) = follow(env, t, &method).await?;
        let code = resp.status().as_u16();
        let status = status_text(&resp);
        Ok::<_, String>((code, status, tail(resp.into_body()).await))
    };
    match crate::env::timeout(env, timeout, attempt).await {
        Ok(Ok((code, status, body))) => {
            let result = format!("HTTP {method} {}: {status} Output: {body}", t.url);
            match code {
                200..=299 => (Health::Passing, result),
                429 => (Health::Warning, result),
                _ => (Health::Critical, result),
            }
        }
        Ok(Err(e)) => (Health::Critical, e),
        Err(_) => (
            Health::Critical,
            format!(
                "{op} {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                t.url
            ),
        ),
    }
}

/// Sends the request and follows its redirects; the last answer (with
/// the task that keeps its connection going), or Go's error text.
async fn follow<E: Env>(
    env: &E,
    t: &HttpTarget,
    method: &str,
) -> Result<(Response<Incoming>, Task), String> {
    let op = url_error_op(method);
    let first: Uri = t
        .url
        .parse()
        .map_err(|e| format!("parse {:?}: {e}", t.url))?;
    let custom_host = t
        .header
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .and_then(|(_, v)| v.first())
        .filter(|h| Some(h.as_str()) != authority(&first).as_deref())
        .cloned();
    let mut hop = Hop {
        method: method.to_string(),
        url: first.clone(),
        text: t.url.clone(),
        with_body: true,
        host: custom_host.clone(),
        referer: None,
    };
    let mut via = 0;
    loop {
        let strip = !same_site(&first, &hop.url);
        let (resp, driver) = send(env, t, &hop, strip)
            .await
            .map_err(|e| format!("{op} {:?}: {e}", hop.text))?;
        let code = resp.status().as_u16();
        let (next_method, with_body) = match code {
            301..=303 if hop.method == "GET" || hop.method == "HEAD" => (hop.method.clone(), false),
            301..=303 => ("GET".to_string(), false),
            307 | 308 => (hop.method.clone(), true),
            _ => return Ok((resp, driver)),
        };
        let loc = match resp.headers().get(hyper::header::LOCATION) {
            Some(l) => String::from_utf8_lossy(l.as_bytes()).into_owned(),
            // A redirect without a Location is the answer (Go's rule).
            None => return Ok((resp, driver)),
        };
        if loc.is_empty() {
            return Ok((resp, driver));
        }
        let next = resolve(&hop.url, &loc).map_err(|e| {
            format!(
                "{op} {:?}: failed to parse Location header {loc:?}: {e}",
                hop.text
            )
        })?;
        // Consul's DisableRedirects replaces Go's redirect policy, limit
        // included.
        if t.disable_redirects {
            return Ok((resp, driver));
        }
        via += 1;
        if via >= MAX_REDIRECTS {
            return Err(format!(
                "{op} {loc:?}: stopped after {MAX_REDIRECTS} redirects"
            ));
        }
        drop((resp, driver));
        // A custom Host survives only a redirect within the same host.
        // (Go asks whether the Location names a scheme.)
        let relative = !loc.contains("://");
        let referer = (hop.url.scheme_str() != Some("https") || next.scheme_str() == Some("https"))
            .then(|| strip_userinfo(&hop.url));
        hop = Hop {
            method: next_method,
            text: next.to_string(),
            url: next,
            with_body,
            host: custom_host.clone().filter(|_| relative),
            referer,
        };
    }
}

/// `GET` → `Get`, as Go names the operation in its errors.
fn url_error_op(method: &str) -> String {
    let mut c = method.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// `200 OK`: the code and the reason the server gave.
fn status_text(resp: &Response<Incoming>) -> String {
    let code = resp.status();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .or_else(|| code.canonical_reason().map(str::to_string))
        .unwrap_or_default();
    format!("{} {reason}", code.as_u16()).trim_end().to_string()
}

/// The last [`MAX_OUTPUT`] bytes of a body (what arrives until an error
/// is kept).
async fn tail(mut body: Incoming) -> String {
    let mut kept: VecDeque<u8> = VecDeque::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            kept.extend(data.iter());
            let over = kept.len().saturating_sub(MAX_OUTPUT);
            kept.drain(..over);
        }
    }
    String::from_utf8_lossy(kept.make_contiguous()).into_owned()
}

/// `host[:port]` of a URL, without user information.
fn authority(u: &Uri) -> Option<String> {
    let a = u.authority()?.as_str();
    Some(a.rsplit_once('@').map_or(a, |(_, h)| h).to_string())
}

fn strip_userinfo(u: &Uri) -> String {
    let path = u.path_and_query().map_or("/", |p| p.as_str());
    format!(
        "{}://{}{path}",
        u.scheme_str().unwrap_or("http"),
        authority(u).unwrap_or_default()
    )
}

/// Whether `to` is the host of `from` or one of its subdomains (Go's
/// test for keeping credentials across a redirect).
fn same_site(from: &Uri, to: &Uri) -> bool {
    match (from.host(), to.host()) {
        (Some(f), Some(t)) => {
            let (f, t) = (f.to_ascii_lowercase(), t.to_ascii_lowercase());
            t == f || t.ends_with(&format!(".{f}"))
        }
        _ => false,
    }
}

/// `loc` (a redirect's `Location`) read against `base`, as a browser (and
/// Go's `URL.Parse`) reads a reference.
fn resolve(base: &Uri, loc: &str) -> Result<Uri, String> {
    let loc = loc.split('#').next().unwrap_or_default();
    let scheme = base.scheme_str().unwrap_or("http");
    let host = authority(base).unwrap_or_default();
    let base_path = base.path();
    let text = if loc.contains("://") {
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if loc.starts_with('/') {
        format!("{scheme}://{host}{}", remove_dots(loc))
    } else if loc.starts_with('?') {
        format!("{scheme}://{host}{base_path}{loc}")
    } else if loc.is_empty() {
        return Ok(base.clone());
    } else {
        let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{host}{}", remove_dots(&format!("{dir}/{loc}")))
    };
    text.parse()
        .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())
}

/// A path with its `.` and `..` segments worked out (RFC 3986, 5.2.4).
fn remove_dots(path_query: &str) -> String {
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *s {
            "." if last => out.push(""),
            "." => {}
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut p = format!("/{}", out.join("/"));
    if let Some(q) = query {
        p.push('?');
        p.push_str(q);
    }
    p
}

/// One request of the chain: its answer, and the task driving its
/// connection (the body is read through it).
async fn send<E: Env>(
    env: &E,
    t: &HttpTarget,
    hop: &Hop,
    strip_sensitive: bool,
) -> Result<(Response<Incoming>, Task), String> {
    let https = match hop.url.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => return Err(format!("unsupported protocol scheme {other:?}")),
        None => return Err("unsupported protocol scheme \"\"".into()),
    };
    let host = hop.url.host().ok_or("no Host in request URL")?;
    let port = hop.url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = env
        .resolve(bare, port)
        .await
        .map_err(|e| format!("dial tcp: lookup {bare}: {e}"))?;
    let addr = addrs
        .into_iter()
        .next()
        .ok_or_else(|| format!("dial tcp: lookup {bare}: no such host"))?;
    let stream = env
        .connect_tcp(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {}", dial_error(&e)))?;
    let req = request(t, hop, strip_sensitive)?;
    if https {
        let tls = tls::connect(stream, host, &t.tls, &[]).await?;
        exchange(env, tls, req).await
    } else {
        exchange(env, stream, req).await
    }
}

/// Go's words for why a connection failed.
fn dial_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        _ => e.to_string(),
    }
}

fn request(
    t: &HttpTarget,
    hop: &Hop,
    strip_sensitive: bool,
) -> Result<Request<Full<Bytes>>, String> {
    let path = hop.url.path_and_query().map_or("/", |p| p.as_str());
    let host = match &hop.host {
        Some(h) => h.clone(),
        None => authority(&hop.url).unwrap_or_default(),
    };
    let mut req = Request::builder()
        .method(hop.method.as_str())
        .uri(path)
        .header(hyper::header::HOST, host)
        // Consul's checks keep no connection alive between tries.
        .header(hyper::header::CONNECTION, "close");
    let has = |name: &str| t.header.keys().any(|k| k.eq_ignore_ascii_case(name));
    for (name, values) in &t.header {
        let lower = name.to_ascii_lowercase();
        if lower == "host" || (strip_sensitive && SENSITIVE.contains(&lower.as_str())) {
            continue;
        }
        for v in values {
            req = req.header(name.as_str(), v.as_str());
        }
    }
    if !has("user-agent") {
        req = req.header(hyper::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        req = req.header(hyper::header::ACCEPT, "text/plain, text/*, */*");
    }
    if let (Some(r), false) = (&hop.referer, has("referer")) {
        req = req.header(hyper::header::REFERER, r.as_str());
    }
    let body = if hop.with_body {
        Bytes::from(t.body.clone())
    } else {
        Bytes::new()
    };
    req.body(Full::new(body))
        .map_err(|e| format!("net/http: invalid request: {e}"))
}

async fn exchange<E, S>(
    env: &E,
    io: S,
    req: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, Task), String>
where
    E: Env,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driver = env.spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok((resp, driver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_as_go_resolves_them() {
        let base: Uri = "http://h:8/a/b/c?x=1".parse().unwrap();
        let r = |l: &str| resolve(&base, l).unwrap().to_string();
        assert_eq!(r("/top"), "http://h:8/top");
        assert_eq!(r("d"), "http://h:8/a/b/d");
        assert_eq!(r("../d?y"), "http://h:8/a/d?y");
        assert_eq!(r("./"), "http://h:8/a/b/");
        assert_eq!(r("?q=2"), "http://h:8/a/b/c?q=2");
        assert_eq!(r("//other/p"), "http://other/p");
        assert_eq!(r("https://s/x#frag"), "https://s/x");
        assert_eq!(url_error_op("GET"), "Get");
        assert_eq!(url_error_op("post"), "Post");
    }

    #[test]
    fn credentials_stay_within_the_site() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        assert!(same_site(
            &u("http://example.com/"),
            &u("http://api.example.com/")
        ));
        assert!(!same_site(
            &u("http://example.com/"),
            &u("http://evil.com/")
        ));
        assert!(!same_site(
            &u("http://api.example.com/"),
            &u("http://example.com/")
        ));
    }
}
