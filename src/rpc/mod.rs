//! Request/response RPC over TCP, between agents and servers and among
//! servers. Each frame is a 4-byte big-endian length and a JSON body; a
//! connection carries many requests at once, matched to their replies by
//! id, and every call has a deadline. Everything goes through [`Env`], so
//! the same code runs on real sockets and in the simulator.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::env::{timeout_at, Env, Task, TcpListener};
use crate::time::Instant;

/// The largest frame either side accepts (a Raft snapshot travels in one).
pub const MAX_FRAME: usize = 256 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No connection to the peer could be made.
    #[error("cannot reach {addr}: {source}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The deadline passed first.
    #[error("no reply from {0} before the deadline")]
    Timeout(SocketAddr),
    /// The connection broke before the reply came.
    #[error("connection to {0} closed before the reply")]
    Closed(SocketAddr),
    /// A message that cannot be encoded or decoded.
    #[error("bad RPC message: {0}")]
    Codec(String),
}

/// A stream that may be TLS or plain TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The first byte of a TLS connection (a handshake record). A plain
/// connection begins with a frame's length, whose first byte is at most
/// `MAX_FRAME >> 24` (16), so one byte tells the two apart, as Consul's
/// RPC port does.
const TLS_HANDSHAKE: u8 = 0x16;
const _: () = assert!(MAX_FRAME >> 24 < TLS_HANDSHAKE as usize);

/// How a server answers on its RPC port once it has a certificate.
#[derive(Clone)]
pub struct ServerTls {
    /// The rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// Plain TCP is taken too (`verify_incoming = false`), so TLS can be
    /// rolled out one agent at a time.
    pub plain_too: bool,
    /// With `verify_incoming` and `verify_server_hostname`: the name
    /// (`server.<dc>.<domain>`) a peer's certificate must carry for it to
    /// speak as a server ([`Peer::server`]), as Consul demands since
    /// CVE-2021-37219: a client agent's certificate is from the same CA,
    /// and must not be enough to send Raft messages.
    pub servers_are: Option<String>,
    /// A TLS connection without a client certificate is taken too (the
    /// configuration's verifier allows it), for one request only: an
    /// agent joining with a join token, which has no certificate yet
    /// ([`Peer::certified`] is false on it).
    pub anonymous_joins: bool,
}

/// Who is at the other end of an RPC connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it may make server-to-server requests: always, unless the
    /// listener names what servers are ([`ServerTls::servers_are`]) and
    /// the peer's certificate does not carry that name.
    pub server: bool,
    /// Whether it may make any client request: false only on a TLS
    /// connection without a client certificate, taken for joins
    /// ([`ServerTls::anonymous_joins`]).
    pub certified: bool,
}

/// Whether `cert` (DER) names `name` among its DNS subject alternative
/// names.
fn names(cert: &[u8], name: &str) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|n| {
        matches!(n, x509_parser::extensions::GeneralName::DNSName(d) if d.eq_ignore_ascii_case(name))
    })
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("plain_too", &self.plain_too)
            .finish_non_exhaustive()
    }
}

/// A stream with one byte already read from it put back in front.
struct Prefixed<S> {
    first: Option<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if buf.remaining() > 0 {
            if let Some(b) = self.first.take() {
                buf.put_slice(&[b]);
                return std::task::Poll::Ready(Ok(()));
            }
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// TLS for a [`Client`]: the rustls configuration (the CA's roots, and a
/// certificate to present) and the name a server must prove,
/// `server.<dc>.<domain>`.
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The servers' datacenter, for calls that name none.
    pub datacenter: String,
    /// The domain (`consul`).
    pub domain: String,
}

impl ClientTls {
    /// The name the servers of `dc` prove.
    pub fn server_name(&self, dc: &str) -> String {
        format!("server.{dc}.{}", self.domain.trim_matches('.'))
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {MAX_FRAME}", body.len()),
        ));
    }
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// Reads one frame; `None` at a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer announced a frame of {len} bytes; the limit is {MAX_FRAME}"),
        ));
    }
    // Grow with what arrives, not with what the header claims: a peer
    // cannot make us allocate more than it sends.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let got = r.take(len as u64).read_to_end(&mut body).await?;
    if got < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(body))
}

/// Writes queued frames until the queue closes or a write fails.
async fn send_frames<W: AsyncWrite + Unpin>(
    queue: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    wr: &mut W,
) {
    while let Some(frame) = queue.recv().await {
        if write_frame(wr, &frame).await.is_err() {
            break;
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    id: u64,
    body: T,
}

/// The call id of an envelope, to route a reply to its caller, who
/// decodes the rest. An [`Envelope`] is written with its id first, so
/// that is read off the front without parsing the body (the caller will);
/// anything else is parsed whole. `None` if the frame is not an envelope.
fn envelope_id(frame: &[u8]) -> Option<u64> {
    let fast = frame.strip_prefix(b"{\"id\":").and_then(|rest| {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        match rest.get(digits) {
            Some(b',') if (1..=20).contains(&digits) => {
                std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
            }
            _ => None,
        }
    });
    fast.or_else(|| {
        #[derive(Deserialize)]
        struct Id {
            id: u64,
        }
        serde_json::from_slice::<Id>(frame).ok().map(|i| i.id)
    })
}

/// Decodes a frame's body: the call's id and its message.
pub fn decode_envelope<T: serde::de::DeserializeOwned>(frame: &[u8]) -> Result<(u64, T), RpcError> {
    serde_json::from_slice::<Envelope<T>>(frame)
        .map(|e| (e.id, e.body))
        .map_err(|e| RpcError::Codec(e.to_string()))
}

/// Callers waiting for replies, by request ID. Ordered, so that when a
/// connection breaks its callers hear in the order they called (a hash
/// map's order would vary from run to run, and with it a simulation).
type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// One open connection: a writer task fed by a channel, a reader task
/// routing replies to their callers.
struct Conn {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    /// Set by either task when the connection breaks.
    broken: Arc<std::sync::atomic::AtomicBool>,
    _tasks: (Task, Task),
}

impl Conn {
    fn is_open(&self) -> bool {
        !self.broken.load(Ordering::Acquire) && !self.out.is_closed()
    }
}

/// A peer's connection, made by one caller at a time.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// Calls peers: one multiplexed connection per peer, made on first use and
/// again after it breaks.
pub struct Client<E: Env, Req, Resp> {
    env: E,
    tls: Option<ClientTls>,
    /// One slot per peer: connecting to one peer never holds up calls to
    /// another.
    conns: Mutex<HashMap<SocketAddr, Slot>>,
    next_id: AtomicU64,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<E: Env, Req: Serialize, Resp: DeserializeOwned> Client<E, Req, Resp> {
    /// A client with no connections yet.
    pub fn new(env: E) -> Self {
        Client::with_tls(env, None)
    }

    /// A client whose connections use TLS when `tls` is given.
    pub fn with_tls(env: E, tls: Option<ClientTls>) -> Self {
        Client {
            env,
            tls,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            _types: PhantomData,
        }
    }

    /// Sends `req` to `addr` and waits for the reply until `deadline`.
    pub async fn call(
        &self,
        addr: SocketAddr,
        req: &Req,
        deadline: Instant,
    ) -> Result<Resp, RpcError> {
        self.call_in(addr, None, req, deadline).await
    }

    /// [`call`](Self::call) to a server of datacenter `dc` (`None`: the
    /// client's own), which with TLS must prove that datacenter's name.
    pub async fn call_in(
        &self,
        addr: SocketAddr,
        dc: Option<&str>,
        req: &Req,
        deadline: Instant,
    ) -> Result<Resp, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = serde_json::to_vec(&Envelope { id, body: req })
            .map_err(|e| RpcError::Codec(e.to_string()))?;
        let conn = self.conn(addr, dc, deadline).await?;
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        // The connection may have broken since it was handed out; its
        // reader cleared the waiters then, so ours would wait for nothing.
        if !conn.is_open() || conn.out.send(frame).is_err() {
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(RpcError::Closed(addr));
        }
        if crate::buggify::fires(crate::buggify::Point::RpcTimeout) {
            // Given up on once sent: the server may still act on it.
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(RpcError::Timeout(addr));
        }
        let reply = match timeout_at(&self.env, deadline, rx).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return Err(RpcError::Closed(addr)),
            Err(_) => {
                conn.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                // A peer that does not answer in time may sit behind a
                // connection that lost data or went half-dead (a partition,
                // a crashed host); the next call connects afresh rather
                // than trust it, as a keepalive timeout would decide.
                conn.broken.store(true, Ordering::Release);
                return Err(RpcError::Timeout(addr));
            }
        };
        decode_envelope::<Resp>(&reply).map(|(_, body)| body)
    }

    async fn conn(
        &self,
        addr: SocketAddr,
        dc: Option<&str>,
        deadline: Instant,
    ) -> Result<Arc<Conn>, RpcError> {
        let slot: Slot = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(c.clone());
        }
        let stream = match timeout_at(&self.env, deadline, self.env.connect_tcp(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(RpcError::Connect { addr, source }),
            Err(_) => {
                let source = io::Error::new(io::ErrorKind::TimedOut, "connecting timed out");
                return Err(RpcError::Connect { addr, source });
            }
        };
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(stream),
            Some(tls) => {
                let refused = |why: String| RpcError::Connect {
                    addr,
                    source: io::Error::new(io::ErrorKind::PermissionDenied, why),
                };
                let name = tls.server_name(dc.unwrap_or(&tls.datacenter));
                let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| refused(format!("bad server name {name:?}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let until = deadline.min(self.env.now() + HANDSHAKE_TIMEOUT);
                match timeout_at(&self.env, until, connector.connect(server_name, stream)).await {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => return Err(refused(format!("TLS handshake as {name}: {e}"))),
                    Err(_) => return Err(refused("TLS handshake timed out".into())),
                }
            }
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (out, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending: Pending = Arc::default();
        let broken: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (writer_broken, routes) = (broken.clone(), pending.clone());
        let writer = self.env.spawn(async move {
            send_frames(&mut queue, &mut wr).await;
            writer_broken.store(true, Ordering::Release);
            // Frames still queued will never go: their callers hear now.
            routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        let (reader_broken, routes) = (broken.clone(), pending.clone());
        let reader = self.env.spawn(async move {
            while let Ok(Some(frame)) = read_frame(&mut rd).await {
                let Some(id) = envelope_id(&frame) else {
                    continue;
                };
                let waiter = routes.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(frame);
                }
            }
            // Broken: every caller still waiting hears so now, and the
            // next call connects afresh.
            reader_broken.store(true, Ordering::Release);
            routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        let conn = Arc::new(Conn {
            out,
            pending,
            broken,
            _tasks: (writer, reader),
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// Answers requests on `listener` with `handler`, each request in its own
/// task, until the returned task is dropped or aborted.
pub fn serve<E, Req, Resp, H, Fut>(env: E, listener: E::TcpListener, handler: H) -> Task
where
    E: Env,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    serve_tls(env, listener, None, move |req, _: Peer| handler(req))
}

/// [`serve`], over TLS when `tls` is given (and plain TCP too when it
/// allows): a connection whose handshake fails (no client certificate
/// from the CA, when the configuration demands one), or a plain one where
/// TLS is demanded, is closed before it can send a request. The handler
/// learns who sent each request ([`Peer`]).
pub fn serve_tls<E, Req, Resp, H, Fut>(
    env: E,
    listener: E::TcpListener,
    tls: Option<ServerTls>,
    handler: H,
) -> Task
where
    E: Env,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    let spawner = env.clone();
    env.spawn(async move {
        let mut conns = Vec::new();
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file handles, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting an RPC connection failed");
                    spawner.sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            conns.retain(|t: &Task| !t.is_finished());
            let (env, handler, tls) = (spawner.clone(), handler.clone(), tls.clone());
            conns.push(spawner.spawn(async move {
                let mut peer = Peer {
                    addr: peer,
                    server: true,
                    certified: true,
                };
                let stream: Box<dyn Io> = match tls {
                    None => Box::new(stream),
                    Some(tls) => {
                        let mut stream = stream;
                        let mut first = [0u8; 1];
                        let read = stream.read_exact(&mut first);
                        if !matches!(
                            crate::env::timeout(&env, HANDSHAKE_TIMEOUT, read).await,
                            Ok(Ok(_))
                        ) {
                            return;
                        }
                        let stream = Prefixed {
                            first: Some(first[0]),
                            inner: stream,
                        };
                        let at = peer.addr;
                        if first[0] != TLS_HANDSHAKE {
                            if tls.plain_too {
                                peer.server = tls.servers_are.is_none();
                                return connection(env, Box::new(stream), peer, handler).await;
                            }
                            tracing::warn!(peer = %at, "plain RPC connection refused: verify_incoming demands TLS");
                            return;
                        }
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
                        match crate::env::timeout(&env, HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => {
                                let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first());
                                if let Some(name) = &tls.servers_are {
                                    peer.server = cert.is_some_and(|c| names(c, name));
                                }
                                peer.certified = cert.is_some() || !tls.anonymous_joins;
                                peer.server &= peer.certified;
                                Box::new(s)
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(peer = %at, error = %e, "RPC TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(peer = %at, "RPC TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                connection(env, stream, peer, handler).await
            }));
        }
    })
}

async fn connection<E, Req, Resp, H, Fut>(env: E, stream: Box<dyn Io>, who: Peer, handler: H)
where
    E: Env,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
    let _writer = env.spawn(async move { send_frames(&mut queue, &mut wr).await });
    let mut calls = Vec::new();
    loop {
        let frame = match read_frame(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(peer = %who.addr, error = %e, "dropping RPC connection");
                break;
            }
        };
        let req = match decode_envelope::<Req>(&frame) {
            Ok((id, body)) => Envelope { id, body },
            Err(e) => {
                tracing::warn!(peer = %who.addr, error = %e, "undecodable RPC request; closing the connection");
                break;
            }
        };
        let (handler, out) = (handler.clone(), out.clone());
        calls.retain(|t: &Task| !t.is_finished());
        calls.push(env.spawn(async move {
            let body = handler(req.body, who).await;
            if let Ok(frame) = serde_json::to_vec(&Envelope { id: req.id, body }) {
                let _ = out.send(frame);
            }
        }));
    }
    // Let answers in progress go out before the writer goes.
    for c in calls {
        c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::TokioEnv;
    use std::time::Duration;

    proptest::proptest! {
        /// The id read off an envelope's front is the one a full parse
        /// finds, whatever the body; and what is no envelope has none.
        #[test]
        fn an_envelope_id_is_read_off_its_front(id: u64, body: String, junk: Vec<u8>) {
            let frame = serde_json::to_vec(&Envelope { id, body: &body }).unwrap();
            let id_first = frame.starts_with(b"{\"id\":");
            proptest::prop_assert!(id_first, "the id is not first");
            proptest::prop_assert_eq!(envelope_id(&frame), Some(id));
            #[derive(Deserialize)]
            struct Id {
                id: u64,
            }
            let parsed = serde_json::from_slice::<Id>(&junk).ok().map(|i| i.id);
            proptest::prop_assert_eq!(envelope_id(&junk), parsed);
        }
    }

    #[test]
    fn an_envelope_id_that_does_not_fit_is_no_id() {
        assert_eq!(
            envelope_id(b"{\"id\":18446744073709551616,\"body\":1}"),
            None
        );
        assert_eq!(envelope_id(b"{\"id\":,\"body\":1}"), None);
        assert_eq!(envelope_id(b"{\"body\":1,\"id\":7}"), Some(7));
    }

    #[tokio::test]
    async fn calls_are_answered_concurrently_and_bad_peers_fail_cleanly() {
        let env = TokioEnv::new();
        let listener = env.bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sleeper = env.clone();
        let _server = serve(env.clone(), listener, move |ms: u64| {
            let env = sleeper.clone();
            async move {
                env.sleep(Duration::from_millis(ms)).await;
                ms * 2
            }
        });
        let client: Arc<Client<TokioEnv, u64, u64>> = Arc::new(Client::new(env.clone()));
        let deadline = env.now() + Duration::from_secs(5);
        // A slow call does not hold up a quick one on the same connection.
        let slow = {
            let c = client.clone();
            tokio::spawn(async move { c.call(addr, &300, deadline).await.unwrap() })
        };
        assert_eq!(client.call(addr, &1, deadline).await.unwrap(), 2);
        assert!(!slow.is_finished());
        assert_eq!(slow.await.unwrap(), 600);
        let short = env.now() + Duration::from_millis(50);
        assert!(matches!(
            client.call(addr, &1_000, short).await,
            Err(RpcError::Timeout(_))
        ));
        // Nobody listening.
        let closed = TokioEnv::new()
            .bind_tcp("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let err = client.call(dead, &1, deadline).await.unwrap_err();
        assert!(matches!(err, RpcError::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_broken_connection_fails_its_calls_and_the_next_call_reconnects() {
        let env = TokioEnv::new();
        let listener = env.bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(env.clone(), listener, |x: u64| async move { x + 1 });
        let client: Client<TokioEnv, u64, u64> = Client::new(env.clone());
        let deadline = || env.now() + Duration::from_secs(30);
        assert_eq!(client.call(addr, &1, deadline()).await.unwrap(), 2);
        // The peer goes away (its connections with it) and comes back.
        server.abort();
        drop(server);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = client.call(addr, &1, deadline()).await.unwrap_err();
        assert!(
            !matches!(err, RpcError::Timeout(_)),
            "failed at once, not at the deadline: {err}"
        );
        let listener = env.bind_tcp(addr).await.unwrap();
        let _server = serve(env.clone(), listener, |x: u64| async move { x + 10 });
        assert_eq!(client.call(addr, &1, deadline()).await.unwrap(), 11);
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors_not_panics() {
        let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2];
        let err = read_frame(&mut huge).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut cut: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(read_frame(&mut cut).await.is_err());
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).await.unwrap().is_none());
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hi").await.unwrap();
        assert_eq!(read_frame(&mut &buf[..]).await.unwrap().unwrap(), b"hi");
    }

    /// Writes the seed corpus of the `rpc_frame` fuzz target
    /// (`fuzz/corpus/rpc_frame/`): framed server requests of several
    /// kinds, one per file and several in a row. Run when the messages
    /// change: `cargo test --lib write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        use crate::server::{ClientRequest, Consistency, Query, Read, ServerRpc};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rpc_frame");
        std::fs::create_dir_all(&dir).unwrap();
        let read = |query| {
            ServerRpc::Client(ClientRequest::Read {
                read: Read {
                    consistency: Consistency::Stale,
                    min_index: 3,
                    max_wait_ms: 100,
                    query,
                },
                hops: 0,
            })
        };
        let reqs = [
            ServerRpc::Client(ClientRequest::Status),
            ServerRpc::Client(ClientRequest::Datacenters),
            read(Query::Kv("app/x".into())),
            read(Query::KvList("app/".into())),
            read(Query::Nodes),
            read(Query::Coordinates),
            read(Query::PreparedQueries),
        ];
        let mut all = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let body = serde_json::to_vec(&Envelope {
                id: i as u64,
                body: r,
            })
            .unwrap();
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            std::fs::write(dir.join(format!("seed-{i:02}")), &frame).unwrap();
            all.extend_from_slice(&frame);
        }
        std::fs::write(dir.join("seed-all"), all).unwrap();
    }
}
