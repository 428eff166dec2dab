//! `SimEnv`: cairn's [`Env`] inside the full engine.
//!
//! Sockets are the run's simulated [`Network`]'s; time is the node's
//! machine clock ([`HostClock`]), which reads the run's virtual time unless
//! a `drift` or `clock_jump` event changed it (traces and histories are
//! stamped with true time, [`SimClock::true_now`], so that timestamps from
//! different nodes compare directly); the wall clock is the simulation's
//! epoch plus that clock plus a per-node skew; every task a node starts belongs to the node's
//! [`TaskGroup`], which its crash aborts; and every seed derives from the
//! run's seed, the node's name and its boot count.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::env::{Env, GroupClock, Task, TaskGroup};
use cairn::time::Instant;

use crate::engine::full::clock::{HostClock, SimClock};
use crate::net::{Network, SimTcpListener, SimTcpStream, SimUdpSocket};
use crate::seed::derive_seed;

/// The simulated hosts' names and addresses, for name resolution.
pub type HostTable = Arc<BTreeMap<String, IpAddr>>;

/// Fixed start of simulated wall-clock time, so traces do not depend on
/// when a run happens: 2026-01-01T00:00:00Z.
pub fn sim_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// cairn's environment on one simulated node, for one boot.
#[derive(Clone, Debug)]
pub struct SimEnv {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: String,
    index: usize,
    ip: IpAddr,
    run_seed: u64,
    boot: u64,
    hosts: HostTable,
    net: Arc<Network>,
    group: TaskGroup,
    clock: Arc<HostClock>,
}

/// Who a [`SimEnv`] is: a node, its place in the run, and its boot.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The node's name.
    pub node: String,
    /// Its index in the topology.
    pub index: usize,
    /// Its address.
    pub ip: IpAddr,
    /// The run's seed.
    pub run_seed: u64,
    /// How many times it started before (a restarted node draws fresh,
    /// still reproducible, randomness).
    pub boot: u64,
}

impl SimEnv {
    /// The environment of `who` on `net`, its tasks in `group`, its time
    /// read off `clock`.
    pub fn new(
        who: Identity,
        hosts: HostTable,
        net: Arc<Network>,
        group: TaskGroup,
        clock: Arc<HostClock>,
    ) -> Self {
        SimEnv {
            inner: Arc::new(Inner {
                node: who.node,
                index: who.index,
                ip: who.ip,
                run_seed: who.run_seed,
                boot: who.boot,
                hosts,
                net,
                group,
                clock,
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
}

impl Env for SimEnv {
    type UdpSocket = SimUdpSocket;
    type TcpListener = SimTcpListener;
    type TcpStream = SimTcpStream;

    fn now(&self) -> Instant {
        MachineClock::now_on(&self.inner.clock, &self.inner.net)
    }

    fn wall_clock(&self) -> SystemTime {
        let t = sim_epoch() + self.now().as_duration();
        let skew = self.inner.net.skew_ms(self.inner.index);
        if skew >= 0 {
            t + Duration::from_millis(skew as u64)
        } else {
            t - Duration::from_millis(skew.unsigned_abs())
        }
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        sleep_on(self.inner.clock.clone(), self.inner.net.clone(), deadline)
    }

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::UdpSocket> {
        self.inner.net.bind_udp(self.inner.index, addr)
    }

    async fn bind_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpListener> {
        self.inner.net.bind_tcp(self.inner.index, addr)
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpStream> {
        self.inner.net.connect(self.inner.index, addr).await
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
        Task::from_tokio(self.inner.group.spawn(task))
    }
}

/// Waits on `net`'s virtual time until `clock` reads `deadline`.
async fn sleep_on(clock: Arc<HostClock>, net: Arc<Network>, deadline: Instant) {
    clock
        .sleep_until(
            deadline.as_duration(),
            || net.now().as_duration(),
            |t| tokio::time::sleep_until(net.deadline(Instant::from_duration(t))),
        )
        .await
}

/// A machine's clock as its task group gives it to code that has no `Env`
/// at hand: openraft's timers (see [`GroupClock`]).
pub struct MachineClock {
    /// The machine's clock.
    pub clock: Arc<HostClock>,
    /// The run's network, whose time is the true time.
    pub net: Arc<Network>,
}

impl MachineClock {
    fn now_on(clock: &HostClock, net: &Network) -> Instant {
        Instant::from_duration(clock.reading(net.now().as_duration()))
    }
}

impl GroupClock for MachineClock {
    fn now(&self) -> Instant {
        Self::now_on(&self.clock, &self.net)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(sleep_on(self.clock.clone(), self.net.clone(), deadline))
    }
}

impl SimClock for SimEnv {
    fn true_now(&self) -> Duration {
        self.inner.net.now().as_duration()
    }

    fn true_time(&self, reading: Duration) -> Duration {
        self.inner.clock.true_time(reading)
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
