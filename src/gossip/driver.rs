//! Runs a gossip [`Node`] over an [`Env`]: one task owns the node, the UDP
//! socket and the timers; short-lived tasks carry TCP exchanges. Everything
//! else talks to that task through a [`Gossip`] handle.
//!
//! The node itself (SWIM, Serf's roster, coordinates, the reconnect loop
//! and reaping every [`REAP_INTERVAL`](super::config::REAP_INTERVAL)) does no I/O; this module only moves
//! its packets, streams and timers.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::config::{Coordinates, GossipOptions, SwimError};
use super::core::{Output, StreamId, StreamRequest};
use super::event::{MemberEvent, PingComplete};
use super::keyring::{self, Encryption};
use super::node::Node;
use super::roster::Member;
use super::wire::{self, ErrResp, StreamMessage};
use crate::env::{timeout_at, Env, Task, TcpListener, UdpSocket};
use crate::time::Instant;

/// Largest datagram we read.
const MAX_DATAGRAM: usize = 65_536;
/// Incoming streams handled at once (memberlist's push/pull limit).
const MAX_INCOMING_STREAMS: usize = 128;

/// Errors from a gossip node.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// Binding or another socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// The core refused the configuration.
    #[error(transparent)]
    Swim(#[from] SwimError),
    /// No join address answered.
    #[error("could not join any of the given addresses: {0}")]
    JoinFailed(String),
    /// The leave notice did not spread before the deadline.
    #[error("timed out waiting for the leave notice to spread")]
    LeaveTimeout,
    /// The gossip task has stopped.
    #[error("the gossip node has shut down")]
    Shutdown,
}

/// Counters and health of a gossip node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Lifeguard health score (0 is healthy).
    pub health_score: usize,
    /// Members alive (including suspects and ourselves).
    pub alive: usize,
    /// Members failed.
    pub failed: usize,
    /// Members left.
    pub left: usize,
    /// Our incarnation.
    pub incarnation: u32,
    /// Packets and streams dropped because no installed key opened them
    /// or they were not encrypted (with encryption on).
    pub undecryptable: u64,
    /// The core's counters.
    pub core: super::core::Stats,
}

enum Command {
    Join(Vec<SocketAddr>, oneshot::Sender<Result<usize, GossipError>>),
    Leave(oneshot::Sender<()>),
    Members(oneshot::Sender<Vec<Member>>),
    SetMeta(Vec<u8>, oneshot::Sender<Result<(), GossipError>>),
    SubscribeMembers(mpsc::UnboundedSender<MemberEvent>),
    SubscribePings(mpsc::UnboundedSender<PingComplete>),
    BroadcastUser(Vec<u8>, oneshot::Sender<bool>),
    ForceLeave(String, oneshot::Sender<Result<(), GossipError>>),
    SubscribeUser(mpsc::UnboundedSender<Vec<u8>>),
    Coordinates(oneshot::Sender<Coordinates>),
    Stats(oneshot::Sender<GossipStats>),
    Shutdown(oneshot::Sender<()>),
}

enum StreamEvent {
    Result {
        id: StreamId,
        result: Result<Option<StreamMessage>, String>,
    },
    Incoming {
        from: SocketAddr,
        msg: StreamMessage,
        reply: oneshot::Sender<Option<bytes::Bytes>>,
    },
}

/// A handle on a running gossip node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gossip {
    tx: mpsc::Sender<Command>,
    name: Arc<str>,
    addr: SocketAddr,
}

impl Gossip {
    /// Binds UDP and TCP on `opts.bind` and starts gossiping. The returned
    /// [`Task`] runs the node; dropping it stops the node abruptly.
    pub async fn start<E: Env>(
        env: E,
        mut opts: GossipOptions,
    ) -> Result<(Gossip, Task), GossipError> {
        // Sealing adds a version, a nonce and a tag to every packet: the
        // core fills that much less (memberlist's `encryptOverhead`).
        if opts.encryption.as_ref().is_some_and(|e| e.verify_outgoing) {
            opts.config.udp_buffer_size = opts
                .config
                .udp_buffer_size
                .saturating_sub(keyring::OVERHEAD);
        }
        let io_err = |what: &str| {
            let what = format!("{what} {}", opts.bind);
            move |source| GossipError::Io {
                context: what,
                source,
            }
        };
        let udp = env
            .bind_udp(opts.bind)
            .await
            .map_err(io_err("binding UDP gossip socket on"))?;
        let bound = udp.local_addr().map_err(io_err("reading the address of"))?;
        // UDP and TCP share the port, as memberlist requires.
        let tcp_addr = SocketAddr::new(opts.bind.ip(), bound.port());
        let listener = env
            .bind_tcp(tcp_addr)
            .await
            .map_err(io_err("binding TCP gossip listener on"))?;
        let advertise = opts.advertise.unwrap_or(bound);
        if advertise.ip().is_unspecified() {
            return Err(GossipError::Io {
                context: format!("advertising {advertise}"),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot advertise an unspecified address; set an advertise address",
                ),
            });
        }
        let scope = opts.seed_scope.clone();
        let seed = |p: &str| {
            if scope.is_empty() {
                env.seed(p)
            } else {
                env.seed(&format!("{scope}-{p}"))
            }
        };
        let node = Node::new(opts.clone(), advertise, seed, env.now())?;
        let (tx, rx) = mpsc::channel(64);
        let (stream_tx, stream_rx) = mpsc::channel(256);
        let accept = env.spawn(accept_loop(
            env.clone(),
            listener,
            stream_tx.clone(),
            opts.config.tcp_timeout,
            opts.encryption.clone(),
        ));
        let name: Arc<str> = Arc::from(opts.name.as_str());
        let driver = Driver {
            env: env.clone(),
            node,
            udp,
            opts,
            stream_tx,
            streams: Vec::new(),
            join_of_stream: HashMap::new(),
            joins: HashMap::new(),
            next_join: 0,
            member_subs: Vec::new(),
            ping_subs: Vec::new(),
            user_subs: Vec::new(),
            leave_waiters: Vec::new(),
            left: false,
            _accept: accept,
        };
        let task = env.spawn(driver.run(rx, stream_rx));
        Ok((
            Gossip {
                tx,
                name,
                addr: advertise,
            },
            task,
        ))
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This node's advertised gossip address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn send(&self, cmd: Command) -> Result<(), GossipError> {
        self.tx.send(cmd).await.map_err(|_| GossipError::Shutdown)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| GossipError::Shutdown)
    }

    /// Joins the cluster through any of `addrs`; returns how many answered.
    pub async fn join(&self, addrs: Vec<SocketAddr>) -> Result<usize, GossipError> {
        self.ask(|tx| Command::Join(addrs, tx)).await?
    }

    /// Leaves gracefully: announces the departure and waits (up to
    /// `timeout`) until it has been gossiped. The node keeps running until
    /// [`shutdown`](Self::shutdown).
    pub async fn leave<E: Env>(&self, env: &E, timeout: Duration) -> Result<(), GossipError> {
        let done = self.ask(Command::Leave);
        match crate::env::timeout(env, timeout, done).await {
            Ok(r) => r,
            Err(_) => Err(GossipError::LeaveTimeout),
        }
    }

    /// Every member known, including failed and departed ones not yet reaped.
    pub async fn members(&self) -> Result<Vec<Member>, GossipError> {
        self.ask(Command::Members).await
    }

    /// Replaces our metadata and gossips it.
    pub async fn set_meta(&self, meta: Vec<u8>) -> Result<(), GossipError> {
        self.ask(|tx| Command::SetMeta(meta, tx)).await?
    }

    /// Every membership event from now on, in order, without loss.
    pub async fn subscribe(&self) -> Result<mpsc::UnboundedReceiver<MemberEvent>, GossipError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send(Command::SubscribeMembers(tx)).await?;
        Ok(rx)
    }

    /// Every completed direct probe (RTT and ack payload) from now on.
    pub async fn subscribe_pings(
        &self,
    ) -> Result<mpsc::UnboundedReceiver<PingComplete>, GossipError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send(Command::SubscribePings(tx)).await?;
        Ok(rx)
    }

    /// Gossips an application message to every member (memberlist's
    /// "user" messages, piggybacked like membership news); false if it is
    /// too large for a packet.
    pub async fn broadcast_user(&self, payload: Vec<u8>) -> Result<bool, GossipError> {
        self.ask(|tx| Command::BroadcastUser(payload, tx)).await
    }

    /// Declares a failed member departed, so that it is no longer retried
    /// and is reaped like one that left (Consul's `force-leave`).
    pub async fn force_leave(&self, name: &str) -> Result<(), GossipError> {
        self.ask(|tx| Command::ForceLeave(name.to_owned(), tx))
            .await?
    }

    /// Every application message received from now on.
    pub async fn subscribe_user(&self) -> Result<mpsc::UnboundedReceiver<Vec<u8>>, GossipError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send(Command::SubscribeUser(tx)).await?;
        Ok(rx)
    }

    /// This node's and its members' network coordinates.
    pub async fn coordinates(&self) -> Result<Coordinates, GossipError> {
        self.ask(Command::Coordinates).await
    }

    /// Health and counters.
    pub async fn stats(&self) -> Result<GossipStats, GossipError> {
        self.ask(Command::Stats).await
    }

    /// Stops the node (without leaving: call [`leave`](Self::leave) first
    /// for a graceful exit).
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

struct Driver<E: Env> {
    env: E,
    node: Node,
    udp: E::UdpSocket,
    opts: GossipOptions,
    stream_tx: mpsc::Sender<StreamEvent>,
    streams: Vec<Task>,
    /// Join requests in flight: stream -> join, join -> progress.
    join_of_stream: HashMap<StreamId, u64>,
    joins: HashMap<u64, JoinWait>,
    next_join: u64,
    member_subs: Vec<mpsc::UnboundedSender<MemberEvent>>,
    ping_subs: Vec<mpsc::UnboundedSender<PingComplete>>,
    user_subs: Vec<mpsc::UnboundedSender<Vec<u8>>>,
    leave_waiters: Vec<oneshot::Sender<()>>,
    /// Our leave notice has spread.
    left: bool,
    _accept: Task,
}

struct JoinWait {
    outstanding: usize,
    joined: usize,
    errors: Vec<String>,
    reply: oneshot::Sender<Result<usize, GossipError>>,
}

impl<E: Env> Driver<E> {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut streams: mpsc::Receiver<StreamEvent>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            self.flush().await;
            let wake = self.node.poll_timeout();
            let timer = self.env.clone();
            let sleep = async move {
                match wake {
                    Some(t) => timer.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd),
                    // Every handle is gone: nobody can reach this node any more.
                    None => return,
                },
                // Timers before sockets: a flood of packets must not stop
                // probing, suspicion timeouts and gossip.
                _ = sleep => self.node.handle_timeout(self.env.now()),
                Some(ev) = streams.recv() => self.stream_event(ev),
                res = self.udp.recv_from(&mut buf) => match res {
                    Ok((n, from)) => match &self.opts.encryption {
                        None => self.node.handle_packet(self.env.now(), from, &buf[..n]),
                        Some(e) => {
                            if let Some(plain) = e.open_packet(&buf[..n]) {
                                self.node.handle_packet(self.env.now(), from, &plain);
                            }
                        }
                    },
                    Err(e) => tracing::debug!(node = %self.opts.name, error = %e, "UDP receive failed"),
                },
            }
            self.streams.retain(|t| !t.is_finished());
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = self.env.now();
        match cmd {
            Command::Join(addrs, reply) => {
                if addrs.is_empty() {
                    let _ = reply.send(Ok(0));
                    return;
                }
                let ids = self.node.join(now, &addrs);
                self.next_join += 1;
                let join = self.next_join;
                self.joins.insert(
                    join,
                    JoinWait {
                        outstanding: ids.len(),
                        joined: 0,
                        errors: Vec::new(),
                        reply,
                    },
                );
                for id in ids {
                    self.join_of_stream.insert(id, join);
                }
            }
            Command::Leave(done) => {
                if self.left {
                    // Already gone: nothing more to wait for.
                    let _ = done.send(());
                } else {
                    self.node.leave(now);
                    self.leave_waiters.push(done);
                }
            }
            Command::Members(reply) => {
                let _ = reply.send(self.node.roster().members().cloned().collect());
            }
            Command::SetMeta(meta, reply) => {
                let _ = reply.send(self.node.set_meta(now, meta).map_err(GossipError::from));
            }
            Command::SubscribeMembers(tx) => self.member_subs.push(tx),
            Command::SubscribePings(tx) => self.ping_subs.push(tx),
            Command::BroadcastUser(payload, reply) => {
                let _ = reply.send(self.node.broadcast_user(now, payload));
            }
            Command::SubscribeUser(tx) => self.user_subs.push(tx),
            Command::ForceLeave(name, reply) => {
                let _ = reply.send(self.node.force_leave(now, &name).map_err(GossipError::from));
            }
            Command::Coordinates(reply) => {
                let _ = reply.send(self.node.coordinates());
            }
            Command::Stats(reply) => {
                let count = |s| {
                    self.node
                        .roster()
                        .members()
                        .filter(|m| m.status == s)
                        .count()
                };
                use super::roster::MemberStatus as S;
                let core = self.node.core();
                let _ = reply.send(GossipStats {
                    health_score: core.health_score(),
                    alive: count(S::Alive),
                    failed: count(S::Failed),
                    left: count(S::Left),
                    incarnation: core.local_node().incarnation,
                    undecryptable: self
                        .opts
                        .encryption
                        .as_ref()
                        .map_or(0, |e| e.keyring.dropped()),
                    core: core.stats().clone(),
                });
            }
            Command::Shutdown(_) => {}
        }
    }

    fn stream_event(&mut self, ev: StreamEvent) {
        let now = self.env.now();
        match ev {
            StreamEvent::Result { id, result } => {
                let outcome = self.node.handle_stream_result(now, id, result);
                let Some(join) = self.join_of_stream.remove(&id) else {
                    if let Err(e) = outcome {
                        tracing::debug!(node = %self.opts.name, error = %e, "gossip stream failed");
                    }
                    return;
                };
                let Some(w) = self.joins.get_mut(&join) else {
                    return;
                };
                w.outstanding -= 1;
                match outcome {
                    Ok(()) => w.joined += 1,
                    Err(e) => w.errors.push(e),
                }
                if w.outstanding == 0 {
                    if let Some(w) = self.joins.remove(&join) {
                        let res = if w.joined > 0 {
                            Ok(w.joined)
                        } else {
                            Err(GossipError::JoinFailed(w.errors.join("; ")))
                        };
                        let _ = w.reply.send(res);
                    }
                }
            }
            StreamEvent::Incoming { from, msg, reply } => {
                let _ = reply.send(self.node.handle_stream(now, from, msg));
            }
        }
    }

    /// Carries out everything the core asked for.
    async fn flush(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Packet { to, data } => {
                    let data = match &self.opts.encryption {
                        Some(e) => e.seal_packet(data),
                        None => data,
                    };
                    if let Err(e) = self.udp.send_to(&data, to).await {
                        tracing::debug!(node = %self.opts.name, %to, error = %e, "UDP send failed");
                    }
                }
                // The driver never skips the codec: a socket carries bytes.
                Output::Messages { to, .. } => {
                    tracing::error!(node = %self.opts.name, %to, "unencoded datagram on a real socket; dropped");
                }
                Output::Stream(req) => {
                    let task = self.env.spawn(outgoing_stream(
                        self.env.clone(),
                        *req,
                        self.stream_tx.clone(),
                        self.opts.encryption.clone(),
                    ));
                    self.streams.push(task);
                }
                Output::Event(ev) => {
                    tracing::info!(node = %self.opts.name, member = %ev.node.name, event = %ev.kind, incarnation = ev.node.incarnation, "membership");
                    self.member_subs
                        .retain(|s| s.send(MemberEvent::clone(&ev)).is_ok());
                }
                Output::PingComplete(p) => {
                    self.ping_subs.retain(|s| s.send(p.clone()).is_ok());
                }
                Output::User(payload) => {
                    self.user_subs.retain(|s| s.send(payload.clone()).is_ok());
                }
                Output::LeaveComplete => {
                    self.left = true;
                    self.node.left(self.env.now());
                    for w in self.leave_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
            }
        }
    }
}

/// Connects, writes, and (if asked) reads one message back, all before the
/// request's deadline; reports the outcome to the driver.
async fn outgoing_stream<E: Env>(
    env: E,
    req: StreamRequest,
    tx: mpsc::Sender<StreamEvent>,
    encryption: Option<Encryption>,
) {
    let exchange = async {
        let mut s = env
            .connect_tcp(req.to)
            .await
            .map_err(|e| format!("connecting to {}: {e}", req.to))?;
        let data = match &encryption {
            Some(e) => e.seal_stream(&req.data).into(),
            None => req.data,
        };
        s.write_all(&data)
            .await
            .map_err(|e| format!("writing to {}: {e}", req.to))?;
        if !req.expect_reply {
            return Ok(None);
        }
        read_message(&mut s, encryption.as_ref()).await.map(Some)
    };
    let result = match timeout_at(&env, req.deadline, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer from {} in time", req.to)),
    };
    let _ = tx.send(StreamEvent::Result { id: req.id, result }).await;
}

/// Reads exactly one memberlist stream message, opening it first when it
/// is encrypted (and refusing a plain one when encryption is required).
async fn read_message<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    encryption: Option<&Encryption>,
) -> Result<StreamMessage, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut decoder = wire::StreamDecoder::default();
    fill(s, &mut buf, 1, "before a whole message arrived").await?;
    let encrypted = buf[0] == wire::MessageType::Encrypt as u8;
    match encryption {
        None if encrypted => {
            return Err("the stream is encrypted and this node has no gossip key".into())
        }
        Some(e) if encrypted => {
            fill(s, &mut buf, 5, "inside an encrypted message's header").await?;
            let header: [u8; 5] = [buf[0], buf[1], buf[2], buf[3], buf[4]];
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > keyring::MAX_STREAM_BYTES {
                return Err(format!(
                    "encrypted stream message of {len} bytes is over the limit"
                ));
            }
            fill(s, &mut buf, 5 + len, "inside an encrypted message").await?;
            let plain = e
                .keyring
                .open_stream(&header, &buf[5..5 + len])
                .map_err(|err| {
                    e.keyring.count_dropped();
                    err.to_string()
                })?;
            return match decoder.decode(&plain) {
                Ok(Some((msg, _))) => Ok(msg),
                Ok(None) => Err("the encrypted stream message is incomplete".into()),
                Err(err) => Err(err.to_string()),
            };
        }
        Some(e) if e.verify_incoming => {
            e.keyring.count_dropped();
            return Err("gossip encryption is on, and the stream is not encrypted".into());
        }
        _ => {}
    }
    loop {
        match decoder.decode(&buf) {
            Ok(Some((msg, _))) => return Ok(msg),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let have = buf.len();
        fill(s, &mut buf, have + 1, "before a whole message arrived").await?;
    }
}

/// Reads from `s` until `buf` holds at least `len` bytes; `where_` says
/// where in a message the connection closed, if it does.
async fn fill<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    len: usize,
    where_: &str,
) -> Result<(), String> {
    while buf.len() < len {
        if s.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err(format!("connection closed {where_}"));
        }
    }
    Ok(())
}

async fn accept_loop<E: Env>(
    env: E,
    listener: E::TcpListener,
    tx: mpsc::Sender<StreamEvent>,
    tcp_timeout: Duration,
    encryption: Option<Encryption>,
) {
    let limit = Arc::new(Semaphore::new(MAX_INCOMING_STREAMS));
    loop {
        let (mut conn, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a gossip stream failed");
                env.sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%from, "too many concurrent gossip streams; refusing one");
            continue;
        };
        let tx = tx.clone();
        let env2 = env.clone();
        let encryption = encryption.clone();
        env.spawn(async move {
            let _permit = permit;
            let deadline: Instant = env2.now() + tcp_timeout;
            let work = async {
                let reply = match read_message(&mut conn, encryption.as_ref()).await {
                    Ok(msg) => {
                        let (rtx, rrx) = oneshot::channel();
                        if tx
                            .send(StreamEvent::Incoming {
                                from,
                                msg,
                                reply: rtx,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        rrx.await.ok().flatten()
                    }
                    Err(e) => {
                        tracing::debug!(%from, error = %e, "bad gossip stream");
                        Some(StreamMessage::Err(ErrResp { error: e }).to_bytes().into())
                    }
                };
                if let Some(bytes) = reply {
                    let bytes = match &encryption {
                        Some(e) => e.seal_stream(&bytes).into(),
                        None => bytes,
                    };
                    let _ = conn.write_all(&bytes).await;
                    let _ = conn.shutdown().await;
                }
            };
            let _ = timeout_at(&env2, deadline, work).await;
        })
        .detach();
    }
}
