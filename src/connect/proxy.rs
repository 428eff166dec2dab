//! The L4 sidecar proxy, Consul's built-in `connect proxy`.
//!
//! Inbound, a public listener speaks mutual TLS: the caller must present a
//! leaf chained to one of the CA's current roots; its SPIFFE ID names the
//! source service, the intentions decide, and an allowed connection is
//! piped to the local application. Outbound, each upstream gets a plain
//! local listener; a connection to it goes over mutual TLS to a healthy
//! proxy of the destination service, nearest by estimated RTT first,
//! which must prove it is that service.
//!
//! Everything the proxy decides on comes from its agent's HTTP API and is
//! followed with blocking queries: the roots and its leaf (so rotation
//! needs no restart, and live connections keep the TLS session they
//! started with), the intentions for its service (a new deny applies to
//! the next connection), and the destinations' proxies. The proxy runs on
//! the [`Env`], so the same code serves real sockets and the simulator.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::ca::SpiffeId;
use super::intention::{self, Intention};
use super::tls::{self, Identity};
use crate::env::{timeout, Env, Task, TcpListener};
use crate::http_client::{exchange, ClientError};

/// Longest a TLS handshake, or a connection to the application, may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the proxy keeps asking for its first certificate.
const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(30);
/// How long a blocking query waits at the agent.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// Longest back-off after a failed query.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Each direction of a connection buffers at most this much.
const COPY_BUFFER: usize = 64 * 1024;
/// How often the inbound record goes to the KV store (when it changed).
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Where proxies keep what they observed, as
/// `<prefix><destination>/<source>/<proxy's public address>` = [`Observed`]
/// (read by `cairn intention suggest`).
pub const OBSERVED_PREFIX: &str = "_cairn/connect/observed/";

/// One upstream: a local plain listener for the application, and the
/// service its connections go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The destination service.
    pub destination: String,
    /// Where the application connects.
    pub local_bind: SocketAddr,
}

/// What the proxy does.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The service the proxy stands for: its identity, and the destination
    /// intentions are checked against.
    pub service: String,
    /// The agent's HTTP API.
    pub agent: SocketAddr,
    /// The public mTLS listener, and the local application it forwards to
    /// (none: outbound only).
    pub inbound: Option<(SocketAddr, SocketAddr)>,
    /// The upstreams.
    pub upstreams: Vec<UpstreamConfig>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The agent did not give a certificate in time.
    #[error("no certificate from the agent at {agent}: {why}")]
    NoCertificate {
        /// The agent.
        agent: SocketAddr,
        /// The last error.
        why: String,
    },
}

/// The TLS side, rebuilt when the roots or the leaf change.
struct TlsState {
    server: Arc<rustls::ServerConfig>,
    /// Per upstream destination.
    clients: HashMap<String, Arc<rustls::ClientConfig>>,
    trust_domain: String,
    leaf_serial: String,
}

/// Connections seen between a source and this proxy's service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Observed {
    /// Allowed connections.
    pub allowed: u64,
    /// Refused connections.
    pub denied: u64,
}

/// What the proxy's tasks share.
struct Shared<E: Env> {
    env: E,
    cfg: ProxyConfig,
    tls: RwLock<Option<Arc<TlsState>>>,
    /// The intentions bearing on this service as a destination; `None`
    /// until the first answer (connections wait for it).
    intentions: RwLock<Option<Vec<Intention>>>,
    /// Each upstream's proxies, nearest first.
    endpoints: RwLock<HashMap<String, Vec<SocketAddr>>>,
    /// Inbound connections by source service.
    observed: Mutex<BTreeMap<String, Observed>>,
    /// Connections open now (for a graceful shutdown).
    live: AtomicUsize,
    /// Connections refused, inbound and outbound.
    refused: AtomicU64,
    /// What the agent decides when no intention matches, once asked.
    default_allow: std::sync::OnceLock<bool>,
}

/// A running proxy; dropping it stops it at once, [`Proxy::shutdown`]
/// lets open connections finish first.
pub struct Proxy<E: Env> {
    shared: Arc<Shared<E>>,
    listeners: Vec<Task>,
    watchers: Vec<Task>,
    /// The public listener's address, if any.
    pub public_addr: Option<SocketAddr>,
    /// Each upstream's local address, in order.
    pub upstream_addrs: Vec<SocketAddr>,
}

/// A counter of open connections, released when the connection ends.
struct LiveGuard<E: Env>(Arc<Shared<E>>);

impl<E: Env> Drop for LiveGuard<E> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<E: Env> Proxy<E> {
    /// Binds the listeners, fetches a certificate, and serves.
    pub async fn start(env: E, cfg: ProxyConfig) -> Result<Proxy<E>, ProxyError> {
        let shared = Arc::new(Shared {
            env: env.clone(),
            cfg: cfg.clone(),
            tls: RwLock::new(None),
            intentions: RwLock::new(None),
            endpoints: RwLock::new(HashMap::new()),
            observed: Mutex::new(BTreeMap::new()),
            live: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            default_allow: std::sync::OnceLock::new(),
        });
        let bind = |addr: SocketAddr| {
            let env = env.clone();
            async move {
                env.bind_tcp(addr)
                    .await
                    .map_err(|source| ProxyError::Bind { addr, source })
            }
        };
        let mut listeners = Vec::new();
        let mut public_addr = None;
        let public = match cfg.inbound {
            Some((public, app)) => {
                let l = bind(public).await?;
                public_addr = l.local_addr().ok();
                Some((l, app))
            }
            None => None,
        };
        let mut upstream_listeners = Vec::new();
        let mut upstream_addrs = Vec::new();
        for u in &cfg.upstreams {
            let l = bind(u.local_bind).await?;
            upstream_addrs.push(l.local_addr().unwrap_or(u.local_bind));
            upstream_listeners.push((l, u.destination.clone()));
        }

        // A certificate first: without one the proxy can serve nothing. An
        // agent starting alongside the proxy may take a moment to have one.
        let deadline = env.now() + FIRST_CERTIFICATE_WAIT;
        loop {
            match refresh_tls(&shared).await {
                Ok(()) => break,
                Err(why) if env.now() >= deadline => {
                    return Err(ProxyError::NoCertificate {
                        agent: cfg.agent,
                        why,
                    });
                }
                Err(why) => {
                    tracing::info!(%why, "no certificate from the agent yet; retrying");
                    env.sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let mut watchers = vec![env.spawn(watch_certificates(shared.clone()))];
        if public.is_some() {
            watchers.push(env.spawn(watch_intentions(shared.clone())));
        }
        for u in &cfg.upstreams {
            watchers.push(env.spawn(watch_endpoints(shared.clone(), u.destination.clone())));
        }
        if let Some((l, app)) = public {
            listeners.push(env.spawn(accept_inbound(shared.clone(), l, app)));
            let me = public_addr.map_or_else(|| "proxy".to_string(), |a| a.to_string());
            watchers.push(env.spawn(report_observed(shared.clone(), me)));
        }
        for (l, dest) in upstream_listeners {
            listeners.push(env.spawn(accept_outbound(shared.clone(), l, dest)));
        }
        Ok(Proxy {
            shared,
            listeners,
            watchers,
            public_addr,
            upstream_addrs,
        })
    }

    /// Inbound connections by source service, allowed and refused.
    pub fn observed(&self) -> BTreeMap<String, Observed> {
        self.shared
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// The serial number of the leaf in use.
    pub fn leaf_serial(&self) -> Option<String> {
        self.shared
            .tls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|t| t.leaf_serial.clone())
    }

    /// Stops accepting, then waits up to `drain` for open connections to
    /// finish; returns how many were still open.
    pub async fn shutdown(mut self, drain: Duration) -> usize {
        self.listeners.clear();
        let deadline = self.shared.env.now() + drain;
        while self.shared.live.load(Ordering::Acquire) > 0 && self.shared.env.now() < deadline {
            self.shared.env.sleep(Duration::from_millis(50)).await;
        }
        self.watchers.clear();
        self.shared.live.load(Ordering::Acquire)
    }
}

/// Writes the inbound record to the KV store whenever it changed, for
/// `cairn intention suggest` (a failed write is retried next round).
async fn report_observed<E: Env>(shared: Arc<Shared<E>>, me: String) {
    let mut sent: BTreeMap<String, Observed> = BTreeMap::new();
    loop {
        shared.env.sleep(REPORT_INTERVAL).await;
        let now = shared
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (source, o) in &now {
            if sent.get(source) == Some(o) {
                continue;
            }
            let key = format!(
                "/v1/kv/{OBSERVED_PREFIX}{}/{source}/{me}",
                shared.cfg.service
            );
            let body = Bytes::from(serde_json::to_vec(o).unwrap_or_default());
            let put = exchange(
                &shared.env,
                shared.cfg.agent,
                "PUT",
                &key,
                body,
                HANDSHAKE_TIMEOUT,
            )
            .await;
            match put {
                Ok(_) => {
                    sent.insert(source.clone(), o.clone());
                }
                Err(e) => tracing::debug!(error = %e, "proxy could not record its traffic"),
            }
        }
    }
}

/// A GET against the agent: the body and the `X-Consul-Index`.
async fn get<E: Env>(
    shared: &Shared<E>,
    path: &str,
    limit: Duration,
) -> Result<(u64, Bytes), ClientError> {
    let a = exchange(
        &shared.env,
        shared.cfg.agent,
        "GET",
        path,
        Bytes::new(),
        limit,
    )
    .await?;
    Ok((a.index.unwrap_or(0), a.body))
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("unexpected answer from the agent: {e}"))
}

/// Follows `path` with blocking queries, handing each new answer to `f`;
/// failures back off, and an index that goes backwards starts over.
async fn follow<E: Env>(
    shared: &Shared<E>,
    path: &str,
    mut f: impl FnMut(&[u8]) -> Result<(), String>,
) {
    let mut index = 0u64;
    let mut backoff = Duration::from_millis(200);
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}index={index}&wait={}s", WATCH_WAIT.as_secs());
        match get(shared, &url, WATCH_WAIT * 2).await {
            Ok((new, body)) => {
                backoff = Duration::from_millis(200);
                if new != index || index == 0 {
                    if let Err(e) = f(&body) {
                        tracing::warn!(path, error = %e, "proxy watch");
                    }
                }
                index = if new < index { 0 } else { new };
            }
            Err(e) => {
                tracing::debug!(path, error = %e, "proxy watch failed; retrying");
                shared.env.sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The roots as the agent gives them.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RootsBody {
    trust_domain: String,
    roots: Vec<RootBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RootBody {
    root_cert: String,
}

/// The leaf as the agent gives it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LeafBody {
    serial_number: String,
    #[serde(rename = "CertPEM")]
    cert_pem: String,
    #[serde(rename = "PrivateKeyPEM")]
    private_key_pem: String,
}

/// Fetches roots and leaf and installs new TLS configurations if either
/// changed. Connections already open keep theirs.
async fn refresh_tls<E: Env>(shared: &Shared<E>) -> Result<(), String> {
    let (_, roots) = get(shared, "/v1/agent/connect/ca/roots", HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let roots: RootsBody = json(&roots)?;
    install_tls(shared, &roots).await
}

async fn install_tls<E: Env>(shared: &Shared<E>, roots: &RootsBody) -> Result<(), String> {
    let path = format!("/v1/agent/connect/ca/leaf/{}", shared.cfg.service);
    let (_, leaf) = get(shared, &path, HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let leaf: LeafBody = json(&leaf)?;
    let pems: Vec<String> = roots.roots.iter().map(|r| r.root_cert.clone()).collect();
    let store = tls::root_store(&pems).map_err(|e| e.to_string())?;
    let id =
        Identity::from_pem(&leaf.cert_pem, &leaf.private_key_pem).map_err(|e| e.to_string())?;
    let env = shared.env.clone();
    let clock: tls::Clock = Arc::new(move || env.wall_clock());
    let server =
        tls::server_config(&id, store.clone(), clock.clone()).map_err(|e| e.to_string())?;
    let mut clients = HashMap::new();
    for u in &shared.cfg.upstreams {
        let c = tls::client_config(
            &id,
            store.clone(),
            &roots.trust_domain,
            &u.destination,
            clock.clone(),
        )
        .map_err(|e| e.to_string())?;
        clients.insert(u.destination.clone(), c);
    }
    let state = TlsState {
        server,
        clients,
        trust_domain: roots.trust_domain.to_ascii_lowercase(),
        leaf_serial: leaf.serial_number,
    };
    let mut slot = shared.tls.write().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().map(|t| &t.leaf_serial) != Some(&state.leaf_serial) {
        tracing::info!(service = %shared.cfg.service, serial = %state.leaf_serial, "proxy certificate installed");
    }
    *slot = Some(Arc::new(state));
    Ok(())
}

/// Follows the roots; on every change (and at least every
/// [`WATCH_WAIT`], which is when a leaf the agent renewed is picked up)
/// installs the current roots and leaf.
async fn watch_certificates<E: Env>(shared: Arc<Shared<E>>) {
    let mut index = 0u64;
    loop {
        let url = format!(
            "/v1/agent/connect/ca/roots?index={index}&wait={}s",
            WATCH_WAIT.as_secs()
        );
        let outcome = match get(&shared, &url, WATCH_WAIT * 2).await {
            Ok((new, body)) => {
                index = new;
                match json::<RootsBody>(&body) {
                    Ok(roots) => install_tls(&shared, &roots).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "proxy certificate refresh failed; retrying");
            shared.env.sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Follows the intentions that bear on this service as a destination.
async fn watch_intentions<E: Env>(shared: Arc<Shared<E>>) {
    let path = format!(
        "/v1/connect/intentions/match?by=destination&name={}",
        shared.cfg.service
    );
    follow(&shared.clone(), &path, |body| {
        let mut m: HashMap<String, Vec<Intention>> = json(body)?;
        let list = m.remove(&shared.cfg.service).unwrap_or_default();
        *shared.intentions.write().unwrap_or_else(|e| e.into_inner()) = Some(list);
        Ok(())
    })
    .await;
}

/// One entry of `/v1/health/connect/<s>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    node: EntryNode,
    service: EntryService,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryNode {
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryService {
    address: String,
    port: u16,
}

/// Follows the healthy proxies of `dest`, nearest to this agent first.
async fn watch_endpoints<E: Env>(shared: Arc<Shared<E>>, dest: String) {
    let path = format!("/v1/health/connect/{dest}?passing&near=_agent");
    follow(&shared.clone(), &path, |body| {
        let entries: Vec<Entry> = json(body)?;
        let addrs: Vec<SocketAddr> = entries
            .iter()
            .filter_map(|e| {
                let host = if e.service.address.is_empty() {
                    &e.node.address
                } else {
                    &e.service.address
                };
                Some(SocketAddr::new(host.parse().ok()?, e.service.port))
            })
            .collect();
        shared
            .endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dest.clone(), addrs);
        Ok(())
    })
    .await;
}

fn current_tls<E: Env>(shared: &Shared<E>) -> Option<Arc<TlsState>> {
    shared.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Accepts public connections, each in a task of its own.
async fn accept_inbound<E: Env>(shared: Arc<Shared<E>>, listener: E::TcpListener, app: SocketAddr) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        shared.live.fetch_add(1, Ordering::AcqRel);
        let guard = LiveGuard(shared.clone());
        let s = shared.clone();
        shared
            .env
            .spawn(async move {
                if let Err(why) = inbound(&s, stream, app).await {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, service = %s.cfg.service, %why, "inbound connection refused");
                }
                drop(guard);
            })
            .detach();
    }
}

/// One inbound connection: handshake, identify, authorize, pipe.
async fn inbound<E: Env>(
    shared: &Shared<E>,
    stream: E::TcpStream,
    app: SocketAddr,
) -> Result<(), String> {
    let tls = current_tls(shared).ok_or("no certificate yet")?;
    let acceptor = TlsAcceptor::from(tls.server.clone());
    let tls_stream = timeout(&shared.env, HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let peer = tls::peer_id(tls_stream.get_ref().1.peer_certificates())
        .ok_or("the client certificate carries no service SPIFFE ID")?;
    if peer.trust_domain != tls.trust_domain {
        return Err(format!(
            "client from trust domain {}, not ours ({})",
            peer.trust_domain, tls.trust_domain
        ));
    }
    let allowed = authorize(shared, &peer).await?;
    {
        let mut obs = shared.observed.lock().unwrap_or_else(|e| e.into_inner());
        let o = obs.entry(peer.service.clone()).or_default();
        if allowed {
            o.allowed += 1;
        } else {
            o.denied += 1;
        }
    }
    if !allowed {
        return Err(format!(
            "{} -> {}: denied by intentions",
            peer.service, shared.cfg.service
        ));
    }
    let upstream = timeout(&shared.env, HANDSHAKE_TIMEOUT, shared.env.connect_tcp(app))
        .await
        .map_err(|_| format!("the application at {app} did not answer"))?
        .map_err(|e| format!("the application at {app}: {e}"))?;
    pipe(tls_stream, upstream).await;
    Ok(())
}

/// Whether `peer` may connect. A matching intention among those followed
/// decides (waiting briefly for the first answer). When none matches, the
/// agent's default decides, as in Consul: the ACL default policy, so a mesh
/// whose ACLs deny by default refuses what no intention allows. The proxy
/// asks the agent (`/v1/agent/connect/authorize`) and remembers a default
/// answer, which changes only with the agent's configuration.
async fn authorize<E: Env>(shared: &Shared<E>, peer: &SpiffeId) -> Result<bool, String> {
    let deadline = shared.env.now() + HANDSHAKE_TIMEOUT;
    loop {
        let matched = shared
            .intentions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|list| {
                let (ok, by) = intention::authorize(list, &peer.service, &shared.cfg.service, true);
                by.map(|_| ok)
            });
        match matched {
            Some(Some(ok)) => return Ok(ok),
            Some(None) => break,
            None if shared.env.now() >= deadline => return Err("intentions not known yet".into()),
            None => shared.env.sleep(Duration::from_millis(20)).await,
        }
    }
    if let Some(allow) = shared.default_allow.get() {
        return Ok(*allow);
    }
    let body = serde_json::json!({
        "Target": shared.cfg.service,
        "ClientCertURI": peer.uri(),
    });
    let answer = exchange(
        &shared.env,
        shared.cfg.agent,
        "POST",
        "/v1/agent/connect/authorize",
        Bytes::from(body.to_string()),
        HANDSHAKE_TIMEOUT,
    )
    .await
    .map_err(|e| format!("asking the agent whether {} may connect: {e}", peer.service))?;
    let verdict: Verdict = json(&answer.body)?;
    // An intention the followed list did not have yet may have decided;
    // only the default is worth remembering.
    if verdict.reason == DEFAULT_REASON {
        let _ = shared.default_allow.set(verdict.authorized);
    }
    Ok(verdict.authorized)
}

/// What `/v1/agent/connect/authorize` answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Verdict {
    authorized: bool,
    #[serde(default)]
    reason: String,
}

/// The reason the agent gives when no intention matched (Consul's words).
pub(crate) const DEFAULT_REASON: &str = "Default behavior configured by ACLs";

/// Accepts an upstream's local connections.
async fn accept_outbound<E: Env>(shared: Arc<Shared<E>>, listener: E::TcpListener, dest: String) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        shared.live.fetch_add(1, Ordering::AcqRel);
        let guard = LiveGuard(shared.clone());
        let (s, dest) = (shared.clone(), dest.clone());
        shared
            .env
            .spawn(async move {
                if let Err(why) = outbound(&s, stream, &dest).await {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, %dest, %why, "upstream connection failed");
                }
                drop(guard);
            })
            .detach();
    }
}

/// One outbound connection: the nearest healthy proxy of `dest` that
/// completes a handshake as `dest` gets it.
async fn outbound<E: Env>(
    shared: &Shared<E>,
    local: E::TcpStream,
    dest: &str,
) -> Result<(), String> {
    let deadline = shared.env.now() + HANDSHAKE_TIMEOUT;
    let targets = loop {
        let known = shared
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(dest)
            .cloned();
        match known {
            Some(t) if !t.is_empty() => break t,
            _ if shared.env.now() >= deadline => {
                return Err(format!("no healthy proxy of {dest}"));
            }
            _ => shared.env.sleep(Duration::from_millis(20)).await,
        }
    };
    let tls = current_tls(shared).ok_or("no certificate yet")?;
    let config = tls
        .clients
        .get(dest)
        .cloned()
        .ok_or_else(|| format!("{dest} is not an upstream"))?;
    let connector = TlsConnector::from(config);
    let mut last = String::new();
    for addr in targets {
        let attempt = async {
            let tcp = shared
                .env
                .connect_tcp(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            // The name is not checked (the SPIFFE ID is); rustls needs one.
            let name = rustls::pki_types::ServerName::try_from(format!("{dest}.svc.consul"))
                .unwrap_or_else(|_| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("{addr}: {e}"))
        };
        match timeout(&shared.env, HANDSHAKE_TIMEOUT, attempt).await {
            Ok(Ok(remote)) => {
                pipe(local, remote).await;
                return Ok(());
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("{addr}: handshake timed out"),
        }
    }
    Err(format!("no proxy of {dest} accepted: {last}"))
}

/// Copies both ways until both sides are done, with bounded buffers.
async fn pipe<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUFFER, COPY_BUFFER).await;
}
