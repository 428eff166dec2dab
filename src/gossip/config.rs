//! Gossip tuning, with memberlist's three presets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::keyring::Encryption;
use super::wire::{MAX_NAME_LEN, META_MAX_SIZE};
use crate::coordinate::{self, Coordinate};

/// Timing and fan-out of the SWIM protocol. The presets equal memberlist's
/// `DefaultLANConfig`, `DefaultWANConfig` and `DefaultLocalConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Deadline for a TCP exchange (push/pull, fallback probe, join).
    pub tcp_timeout: Duration,
    /// Peers asked to probe a node that missed a direct probe.
    pub indirect_checks: usize,
    /// Each broadcast is sent `retransmit_mult * ceil(log10(n + 1))` times.
    pub retransmit_mult: usize,
    /// Suspicion lasts at least `suspicion_mult * max(1, log10(n)) * probe_interval`.
    pub suspicion_mult: usize,
    /// Suspicion starts at this multiple of its minimum and shrinks as other
    /// members confirm it (Lifeguard).
    pub suspicion_max_timeout_mult: usize,
    /// Period of full state exchange with a random member (0 disables it).
    pub push_pull_interval: Duration,
    /// Period of the failure detector.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before probing indirectly.
    pub probe_timeout: Duration,
    /// Skip the TCP fallback probe.
    pub disable_tcp_pings: bool,
    /// Local health awareness scales the probe interval up to this factor.
    pub awareness_max_multiplier: usize,
    /// Period of gossip (piggyback-only) rounds.
    pub gossip_interval: Duration,
    /// Members gossiped to per round.
    pub gossip_nodes: usize,
    /// Dead members still receive gossip for this long, so they can refute.
    pub gossip_to_the_dead_time: Duration,
    /// LZW-compress packets when that makes them smaller, and all streams.
    pub enable_compression: bool,
    /// Largest UDP payload we build.
    pub udp_buffer_size: usize,
    /// A dead node's name may be taken by a new address after this long
    /// (zero: only once it has left).
    pub dead_node_reclaim_time: Duration,
    /// memberlist protocol version we speak (2 to 5; 2 is memberlist's default).
    pub protocol_version: u8,
    /// Oldest version of the layer above memberlist that we understand.
    pub delegate_protocol_min: u8,
    /// Newest version of the layer above memberlist that we understand.
    pub delegate_protocol_max: u8,
    /// Version of the layer above memberlist that we speak.
    pub delegate_protocol_version: u8,
    /// Bound on queued broadcasts; the most-sent are dropped beyond it.
    pub max_queued_broadcasts: usize,
}

impl Config {
    /// memberlist's `DefaultLANConfig`: tuned for a local network.
    pub fn lan() -> Self {
        Config {
            tcp_timeout: Duration::from_secs(10),
            indirect_checks: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            push_pull_interval: Duration::from_secs(30),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            disable_tcp_pings: false,
            awareness_max_multiplier: 8,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead_time: Duration::from_secs(30),
            enable_compression: true,
            udp_buffer_size: 1400,
            dead_node_reclaim_time: Duration::ZERO,
            protocol_version: 2,
            delegate_protocol_min: 0,
            delegate_protocol_max: 0,
            delegate_protocol_version: 0,
            max_queued_broadcasts: 4096,
        }
    }

    /// memberlist's `DefaultWANConfig`: tuned for links between datacenters.
    pub fn wan() -> Self {
        Config {
            tcp_timeout: Duration::from_secs(30),
            suspicion_mult: 6,
            push_pull_interval: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(5),
            gossip_nodes: 4,
            gossip_interval: Duration::from_millis(500),
            gossip_to_the_dead_time: Duration::from_secs(60),
            ..Config::lan()
        }
    }

    /// memberlist's `DefaultLocalConfig`: tuned for loopback and tests.
    pub fn local() -> Self {
        Config {
            tcp_timeout: Duration::from_secs(1),
            indirect_checks: 1,
            retransmit_mult: 2,
            suspicion_mult: 3,
            push_pull_interval: Duration::from_secs(15),
            probe_timeout: Duration::from_millis(200),
            probe_interval: Duration::from_secs(1),
            gossip_interval: Duration::from_millis(100),
            gossip_to_the_dead_time: Duration::from_secs(15),
            ..Config::lan()
        }
    }

    /// The preset with this name: `lan`, `wan` or `local`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "lan" => Some(Self::lan()),
            "wan" => Some(Self::wan()),
            "local" => Some(Self::local()),
            _ => None,
        }
    }

    /// Checks values that would make the protocol misbehave.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("gossip_interval", self.gossip_interval),
            ("tcp_timeout", self.tcp_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if self.probe_timeout > self.probe_interval {
            return Err(format!(
                "probe_timeout ({:?}) must not exceed probe_interval ({:?})",
                self.probe_timeout, self.probe_interval
            ));
        }
        if !(2..=crate::gossip::wire::PROTOCOL_VERSION_MAX).contains(&self.protocol_version) {
            return Err(format!(
                "protocol_version must be between 2 and {}, got {}",
                crate::gossip::wire::PROTOCOL_VERSION_MAX,
                self.protocol_version
            ));
        }
        if self.delegate_protocol_min > self.delegate_protocol_max
            || !(self.delegate_protocol_min..=self.delegate_protocol_max)
                .contains(&self.delegate_protocol_version)
        {
            return Err("delegate protocol version must lie within [min, max]".into());
        }
        if self.awareness_max_multiplier == 0 {
            return Err("awareness_max_multiplier must be at least 1".into());
        }
        if !(512..=65_507).contains(&self.udp_buffer_size) {
            return Err("udp_buffer_size must be between 512 and 65507 bytes".into());
        }
        if self.retransmit_mult == 0
            || self.suspicion_mult == 0
            || self.suspicion_max_timeout_mult == 0
        {
            return Err(
                "retransmit_mult, suspicion_mult and suspicion_max_timeout_mult must be at least 1"
                    .into(),
            );
        }
        if self.max_queued_broadcasts == 0 {
            return Err("max_queued_broadcasts must be at least 1".into());
        }
        Ok(())
    }

    /// `suspicion_mult * max(1, log10(n)) * probe_interval`, memberlist's
    /// minimum suspicion timeout for a cluster of `n` members.
    pub fn suspicion_timeout(&self, n: usize) -> Duration {
        let scale = (n.max(1) as f64).log10().max(1.0);
        // Millisecond precision, as memberlist computes it.
        let ms = (scale * 1000.0) as u64;
        self.probe_interval * self.suspicion_mult as u32 * ms as u32 / 1000
    }

    /// `retransmit_mult * ceil(log10(n + 1))`: how often each broadcast is sent.
    pub fn retransmit_limit(&self, n: usize) -> usize {
        let scale = ((n + 1) as f64).log10().ceil() as usize;
        self.retransmit_mult * scale
    }

    /// The push/pull period for `n` members: grows with log2(n) beyond 32
    /// members so large clusters do not saturate the network.
    pub fn push_pull_scale(&self, n: usize) -> Duration {
        const THRESHOLD: usize = 32;
        if n <= THRESHOLD {
            return self.push_pull_interval;
        }
        let mult = ((n as f64).log2() - (THRESHOLD as f64).log2()).ceil() + 1.0;
        self.push_pull_interval * mult as u32
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::lan()
    }
}

/// How often members past their reconnect or tombstone timeout are
/// forgotten (Serf's `ReapInterval`).
pub const REAP_INTERVAL: Duration = Duration::from_secs(15);

/// How to run a gossip node.
#[derive(Debug, Clone)]
pub struct GossipOptions {
    /// Unique node name.
    pub name: String,
    /// Address to bind UDP and TCP on.
    pub bind: SocketAddr,
    /// Address to advertise (defaults to the bound address).
    pub advertise: Option<SocketAddr>,
    /// Node metadata (see [`tags`](super::tags)).
    pub meta: Vec<u8>,
    /// Protocol tuning.
    pub config: Config,
    /// How often to try reaching a failed member again (zero disables).
    pub reconnect_interval: Duration,
    /// How long a failed member is kept and retried before it is forgotten.
    pub reconnect_timeout: Duration,
    /// How long a member that left is kept in the member list.
    pub tombstone_timeout: Duration,
    /// Network coordinates learned from probe round trips (`None`: off).
    pub coordinates: Option<coordinate::Config>,
    /// Prefix of this node's seed purposes, so that a second pool on the
    /// same host (a server's WAN pool) draws its own random choices.
    pub seed_scope: String,
    /// Gossip encryption (`None`: plain, as memberlist without a key).
    pub encryption: Option<Encryption>,
}

impl GossipOptions {
    /// Options with Serf's defaults for everything but the identity.
    pub fn new(name: impl Into<String>, bind: SocketAddr, config: Config) -> Self {
        GossipOptions {
            name: name.into(),
            bind,
            advertise: None,
            meta: Vec::new(),
            config,
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            coordinates: Some(coordinate::Config::default()),
            seed_scope: String::new(),
            encryption: None,
        }
    }
}

/// Network coordinates as a node knows them: its own, and every member's it
/// has heard in an ack (estimate coordinates, for RTT estimates).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coordinates {
    /// This node's estimate coordinate (`None` when coordinates are off).
    pub local: Option<Coordinate>,
    /// Members' coordinates by node name, this node included.
    pub members: BTreeMap<String, Coordinate>,
}

/// Errors from setting up or reconfiguring the core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwimError {
    /// The configuration is unusable.
    #[error("invalid gossip configuration: {0}")]
    Config(String),
    /// Metadata larger than memberlist allows.
    #[error("node metadata is {0} bytes; memberlist allows at most {META_MAX_SIZE}")]
    MetaTooLarge(usize),
    /// A node needs a name.
    #[error("node name must not be empty")]
    EmptyName,
    /// A name other members would refuse.
    #[error("node name is {0} bytes; the limit is {MAX_NAME_LEN}")]
    NameTooLong(usize),
    /// A member table that cannot be preloaded into this node.
    #[error("cannot preload members: {0}")]
    Preload(String),
    /// A force-leave that does not apply.
    #[error("{0}")]
    ForceLeave(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for c in [Config::lan(), Config::wan(), Config::local()] {
            c.validate().unwrap();
        }
    }

    #[test]
    fn scaling_matches_memberlist() {
        let c = Config::lan();
        // memberlist's util_test: suspicionTimeout(3, n, 1s).
        let mut three = c.clone();
        three.suspicion_mult = 3;
        assert_eq!(three.suspicion_timeout(5), Duration::from_secs(3));
        assert_eq!(three.suspicion_timeout(10), Duration::from_secs(3));
        assert_eq!(three.suspicion_timeout(50), Duration::from_millis(3 * 1698));
        assert_eq!(
            three.suspicion_timeout(500),
            Duration::from_millis(3 * 2698)
        );
        assert_eq!(three.suspicion_timeout(100), Duration::from_secs(6));
        assert_eq!(c.retransmit_limit(0), 0);
        assert_eq!(c.retransmit_limit(1), 4);
        assert_eq!(c.retransmit_limit(99), 8);
        assert_eq!(c.push_pull_scale(32), Duration::from_secs(30));
        assert_eq!(c.push_pull_scale(33), Duration::from_secs(60));
        assert_eq!(c.push_pull_scale(65), Duration::from_secs(90));
    }
}
