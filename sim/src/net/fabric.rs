//! The full engine's network: UDP sockets, TCP listeners and streams for
//! every simulated host, carried by the shared [`Model`] on the run's
//! virtual clock.
//!
//! One queue holds everything in flight (datagrams, handshake segments,
//! stream bytes, resets, retransmission timers), ordered by (arrival,
//! sequence number), and one pump task delivers it when its time comes, so
//! ties break the same way on every run.
//!
//! TCP as the model has it:
//! - **connect** costs a round trip: the listener hears of the connection
//!   after one latency, the caller after two. Nothing listening on a
//!   running host refuses it; a host that is down, or a path that is cut
//!   either way, lets the SYN go unanswered, so the caller retries at 1, 3,
//!   7, 15, 31 and 63 s and gives up at 127 s (Linux's defaults), unless
//!   its own deadline ends the wait first.
//! - **bytes** arrive in order, after the link's queue, their transmission
//!   time and the latency. While their direction is cut or clogged they
//!   wait and are retransmitted with backoff (from 200 ms, doubling, at
//!   most 120 s); after 15 minutes the connection resets. A writer may have
//!   at most [`WINDOW`] bytes unread by its peer.
//! - **crashes**: a crashed host's connections reset at their peers, one
//!   latency later. Writing to a connection whose reader is gone resets it.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cairn::env::{TcpListener, UdpSocket};
use cairn::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, Notify};

use super::model::Model;

/// Most bytes a stream's writer may have sent that its reader has not read
/// (the send and receive buffers together).
pub const WINDOW: usize = 4 << 20;
/// Datagrams a UDP socket holds unread; more are dropped, as a full
/// receive buffer drops them.
const UDP_QUEUE: usize = 4096;
/// First port handed out for port 0.
const EPHEMERAL: u16 = 49152;
/// When a SYN that got no answer is sent again, from the first send.
const SYN_RETRIES: [u64; 6] = [1, 3, 7, 15, 31, 63];
/// When a connect whose SYNs got no answer gives up.
const SYN_GIVE_UP: Duration = Duration::from_secs(127);
const RTO_MIN: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_secs(120);
/// How long bytes may wait to cross before the connection resets.
const STALL_GIVE_UP: Duration = Duration::from_secs(15 * 60);

/// What one node has sent so far, across restarts.
#[derive(Debug, Default)]
pub struct Counters {
    /// UDP datagrams sent (including those the network then lost).
    pub udp_packets: AtomicU64,
    /// UDP payload bytes sent.
    pub udp_bytes: AtomicU64,
    /// TCP payload bytes written.
    pub tcp_bytes: AtomicU64,
}

impl Counters {
    /// (UDP datagrams, UDP bytes, TCP bytes) so far.
    pub fn read(&self) -> [u64; 3] {
        [
            self.udp_packets.load(Ordering::Relaxed),
            self.udp_bytes.load(Ordering::Relaxed),
            self.tcp_bytes.load(Ordering::Relaxed),
        ]
    }
}

/// How many times slower virtual time runs than the runtime's (paused)
/// clock. tokio's timers fire on whole milliseconds, so undilated a
/// datagram of a 1 ms link arrives on the next tick or the one after, and a
/// 3 ms round trip inside a datacenter measures about 4 ms. Dilated a
/// thousand times, a tick is a microsecond of virtual time. (That makes a
/// few bytes more or less on a link show in the trace, so everything a run
/// sends must have a length its seed fixes: see `cairn::sig`.)
const DILATION: u32 = 1000;

/// How late a timer of the full engine may fire, in virtual time: a tick of
/// tokio's clock, dilated.
pub const TIMER_RESOLUTION: Duration = Duration::from_nanos(1_000_000 / DILATION as u64);

/// A runtime instant beyond every run: 30 years, as tokio's own "far
/// future" (its timers take deadlines past their wheel's reach).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The simulated network of one run.
pub struct Network {
    state: Mutex<State>,
    /// Tells the pump that something is due earlier than it sleeps for.
    wake: Notify,
    origin: tokio::time::Instant,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Network({} hosts)", self.lock().hosts.len())
    }
}

struct State {
    model: Model,
    hosts: Vec<Host>,
    by_ip: BTreeMap<IpAddr, usize>,
    queue: BinaryHeap<Due>,
    seq: u64,
    /// What the pump sleeps until (`None`: until told).
    armed: Option<Instant>,
    /// Everything delivered so far.
    delivered: u64,
}

struct Host {
    ip: IpAddr,
    up: bool,
    udp: BTreeMap<u16, UdpInbox>,
    listeners: BTreeMap<u16, Listening>,
    next_port: u16,
    /// Bindings made, so a socket dropped late does not unbind its
    /// successor.
    binds: u64,
    conns: Vec<Weak<Conn>>,
    counters: Arc<Counters>,
    skew_ms: i64,
}

struct UdpInbox {
    bind: u64,
    tx: mpsc::Sender<(Vec<u8>, SocketAddr)>,
}

struct Listening {
    bind: u64,
    tx: mpsc::UnboundedSender<(SimTcpStream, SocketAddr)>,
}

struct Due {
    at: Instant,
    seq: u64,
    what: Delivery,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    /// Earliest first out of a max-heap; ties by sequence number.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

enum Delivery {
    Datagram {
        to: usize,
        port: u16,
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// A SYN reaches the listening side.
    Syn(Arc<Connecting>),
    /// Time to send a SYN that got no answer again.
    SynRetry(Arc<Connecting>, usize),
    /// The SYN-ACK reaches the caller: connected.
    Established(Arc<Connecting>, Arc<Conn>),
    /// The caller hears that nothing listens there.
    Refused(Arc<Connecting>),
    /// Stream bytes (or the FIN, `None`) reach end `to` of a connection.
    Segment {
        conn: Arc<Conn>,
        to: usize,
        data: Option<Vec<u8>>,
    },
    /// End `to` hears that the connection reset.
    Reset { conn: Arc<Conn>, to: usize },
    /// Time to retransmit what waits to reach end `to`.
    Retransmit { conn: Arc<Conn>, to: usize },
}

/// A connection being opened.
struct Connecting {
    client: usize,
    local: SocketAddr,
    server: usize,
    remote: SocketAddr,
    started: Instant,
    reply: Mutex<Option<oneshot::Sender<io::Result<SimTcpStream>>>>,
}

impl Connecting {
    fn answer(&self, r: io::Result<SimTcpStream>) -> Result<(), io::Result<SimTcpStream>> {
        match lock(&self.reply).take() {
            Some(tx) => tx.send(r),
            None => Err(r),
        }
    }

    fn answered(&self) -> bool {
        lock(&self.reply).is_none()
    }
}

/// One TCP connection: end 0 opened it, end 1 accepted it.
pub(crate) struct Conn {
    nodes: [usize; 2],
    addrs: [SocketAddr; 2],
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// `to[e]`: what travels towards end `e`.
    to: [Half; 2],
    /// End `e` reset (or its host crashed): it reads and writes no more.
    reset: [bool; 2],
    /// End `e` was dropped: nobody reads what reaches it.
    gone: [bool; 2],
}

#[derive(Default)]
struct Half {
    /// Arrived, not read yet.
    readable: VecDeque<u8>,
    /// The FIN arrived.
    fin: bool,
    /// The writer shut down (or dropped) its side.
    fin_sent: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// Written but not read yet.
    unread: usize,
    /// Segments waiting to cross (their direction is stalled); `None` is
    /// the FIN.
    waiting: VecDeque<Option<Vec<u8>>>,
    stalled_since: Option<Instant>,
    rto: Duration,
    /// When the last segment sent arrives: later ones never arrive sooner.
    last_arrival: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Network {
    /// The network of hosts at `ips` (node `i` at `ips[i]`), carried by
    /// `model`, on the current tokio runtime's clock from now.
    pub fn new(model: Model, ips: &[IpAddr]) -> Arc<Network> {
        let hosts = ips
            .iter()
            .map(|&ip| Host {
                ip,
                up: false,
                udp: BTreeMap::new(),
                listeners: BTreeMap::new(),
                next_port: EPHEMERAL,
                binds: 0,
                conns: Vec::new(),
                counters: Arc::default(),
                skew_ms: 0,
            })
            .collect();
        Arc::new(Network {
            state: Mutex::new(State {
                model,
                by_ip: ips.iter().enumerate().map(|(i, &ip)| (ip, i)).collect(),
                hosts,
                queue: BinaryHeap::new(),
                seq: 0,
                armed: None,
                delivered: 0,
            }),
            wake: Notify::new(),
            origin: tokio::time::Instant::now(),
        })
    }

    /// Virtual time since the network was made.
    pub fn now(&self) -> Instant {
        Instant::from_duration(self.origin.elapsed() / DILATION)
    }

    /// The runtime's instant for virtual time `t` (a time past any run's
    /// end for one too far off to name).
    pub fn deadline(&self, t: Instant) -> tokio::time::Instant {
        t.as_duration()
            .checked_mul(DILATION)
            .and_then(|d| self.origin.checked_add(d))
            .unwrap_or_else(|| self.origin + FAR_FUTURE)
    }

    /// Waits `d` of virtual time.
    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep_until(self.deadline(self.now() + d)).await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Runs `f` on the model (to read it, or to apply an event). Bytes an
    /// event lets go (a heal, an unclog) cross when their retransmission
    /// timer next fires, as TCP's do.
    pub fn with_model<R>(&self, f: impl FnOnce(&mut Model) -> R) -> R {
        f(&mut self.lock().model)
    }

    /// How many deliveries (datagrams, segments, handshakes, timers) the
    /// network has made.
    pub fn deliveries(&self) -> u64 {
        self.lock().delivered
    }

    /// The traffic counters of host `i`.
    pub fn counters(&self, i: usize) -> Arc<Counters> {
        self.lock().hosts[i].counters.clone()
    }

    /// Sets host `i`'s wall-clock skew.
    pub fn set_skew(&self, i: usize, ms: i64) {
        self.lock().hosts[i].skew_ms = ms;
    }

    /// Host `i`'s wall-clock skew, ms.
    pub fn skew_ms(&self, i: usize) -> i64 {
        self.lock().hosts[i].skew_ms
    }

    /// Host `i` (re)starts: it can bind and be reached.
    pub fn host_up(&self, i: usize) {
        self.lock().hosts[i].up = true;
    }

    /// Host `i` stops: its sockets are gone, and its connections reset at
    /// their peers one latency later.
    pub fn host_down(&self, i: usize) {
        let mut s = self.lock();
        let host = &mut s.hosts[i];
        host.up = false;
        host.udp.clear();
        host.listeners.clear();
        self.reset_conns(&mut s, i);
    }

    /// Every TCP connection of host `i` resets, as when a middlebox drops
    /// their state or a peer sends RST: host `i`'s ends at once, the
    /// others one latency later, and what was in flight is lost. The host
    /// keeps running and may connect again.
    pub fn reset_connections(&self, i: usize) {
        let mut s = self.lock();
        self.reset_conns(&mut s, i);
    }

    fn reset_conns(&self, s: &mut State, i: usize) {
        let now = self.now();
        let conns: Vec<Arc<Conn>> = s.hosts[i]
            .conns
            .drain(..)
            .filter_map(|c| c.upgrade())
            .collect();
        for conn in conns {
            let mut resets = Vec::new();
            {
                let mut c = lock(&conn.state);
                for e in 0..2 {
                    if conn.nodes[e] == i {
                        c.reset[e] = true;
                        c.to[e].readable.clear();
                        c.to[e].waiting.clear();
                        c.to[1 - e].waiting.clear();
                    } else if !c.reset[e] {
                        resets.push(e);
                    }
                }
                wake_all(&mut c);
            }
            for e in resets {
                let at = now + s.model.latency(i, conn.nodes[e]);
                s.schedule(
                    at,
                    Delivery::Reset {
                        conn: conn.clone(),
                        to: e,
                    },
                    &self.wake,
                );
            }
        }
    }

    fn host_of(s: &State, me: usize, ip: IpAddr) -> Option<usize> {
        if ip.is_loopback() || ip.is_unspecified() {
            Some(me)
        } else {
            s.by_ip.get(&ip).copied()
        }
    }

    /// Binds a UDP socket on host `i`.
    pub fn bind_udp(self: &Arc<Self>, i: usize, addr: SocketAddr) -> io::Result<SimUdpSocket> {
        let mut s = self.lock();
        let port = s.claim_port(i, addr, |h, p| h.udp.contains_key(&p))?;
        let host = &mut s.hosts[i];
        host.binds += 1;
        let (tx, rx) = mpsc::channel(UDP_QUEUE);
        host.udp.insert(
            port,
            UdpInbox {
                bind: host.binds,
                tx,
            },
        );
        Ok(SimUdpSocket {
            net: self.clone(),
            host: i,
            bind: host.binds,
            local: SocketAddr::new(host.ip, port),
            rx: tokio::sync::Mutex::new(rx),
            peer: std::sync::Mutex::new(None),
            counters: host.counters.clone(),
        })
    }

    /// Binds a TCP listener on host `i`.
    pub fn bind_tcp(self: &Arc<Self>, i: usize, addr: SocketAddr) -> io::Result<SimTcpListener> {
        let mut s = self.lock();
        let port = s.claim_port(i, addr, |h, p| h.listeners.contains_key(&p))?;
        let host = &mut s.hosts[i];
        host.binds += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        host.listeners.insert(
            port,
            Listening {
                bind: host.binds,
                tx,
            },
        );
        Ok(SimTcpListener {
            net: self.clone(),
            host: i,
            bind: host.binds,
            local: SocketAddr::new(host.ip, port),
            rx: tokio::sync::Mutex::new(rx),
        })
    }

    /// Opens a TCP connection from host `i`.
    pub async fn connect(self: &Arc<Self>, i: usize, to: SocketAddr) -> io::Result<SimTcpStream> {
        let now = self.now();
        let rx = {
            let mut s = self.lock();
            let Some(server) = Self::host_of(&s, i, to.ip()) else {
                return Err(io::Error::new(
                    io::ErrorKind::HostUnreachable,
                    format!("no simulated host has address {}", to.ip()),
                ));
            };
            if !s.hosts[i].up {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "host is down"));
            }
            let port = s.ephemeral(i, |h, p| h.listeners.contains_key(&p))?;
            let (tx, rx) = oneshot::channel();
            let remote = if to.ip().is_loopback() || to.ip().is_unspecified() {
                SocketAddr::new(s.hosts[server].ip, to.port())
            } else {
                to
            };
            let c = Arc::new(Connecting {
                client: i,
                local: SocketAddr::new(s.hosts[i].ip, port),
                server,
                remote,
                started: now,
                reply: Mutex::new(Some(tx)),
            });
            s.send_syn(now, c, 0, &self.wake);
            rx
        };
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the simulation ended the connect",
            )),
        }
    }

    /// Delivers what is in flight, as its time comes; runs for the whole
    /// run.
    pub async fn pump(self: Arc<Self>) {
        loop {
            // Streams nobody will use are dropped after the lock is let go:
            // dropping one sends its FIN, which takes the lock.
            let mut unused = Vec::new();
            let next = {
                let now = self.now();
                let mut s = self.lock();
                while s.queue.peek().is_some_and(|d| d.at <= now) {
                    if let Some(d) = s.queue.pop() {
                        s.delivered += 1;
                        s.deliver(now, d.what, &self, &mut unused);
                    }
                }
                s.armed = s.queue.peek().map(|d| d.at);
                s.armed
            };
            drop(unused);
            match next {
                Some(t) => {
                    tokio::select! {
                        biased;
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(self.deadline(t)) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    fn unbind_udp(&self, i: usize, port: u16, bind: u64) {
        let mut s = self.lock();
        let h = &mut s.hosts[i];
        if h.udp.get(&port).is_some_and(|b| b.bind == bind) {
            h.udp.remove(&port);
        }
    }

    fn unbind_tcp(&self, i: usize, port: u16, bind: u64) {
        let mut s = self.lock();
        let h = &mut s.hosts[i];
        if h.listeners.get(&port).is_some_and(|b| b.bind == bind) {
            h.listeners.remove(&port);
        }
    }

    fn send_datagram(&self, i: usize, data: &[u8], from: SocketAddr, to: SocketAddr) {
        let now = self.now();
        let mut s = self.lock();
        let Some(j) = Self::host_of(&s, i, to.ip()) else {
            return;
        };
        let arrivals = s.model.datagram(now, i, j);
        for at in [arrivals.first, arrivals.again].into_iter().flatten() {
            let what = Delivery::Datagram {
                to: j,
                port: to.port(),
                from,
                data: data.to_vec(),
            };
            s.schedule(at, what, &self.wake);
        }
    }

    /// Hands `data` (`None`: the FIN) from end `from` of `conn` to the
    /// network.
    fn send_segment(&self, conn: &Arc<Conn>, from: usize, data: Option<Vec<u8>>) {
        let now = self.now();
        let mut s = self.lock();
        let to = 1 - from;
        let mut c = lock(&conn.state);
        let half = &mut c.to[to];
        if !half.waiting.is_empty() {
            half.waiting.push_back(data);
            return;
        }
        let len = data.as_ref().map_or(0, Vec::len);
        match s
            .model
            .stream_bytes(now, conn.nodes[from], conn.nodes[to], len)
        {
            Some(at) => {
                let at = half.last_arrival.map_or(at, |l| l.max(at));
                half.last_arrival = Some(at);
                drop(c);
                let what = Delivery::Segment {
                    conn: conn.clone(),
                    to,
                    data,
                };
                s.schedule(at, what, &self.wake);
            }
            None => {
                half.waiting.push_back(data);
                half.stalled_since = Some(now);
                let rtt = s.model.latency(conn.nodes[0], conn.nodes[1]) * 2;
                half.rto = RTO_MIN.max(rtt);
                let at = now + half.rto;
                drop(c);
                let what = Delivery::Retransmit {
                    conn: conn.clone(),
                    to,
                };
                s.schedule(at, what, &self.wake);
            }
        }
    }
}

impl State {
    fn schedule(&mut self, at: Instant, what: Delivery, wake: &Notify) {
        self.seq += 1;
        self.queue.push(Due {
            at,
            seq: self.seq,
            what,
        });
        // The pump sleeps until `armed`, or for good when that is `None`.
        if self.armed.is_none_or(|a| at < a) {
            self.armed = Some(at);
            wake.notify_one();
        }
    }

    /// The port `addr` asks for on host `i`, or a free one for port 0.
    fn claim_port(
        &mut self,
        i: usize,
        addr: SocketAddr,
        taken: impl Fn(&Host, u16) -> bool,
    ) -> io::Result<u16> {
        let ip = addr.ip();
        let host = &self.hosts[i];
        if !(ip.is_unspecified() || ip.is_loopback() || ip == host.ip) {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{ip} is not this host's address ({})", host.ip),
            ));
        }
        if !host.up {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "host is down"));
        }
        match addr.port() {
            0 => self.ephemeral(i, taken),
            p if taken(host, p) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("port {p} is in use on {}", host.ip),
            )),
            p => Ok(p),
        }
    }

    fn ephemeral(&mut self, i: usize, taken: impl Fn(&Host, u16) -> bool) -> io::Result<u16> {
        let host = &mut self.hosts[i];
        for _ in 0..=(u16::MAX - EPHEMERAL) {
            let p = host.next_port;
            host.next_port = if p == u16::MAX { EPHEMERAL } else { p + 1 };
            if !taken(host, p) {
                return Ok(p);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no ephemeral port is free",
        ))
    }

    fn send_syn(&mut self, now: Instant, c: Arc<Connecting>, tries: usize, wake: &Notify) {
        if self.model.can_connect(c.client, c.server) {
            let at = now + self.model.latency(c.client, c.server);
            self.schedule(at, Delivery::Syn(c), wake);
        } else {
            self.retry_syn(c, tries, wake);
        }
    }

    fn retry_syn(&mut self, c: Arc<Connecting>, tries: usize, wake: &Notify) {
        let at = match SYN_RETRIES.get(tries) {
            Some(&s) => c.started + Duration::from_secs(s),
            None => c.started + SYN_GIVE_UP,
        };
        self.schedule(at, Delivery::SynRetry(c, tries + 1), wake);
    }

    fn deliver(
        &mut self,
        now: Instant,
        what: Delivery,
        net: &Arc<Network>,
        unused: &mut Vec<SimTcpStream>,
    ) {
        let wake = &net.wake;
        match what {
            Delivery::Datagram {
                to,
                port,
                from,
                data,
            } => {
                let host = &self.hosts[to];
                if let (true, Some(inbox)) = (host.up, host.udp.get(&port)) {
                    // A full queue drops the datagram, as a full buffer does.
                    let _ = inbox.tx.try_send((data, from));
                }
            }
            Delivery::SynRetry(c, tries) => {
                if c.answered() {
                    return;
                }
                if tries > SYN_RETRIES.len() {
                    let _ = c.answer(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {} timed out", c.remote),
                    )));
                    return;
                }
                self.send_syn(now, c, tries, wake);
            }
            Delivery::Syn(c) => {
                if c.answered() {
                    return;
                }
                let host = &self.hosts[c.server];
                let (up, counters) = (host.up, host.counters.clone());
                let listening = host.listeners.get(&c.remote.port()).map(|l| l.tx.clone());
                if !up {
                    // Nobody answers: the caller's SYN retries go on.
                    let tries = SYN_RETRIES
                        .iter()
                        .take_while(|&&s| c.started + Duration::from_secs(s) <= now)
                        .count();
                    self.retry_syn(c, tries, wake);
                    return;
                }
                let back = now + self.model.latency(c.server, c.client);
                let Some(listening) = listening else {
                    self.schedule(back, Delivery::Refused(c), wake);
                    return;
                };
                let conn = Arc::new(Conn {
                    nodes: [c.client, c.server],
                    addrs: [c.local, c.remote],
                    state: Mutex::new(ConnState::default()),
                });
                let accepted = SimTcpStream::new(net.clone(), conn.clone(), 1, &counters);
                if let Err(e) = listening.send((accepted, c.local)) {
                    unused.push(e.0 .0);
                    self.schedule(back, Delivery::Refused(c), wake);
                    return;
                }
                for n in [c.client, c.server] {
                    let conns = &mut self.hosts[n].conns;
                    if conns.len() >= 64 && conns.len().is_power_of_two() {
                        conns.retain(|w| w.strong_count() > 0);
                    }
                    conns.push(Arc::downgrade(&conn));
                }
                self.schedule(back, Delivery::Established(c, conn), wake);
            }
            Delivery::Established(c, conn) => {
                let counters = self.hosts[c.client].counters.clone();
                let stream = SimTcpStream::new(net.clone(), conn.clone(), 0, &counters);
                if let Err(Ok(stream)) = c.answer(Ok(stream)) {
                    // The caller gave up meanwhile: the connection it will
                    // never use closes.
                    unused.push(stream);
                }
            }
            Delivery::Refused(c) => {
                let _ = c.answer(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{} refused the connection", c.remote),
                )));
            }
            Delivery::Segment { conn, to, data } => {
                let mut c = lock(&conn.state);
                if c.reset[to] {
                    return;
                }
                if c.gone[to] {
                    // Nobody reads: the writer hears a reset.
                    if data.is_some() && !c.reset[1 - to] {
                        drop(c);
                        let at = now + self.model.latency(conn.nodes[to], conn.nodes[1 - to]);
                        self.schedule(at, Delivery::Reset { conn, to: 1 - to }, wake);
                    }
                    return;
                }
                let half = &mut c.to[to];
                match data {
                    Some(bytes) => half.readable.extend(bytes),
                    None => half.fin = true,
                }
                if let Some(w) = half.reader.take() {
                    w.wake();
                }
            }
            Delivery::Reset { conn, to } => {
                let mut c = lock(&conn.state);
                c.reset[to] = true;
                c.to[to].readable.clear();
                c.to[1 - to].waiting.clear();
                wake_all(&mut c);
            }
            Delivery::Retransmit { conn, to } => {
                let mut c = lock(&conn.state);
                let from = 1 - to;
                if c.reset[to] || c.reset[from] {
                    return;
                }
                let (a, b) = (conn.nodes[from], conn.nodes[to]);
                let mut sent = Vec::new();
                {
                    let half = &mut c.to[to];
                    while let Some(seg) = half.waiting.front() {
                        let len = seg.as_ref().map_or(0, Vec::len);
                        let Some(at) = self.model.stream_bytes(now, a, b, len) else {
                            break;
                        };
                        let at = half.last_arrival.map_or(at, |l| l.max(at));
                        half.last_arrival = Some(at);
                        if let Some(seg) = half.waiting.pop_front() {
                            sent.push((at, seg));
                        }
                    }
                }
                let half = &mut c.to[to];
                let retry = if half.waiting.is_empty() {
                    half.stalled_since = None;
                    None
                } else if half
                    .stalled_since
                    .is_some_and(|t| now.as_duration() - t.as_duration() >= STALL_GIVE_UP)
                {
                    c.reset = [true, true];
                    wake_all(&mut c);
                    None
                } else {
                    half.rto = (half.rto * 2).min(RTO_MAX);
                    Some(now + half.rto)
                };
                drop(c);
                for (at, data) in sent {
                    let what = Delivery::Segment {
                        conn: conn.clone(),
                        to,
                        data,
                    };
                    self.schedule(at, what, wake);
                }
                if let Some(at) = retry {
                    self.schedule(at, Delivery::Retransmit { conn, to }, wake);
                }
            }
        }
    }
}

fn wake_all(c: &mut ConnState) {
    for half in &mut c.to {
        for w in [half.reader.take(), half.writer.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }
}

/// A simulated UDP socket.
pub struct SimUdpSocket {
    net: Arc<Network>,
    host: usize,
    bind: u64,
    local: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    counters: Arc<Counters>,
    /// The peer of a connected socket. The simulated network sends no
    /// ICMP, so a connected socket learns nothing more than an unconnected
    /// one, but it hears only from its peer, as a real one does.
    peer: std::sync::Mutex<Option<SocketAddr>>,
}

impl SimUdpSocket {
    fn peer(&self) -> io::Result<SocketAddr> {
        self.peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "the socket is not connected")
            })
    }
}

impl std::fmt::Debug for SimUdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimUdpSocket({})", self.local)
    }
}

impl UdpSocket for SimUdpSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.counters.udp_packets.fetch_add(1, Ordering::Relaxed);
        self.counters
            .udp_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.net.send_datagram(self.host, buf, self.local, to);
        Ok(buf.len())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some((data, from)) => {
                // As a real socket: what does not fit is cut off.
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok((n, from))
            }
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the host's sockets closed",
            )),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    async fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        *self
            .peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(peer);
        Ok(())
    }

    async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_to(buf, self.peer()?).await
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let peer = self.peer()?;
        loop {
            let (n, from) = self.recv_from(buf).await?;
            if from == peer {
                return Ok(n);
            }
        }
    }
}

impl Drop for SimUdpSocket {
    fn drop(&mut self) {
        self.net.unbind_udp(self.host, self.local.port(), self.bind);
    }
}

/// A simulated TCP listener.
pub struct SimTcpListener {
    net: Arc<Network>,
    host: usize,
    bind: u64,
    local: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(SimTcpStream, SocketAddr)>>,
}

impl TcpListener for SimTcpListener {
    type Stream = SimTcpStream;

    async fn accept(&self) -> io::Result<(SimTcpStream, SocketAddr)> {
        match self.rx.lock().await.recv().await {
            Some(c) => Ok(c),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the host's sockets closed",
            )),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Drop for SimTcpListener {
    fn drop(&mut self) {
        self.net.unbind_tcp(self.host, self.local.port(), self.bind);
    }
}

/// One end of a simulated TCP connection.
pub struct SimTcpStream {
    net: Arc<Network>,
    conn: Arc<Conn>,
    end: usize,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SimTcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SimTcpStream({} -> {})",
            self.conn.addrs[self.end],
            self.conn.addrs[1 - self.end]
        )
    }
}

impl SimTcpStream {
    fn new(net: Arc<Network>, conn: Arc<Conn>, end: usize, counters: &Arc<Counters>) -> Self {
        SimTcpStream {
            net,
            conn,
            end,
            counters: counters.clone(),
        }
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.conn.addrs[self.end]
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.addrs[1 - self.end]
    }

    fn reset_error() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "connection reset")
    }
}

impl AsyncRead for SimTcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.end;
        let mut c = lock(&self.conn.state);
        if c.reset[me] {
            return Poll::Ready(Err(Self::reset_error()));
        }
        let half = &mut c.to[me];
        if half.readable.is_empty() {
            if half.fin {
                return Poll::Ready(Ok(()));
            }
            half.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = half.readable.len().min(buf.remaining());
        if n > 1 && cairn::buggify::fires(cairn::buggify::Point::ShortRead) {
            n = 1 + cairn::buggify::below(n as u64 - 1) as usize;
        }
        let (a, b) = half.readable.as_slices();
        let from_a = n.min(a.len());
        buf.put_slice(&a[..from_a]);
        buf.put_slice(&b[..n - from_a]);
        half.readable.drain(..n);
        half.unread = half.unread.saturating_sub(n);
        if let Some(w) = half.writer.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SimTcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (me, peer) = (self.end, 1 - self.end);
        let n = {
            let mut c = lock(&self.conn.state);
            if c.reset[me] {
                return Poll::Ready(Err(Self::reset_error()));
            }
            let half = &mut c.to[peer];
            if half.fin_sent {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "write after shutdown",
                )));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let room = WINDOW.saturating_sub(half.unread);
            if room == 0 {
                half.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = room.min(buf.len());
            half.unread += n;
            n
        };
        self.counters
            .tcp_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        self.net
            .send_segment(&self.conn, me, Some(buf[..n].to_vec()));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (me, peer) = (self.end, 1 - self.end);
        {
            let mut c = lock(&self.conn.state);
            if c.reset[me] || c.to[peer].fin_sent {
                return Poll::Ready(Ok(()));
            }
            c.to[peer].fin_sent = true;
        }
        self.net.send_segment(&self.conn, me, None);
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimTcpStream {
    fn drop(&mut self) {
        let (me, peer) = (self.end, 1 - self.end);
        let send_fin = {
            let mut c = lock(&self.conn.state);
            c.gone[me] = true;
            c.to[me].readable.clear();
            let fin = !c.reset[me] && !c.to[peer].fin_sent;
            c.to[peer].fin_sent = true;
            fin
        };
        if send_fin {
            self.net.send_segment(&self.conn, me, None);
        }
    }
}

#[cfg(test)]
mod tests;
