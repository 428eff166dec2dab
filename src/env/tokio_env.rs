//! The real world: tokio's sockets and timers, the system clock, OS entropy.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Env, Task, TcpListener, UdpSocket};
use crate::time::Instant;

/// Real sockets and clocks, on the current tokio runtime.
#[derive(Clone, Debug)]
pub struct TokioEnv {
    origin: Arc<tokio::time::Instant>,
}

impl TokioEnv {
    /// An environment whose monotonic origin is now.
    pub fn new() -> Self {
        TokioEnv {
            origin: Arc::new(tokio::time::Instant::now()),
        }
    }
}

impl Default for TokioEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Env for TokioEnv {
    type UdpSocket = tokio::net::UdpSocket;
    type TcpListener = tokio::net::TcpListener;
    type TcpStream = tokio::net::TcpStream;

    fn now(&self) -> Instant {
        Instant::from_duration(self.origin.elapsed())
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep_until(*self.origin + deadline.as_duration())
    }

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::UdpSocket> {
        tokio::net::UdpSocket::bind(addr).await
    }

    async fn bind_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpListener> {
        tokio::net::TcpListener::bind(addr).await
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpStream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        // Gossip and RPC exchanges are small request/answer pairs.
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }

    fn seed(&self, _purpose: &str) -> u64 {
        rand::random()
    }

    fn spawn<F>(&self, task: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Task::from_tokio(tokio::spawn(task))
    }
}

impl UdpSocket for tokio::net::UdpSocket {
    fn send_to(
        &self,
        buf: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, buf, to)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }

    fn connect(&self, peer: SocketAddr) -> impl Future<Output = io::Result<()>> + Send {
        tokio::net::UdpSocket::connect(self, peer)
    }

    fn send(&self, buf: &[u8]) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send(self, buf)
    }

    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::recv(self, buf)
    }
}

impl TcpListener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, a) = tokio::net::TcpListener::accept(self).await?;
        s.set_nodelay(true)?;
        Ok((s, a))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}
