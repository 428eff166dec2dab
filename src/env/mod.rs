//! The seam between cairn and the world it runs in.
//!
//! Every networked component takes an [`Env`]: monotonic time and timers,
//! wall-clock time, UDP and TCP sockets, name resolution, seeded randomness,
//! and task spawning. [`TokioEnv`] is the real world; the simulator's
//! `SimEnv` (in `cairn-sim`) is turmoil's simulated network and clock with a
//! per-node RNG derived from the run's seed. Nothing outside this module and
//! the simulator touches sockets, `SystemTime::now` or OS entropy, which is
//! what lets the same code replay identically from a seed.

mod group;
mod tokio_env;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(test)]
pub(crate) use self::group::paused_runtime;
pub use self::group::{spawn_inheriting, GroupClock, TaskGroup};
pub use self::tokio_env::TokioEnv;
use crate::time::Instant;

/// Where cairn runs: real sockets and clocks, or a simulation of them.
pub trait Env: Clone + Send + Sync + 'static {
    /// A bound UDP socket.
    type UdpSocket: UdpSocket;
    /// A listening TCP socket.
    type TcpListener: TcpListener<Stream = Self::TcpStream>;
    /// A connected TCP stream.
    type TcpStream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;

    /// Monotonic time since this environment's origin.
    fn now(&self) -> Instant;

    /// Wall-clock time (skewed per node in the simulator).
    fn wall_clock(&self) -> SystemTime;

    /// Completes at `deadline` on this environment's monotonic clock.
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static;

    /// Binds a UDP socket.
    fn bind_udp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::UdpSocket>> + Send;

    /// Binds a TCP listener.
    fn bind_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpListener>> + Send;

    /// Opens a TCP connection.
    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send;

    /// Resolves `host` (an IP address or a name) to addresses with `port`.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;

    /// A seed for the random choices of the component named `purpose`.
    /// Real environments draw it from OS entropy; the simulator derives it
    /// from the run's seed, the node and `purpose`, so runs replay exactly.
    fn seed(&self, purpose: &str) -> u64;

    /// Runs `task` concurrently. The task is cancelled when the returned
    /// [`Task`] is dropped, unless it is [detached](Task::detach).
    fn spawn<F>(&self, task: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static {
        self.sleep_until(self.now() + d)
    }
}

/// A bound UDP socket.
pub trait UdpSocket: Send + Sync + 'static {
    /// Sends one datagram.
    fn send_to(&self, buf: &[u8], to: SocketAddr)
        -> impl Future<Output = io::Result<usize>> + Send;
    /// Receives one datagram. Cancel-safe: nothing is lost if the future is
    /// dropped before it completes.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Connects the socket to `peer`: [`send`](Self::send) goes there,
    /// [`recv`](Self::recv) hears only from there, and, on a real network,
    /// an ICMP error about the peer (nothing listens on that port) comes
    /// back as an error from them. UDP checks depend on that.
    fn connect(&self, peer: SocketAddr) -> impl Future<Output = io::Result<()>> + Send;
    /// Sends one datagram to the connected peer.
    fn send(&self, buf: &[u8]) -> impl Future<Output = io::Result<usize>> + Send;
    /// Receives one datagram from the connected peer. Cancel-safe.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// A listening TCP socket.
pub trait TcpListener: Send + Sync + 'static {
    /// The connection type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static;
    /// Waits for a connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// The address the listener is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A spawned task, cancelled when dropped unless detached.
#[derive(Debug)]
pub struct Task {
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Task {
    /// Wraps a tokio task.
    pub fn from_tokio(handle: tokio::task::JoinHandle<()>) -> Self {
        Task {
            handle: Some(handle),
        }
    }

    /// Lets the task run on after this handle is dropped.
    pub fn detach(mut self) {
        self.handle = None;
    }

    /// Cancels the task.
    pub fn abort(&self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Future for Task {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.handle.as_mut() {
            Some(h) => Pin::new(h).poll(cx).map(|_| ()),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }
}

/// The deadline passed before the operation completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// Runs `fut` until `deadline` on `env`'s clock.
pub async fn timeout_at<E: Env, F: Future>(
    env: &E,
    deadline: Instant,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let sleep = env.sleep_until(deadline);
    tokio::select! {
        biased;
        out = fut => Ok(out),
        _ = sleep => Err(Elapsed),
    }
}

/// Runs `fut` for at most `d` on `env`'s clock.
pub async fn timeout<E: Env, F: Future>(
    env: &E,
    d: Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    timeout_at(env, env.now() + d, fut).await
}

/// Adapts an [`Env`] listener to `axum::serve`, so the HTTP API is served
/// through the seam (and so inside the simulator too).
pub struct AxumListener<L>(pub L);

impl<L: TcpListener> axum::serve::Listener for AxumListener<L> {
    type Io = L::Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(conn) => return conn,
                // Out of file descriptors and the like: axum's own listener
                // also logs and keeps going.
                Err(e) => tracing::warn!(error = %e, "accepting an HTTP connection failed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
