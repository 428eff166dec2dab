//! Joining a gossip pool by name: `host`, `host:port` and `[v6]:port`
//! targets resolved through the [`Env`], and `retry_join`'s loop.

use std::net::SocketAddr;
use std::time::Duration;

use crate::env::Env;
use crate::gossip::{Gossip, GossipError};

/// Resolves join targets (`host`, `host:port`, `[v6]:port`), logging the
/// ones that do not resolve.
pub async fn resolve_all<E: Env>(
    env: &E,
    targets: &[String],
    default_port: u16,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for t in targets {
        match crate::format::split_host_port(t, default_port) {
            Ok((host, port)) => match env.resolve(&host, port).await {
                Ok(addrs) if !addrs.is_empty() => out.extend(addrs),
                Ok(_) => tracing::warn!(target = %t, "join address resolves to nothing"),
                Err(e) => tracing::warn!(target = %t, error = %e, "cannot resolve join address"),
            },
            Err(e) => tracing::warn!(target = %t, error = %e, "bad join address"),
        }
    }
    out
}

/// Joins `targets` until one join succeeds, every `interval`, at most
/// `max` times (0: forever).
pub(super) async fn retry_join<E: Env>(
    env: E,
    gossip: Gossip,
    targets: Vec<String>,
    port: u16,
    interval: Duration,
    max: u32,
) {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let addrs = resolve_all(&env, &targets, port).await;
        match gossip.join(addrs).await {
            Ok(n) => {
                tracing::info!(joined = n, attempt, "retry-join succeeded");
                return;
            }
            Err(GossipError::Shutdown) => return,
            Err(e) => tracing::warn!(attempt, error = %e, "retry-join failed; will try again"),
        }
        if max > 0 && attempt >= max {
            tracing::error!(attempts = attempt, "retry-join gave up");
            return;
        }
        env.sleep(interval).await;
    }
}
