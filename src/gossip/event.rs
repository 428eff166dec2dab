//! What the gossip core tells the world: membership events and node records.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::wire::{NodeStateKind, Versions};
use crate::time::Instant;

/// A member as the local node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique node name.
    pub name: String,
    /// Gossip address (UDP and TCP).
    pub addr: SocketAddr,
    /// Opaque metadata (Serf-style tags for cairn agents).
    pub meta: Vec<u8>,
    /// Last known incarnation.
    pub incarnation: u32,
    /// Alive, suspect, dead or left.
    pub state: NodeStateKind,
    /// `[pmin, pmax, pcur, dmin, dmax, dcur]`.
    pub vsn: Versions,
}

/// Kinds of membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// A node became a member (new, or back after being dead or gone).
    Joined,
    /// A member's metadata changed.
    Updated,
    /// A member missed its probes and is suspected of having failed.
    Suspect,
    /// A suspected member proved it is alive.
    Alive,
    /// A member was declared failed.
    Failed,
    /// A member left on purpose.
    Left,
    /// The local node refuted a suspicion or death notice about itself.
    Refuted,
}

impl EventKind {
    /// Lower-case name, as traces and logs print it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joined => "joined",
            EventKind::Updated => "updated",
            EventKind::Suspect => "suspect",
            EventKind::Alive => "alive",
            EventKind::Failed => "failed",
            EventKind::Left => "left",
            EventKind::Refuted => "refuted",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One membership change, seen by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    /// When the observing node saw it.
    pub at: Instant,
    /// What happened.
    pub kind: EventKind,
    /// The member it happened to, after the change.
    pub node: NodeInfo,
}

/// A completed direct probe: the round-trip time of a ping and its ack, and
/// the payload the target attached to the ack (its network coordinate).
#[derive(Debug, Clone, PartialEq)]
pub struct PingComplete {
    /// The probed node.
    pub node: String,
    /// Measured round-trip time.
    pub rtt: Duration,
    /// The ack's payload.
    pub payload: Vec<u8>,
}
