//! `SimEnv`: cairn's [`Env`] inside a turmoil simulation.
//!
//! Sockets are turmoil's, time is turmoil's virtual time (global across
//! hosts, so event timestamps from different nodes compare directly), the
//! wall clock is the simulation's epoch plus a per-node skew, and every seed
//! derives from the run's seed and the node's name. Per-packet loss lives
//! here too: turmoil's own `fail_rate` breaks whole links for a while (and
//! TCP with them), which models flapping links, not lossy ones.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use cairn::env::{Env, Task, TcpListener, UdpSocket};
use cairn::time::Instant;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::topology::Dist;

/// Network conditions the scenario changes while it runs, shared by all
/// hosts: per-packet UDP loss and jitter, per-node wall-clock skew, and
/// per-node traffic counters.
#[derive(Debug, Default)]
pub struct NetConditions {
    inner: Mutex<Conditions>,
}

#[derive(Debug, Default)]
struct Conditions {
    lossy_sent: u64,
    lossy_dropped: u64,
    loss: f64,
    link_loss: BTreeMap<(IpAddr, IpAddr), f64>,
    jitter: Dist,
    slow: BTreeMap<IpAddr, Duration>,
    skew_ms: BTreeMap<String, i64>,
    counters: BTreeMap<IpAddr, Arc<Counters>>,
}

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

impl NetConditions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conditions> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the loss rate of every link (0.0 to 1.0).
    pub fn set_loss(&self, rate: f64) {
        let mut c = self.lock();
        c.loss = rate.clamp(0.0, 1.0);
        c.link_loss.clear();
    }

    /// Sets the loss rate of the link between `a` and `b`, both directions.
    pub fn set_link_loss(&self, a: IpAddr, b: IpAddr, rate: f64) {
        let mut c = self.lock();
        let rate = rate.clamp(0.0, 1.0);
        c.link_loss.insert((a, b), rate);
        c.link_loss.insert((b, a), rate);
    }

    /// Sets the extra delay drawn for every UDP datagram.
    pub fn set_jitter(&self, jitter: Dist) {
        self.lock().jitter = jitter;
    }

    fn jitter(&self) -> Dist {
        self.lock().jitter
    }

    /// Makes the node at `ip` slow: its datagrams, both ways, take `extra`
    /// longer (zero: well again).
    pub fn set_slow(&self, ip: IpAddr, extra: Duration) {
        let mut c = self.lock();
        if extra.is_zero() {
            c.slow.remove(&ip);
        } else {
            c.slow.insert(ip, extra);
        }
    }

    /// The extra delay of a datagram from `a` to `b`.
    fn slowness(&self, a: IpAddr, b: IpAddr) -> Duration {
        let c = self.lock();
        let get = |ip| c.slow.get(&ip).copied().unwrap_or_default();
        get(a) + get(b)
    }

    /// The traffic counters of the node at `ip`.
    pub fn counters(&self, ip: IpAddr) -> Arc<Counters> {
        self.lock().counters.entry(ip).or_default().clone()
    }

    /// The loss rate from `a` to `b`.
    pub fn loss(&self, a: IpAddr, b: IpAddr) -> f64 {
        let c = self.lock();
        c.link_loss.get(&(a, b)).copied().unwrap_or(c.loss)
    }

    /// Packets sent over links with loss, and how many of those were dropped.
    pub fn loss_counts(&self) -> (u64, u64) {
        let c = self.lock();
        (c.lossy_sent, c.lossy_dropped)
    }

    fn count(&self, dropped: bool) {
        let mut c = self.lock();
        c.lossy_sent += 1;
        c.lossy_dropped += dropped as u64;
    }

    /// Sets a node's wall-clock skew in milliseconds (may be negative).
    pub fn set_skew(&self, node: &str, skew_ms: i64) {
        self.lock().skew_ms.insert(node.to_owned(), skew_ms);
    }

    fn skew(&self, node: &str) -> i64 {
        self.lock().skew_ms.get(node).copied().unwrap_or(0)
    }
}

/// The simulated hosts' names and addresses, for name resolution.
pub type HostTable = Arc<BTreeMap<String, IpAddr>>;

/// cairn's environment on one turmoil host.
#[derive(Clone, Debug)]
pub struct SimEnv {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: String,
    ip: IpAddr,
    run_seed: u64,
    boot: u64,
    hosts: HostTable,
    net: Arc<NetConditions>,
    counters: Arc<Counters>,
    /// Draws packet loss and jitter.
    net_rng: Mutex<ChaCha8Rng>,
}

impl SimEnv {
    /// The environment of host `node` (address `ip`) in a run seeded with
    /// `run_seed`; `boot` counts restarts so a restarted node draws fresh,
    /// still reproducible, randomness.
    pub fn new(
        node: &str,
        ip: IpAddr,
        run_seed: u64,
        boot: u64,
        hosts: HostTable,
        net: Arc<NetConditions>,
    ) -> Self {
        let net_seed = derive_seed(run_seed, node, boot, "packet-loss");
        SimEnv {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                ip,
                run_seed,
                boot,
                hosts,
                counters: net.counters(ip),
                net,
                net_rng: Mutex::new(ChaCha8Rng::seed_from_u64(net_seed)),
            }),
        }
    }

    /// This host's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// This host's address.
    pub fn ip(&self) -> IpAddr {
        self.inner.ip
    }

    /// What becomes of a datagram to `to`: `None` if the network loses
    /// it, else the jitter to add to the link's latency.
    fn fate(&self, to: IpAddr, len: usize) -> Option<Duration> {
        let c = &self.inner.counters;
        c.udp_packets.fetch_add(1, Ordering::Relaxed);
        c.udp_bytes.fetch_add(len as u64, Ordering::Relaxed);
        let rate = self.inner.net.loss(self.inner.ip, to);
        let jitter = self.inner.net.jitter();
        let slow = self.inner.net.slowness(self.inner.ip, to);
        if rate <= 0.0 && jitter.is_zero() {
            return Some(slow);
        }
        let mut rng = self.inner.net_rng.lock().unwrap_or_else(|p| p.into_inner());
        if rate > 0.0 {
            let drop = rng.random_bool(rate.min(1.0));
            self.inner.net.count(drop);
            if drop {
                return None;
            }
        }
        Some(slow + jitter.sample(&mut *rng))
    }
}

/// A stable 64-bit seed from the run's seed, a node, its boot count and a
/// purpose (FNV-1a, then SplitMix64 to spread the bits). Stable across
/// platforms and Rust versions, unlike `std`'s hashers.
pub fn derive_seed(run_seed: u64, node: &str, boot: u64, purpose: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&run_seed.to_le_bytes());
    feed(node.as_bytes());
    feed(&[0xff]);
    feed(&boot.to_le_bytes());
    feed(purpose.as_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn sim_now() -> Duration {
    // Outside a host (which cairn code never is) there is no clock to read.
    turmoil::sim_elapsed().unwrap_or_default()
}

/// turmoil binds only the unspecified address or loopback; a host's own
/// address means "all of this host's interfaces".
fn bindable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_loopback() {
        addr
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port())
    }
}

impl Env for SimEnv {
    type UdpSocket = SimUdpSocket;
    type TcpListener = SimTcpListener;
    type TcpStream = SimTcpStream;

    fn now(&self) -> Instant {
        Instant::from_duration(sim_now())
    }

    fn wall_clock(&self) -> SystemTime {
        let since = turmoil::since_epoch().unwrap_or_default();
        let skew = self.inner.net.skew(&self.inner.node);
        let t = UNIX_EPOCH + since;
        if skew >= 0 {
            t + Duration::from_millis(skew as u64)
        } else {
            t - Duration::from_millis(skew.unsigned_abs())
        }
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        let wait = deadline.as_duration().saturating_sub(sim_now());
        tokio::time::sleep(wait)
    }

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::UdpSocket> {
        let sock = turmoil::net::UdpSocket::bind(bindable(addr)).await?;
        let port = sock.local_addr()?.port();
        Ok(SimUdpSocket {
            sock: Arc::new(sock),
            local: SocketAddr::new(self.inner.ip, port),
            env: self.clone(),
        })
    }

    async fn bind_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpListener> {
        let l = turmoil::net::TcpListener::bind(bindable(addr)).await?;
        let port = l.local_addr()?.port();
        Ok(SimTcpListener {
            listener: l,
            local: SocketAddr::new(self.inner.ip, port),
            counters: self.inner.counters.clone(),
        })
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpStream> {
        Ok(SimTcpStream {
            inner: turmoil::net::TcpStream::connect(addr).await?,
            counters: self.inner.counters.clone(),
        })
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match self.inner.hosts.get(host) {
            Some(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no simulated host is named {host:?}"),
            )),
        }
    }

    fn seed(&self, purpose: &str) -> u64 {
        derive_seed(
            self.inner.run_seed,
            &self.inner.node,
            self.inner.boot,
            purpose,
        )
    }

    fn spawn<F>(&self, task: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Task::from_tokio(tokio::spawn(task))
    }
}

/// A turmoil UDP socket that loses outgoing datagrams at the link's loss
/// rate and delays them by the scenario's jitter.
#[derive(Debug)]
pub struct SimUdpSocket {
    sock: Arc<turmoil::net::UdpSocket>,
    local: SocketAddr,
    env: SimEnv,
}

impl UdpSocket for SimUdpSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self.env.fate(to.ip(), buf.len()) {
            None => Ok(buf.len()),
            Some(jitter) if jitter.is_zero() => self.sock.send_to(buf, to).await,
            Some(jitter) => {
                // Held back datagrams overtake each other, as on a real
                // network; TCP is left alone (turmoil's streams must stay
                // in order).
                let (sock, held) = (self.sock.clone(), buf.to_vec());
                tokio::spawn(async move {
                    tokio::time::sleep(jitter).await;
                    let _ = sock.send_to(&held, to).await;
                });
                Ok(buf.len())
            }
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A turmoil TCP listener reporting the host's address, not `0.0.0.0`.
pub struct SimTcpListener {
    listener: turmoil::net::TcpListener,
    local: SocketAddr,
    counters: Arc<Counters>,
}

impl TcpListener for SimTcpListener {
    type Stream = SimTcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (inner, from) = self.listener.accept().await?;
        let counters = self.counters.clone();
        Ok((SimTcpStream { inner, counters }, from))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A turmoil TCP stream that counts the bytes its host writes.
#[derive(Debug)]
pub struct SimTcpStream {
    inner: turmoil::net::TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for SimTcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimTcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters
                .tcp_bytes
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: u64 = 5_585_203_422_942_332_749;

    #[test]
    fn seeds_depend_on_everything_and_nothing_else() {
        let a = derive_seed(1, "n0", 0, "gossip");
        assert_eq!(a, derive_seed(1, "n0", 0, "gossip"));
        assert_ne!(a, derive_seed(2, "n0", 0, "gossip"));
        assert_ne!(a, derive_seed(1, "n1", 0, "gossip"));
        assert_ne!(a, derive_seed(1, "n0", 1, "gossip"));
        assert_ne!(a, derive_seed(1, "n0", 0, "other"));
        // Pinned: a change here changes every simulation's replay.
        assert_eq!(derive_seed(7, "dc1-0", 0, "gossip"), PINNED);
    }
}
