//! UDP checks, as Consul's: an empty datagram goes to `host:port`; a
//! reply passes, and so does silence until the timeout (UDP promises no
//! answer), but an ICMP error (nothing listens on that port) is critical.

use std::net::SocketAddr;
use std::time::Duration;

use crate::env::{Env, UdpSocket};
use crate::state::Health;

/// One try of a UDP check of `target`.
pub async fn check<E: Env>(env: &E, target: &str, timeout: Duration) -> (Health, String) {
    let passing = || (Health::Passing, format!("UDP connect {target}: Success"));
    let addr = match resolve(env, target).await {
        Ok(a) => a,
        Err(e) => return (Health::Critical, e),
    };
    let any: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = match env.bind_udp(any).await {
        Ok(s) => s,
        Err(e) => return (Health::Critical, format!("dial udp {target}: {e}")),
    };
    // Only a connected socket hears of ICMP errors.
    if let Err(e) = sock.connect(addr).await {
        return (Health::Critical, format!("dial udp {addr}: {e}"));
    }
    let local = sock
        .local_addr()
        .map_or_else(|_| any.to_string(), |a| a.to_string());
    if let Err(e) = sock.send(&[]).await {
        return (
            Health::Critical,
            format!("write udp {local}->{addr}: {}", words(&e)),
        );
    }
    let mut buf = [0u8; 1];
    match crate::env::timeout(env, timeout, sock.recv(&mut buf)).await {
        Ok(Ok(_)) | Err(_) => passing(),
        Ok(Err(e)) => (
            Health::Critical,
            format!("read udp {local}->{addr}: read: {}", words(&e)),
        ),
    }
}

async fn resolve<E: Env>(env: &E, target: &str) -> Result<SocketAddr, String> {
    let (host, port) =
        crate::format::split_host_port(target, 0).map_err(|e| format!("dial udp {target}: {e}"))?;
    env.resolve(&host, port)
        .await
        .map_err(|e| format!("dial udp: lookup {host}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("dial udp: lookup {host}: no such host"))
}

/// Go's words for a socket error.
fn words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}
