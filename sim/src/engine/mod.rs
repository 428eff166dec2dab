//! The two engines, and what a run of either produces.
//!
//! - [`full`]: real cairn agents (gossip, Raft, the HTTP API, DNS,
//!   Connect) on [`SimEnv`](full::env::SimEnv) over the simulated network,
//!   stepped from event to event on a paused tokio clock; up to
//!   [`MAX_FULL_NODES`](crate::scenario::MAX_FULL_NODES) nodes.
//! - [`protocol`]: cairn's pure gossip [`Node`](cairn::gossip::Node)
//!   state machines driven by one event queue, without sockets or tasks;
//!   for 10,000 nodes and more, membership and coordinates only.
//!
//! Both take a resolved timeline ([`TimedAction`]s) over the same network
//! model ([`net`](crate::net)) and return a [`RunOutput`]: the trace, the
//! samples, the accuracy and what the checks in [`checks`](crate::checks)
//! judge. Neither engine imports the other; what they share lives here
//! and below (`action`, `verdict`, `net`, `output::trace`).

pub mod full;
pub mod protocol;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::action::{NodeStatus, TimedAction};
use crate::checks::linearizability::Op;
use crate::output::spread::Spread;
use crate::output::trace::Trace;
use crate::tomography::{Accuracy, PairError};

/// One node at one sampling instant (each virtual second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSample {
    /// Virtual time.
    pub at: Duration,
    /// Node index.
    pub node: usize,
    /// Running, waiting to join, crashed or gone.
    pub status: NodeStatus,
    /// UDP datagrams sent since the last sample.
    pub udp_packets: u64,
    /// UDP bytes sent since the last sample.
    pub udp_bytes: u64,
    /// TCP bytes written since the last sample.
    pub tcp_bytes: u64,
    /// Median relative error of this node's RTT estimates to its pool.
    pub coord_median: Option<f64>,
    /// 90th percentile of the same.
    pub coord_p90: Option<f64>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Every event, by time.
    pub trace: Trace,
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// Simulation steps taken: events the protocol engine handled, or
    /// deliveries the full engine's network made.
    pub steps: u64,
    /// UDP packets sent over lossy links, and how many were dropped.
    pub lossy_packets: (u64, u64),
    /// How often each of the product's fault points fired (see
    /// `cairn::buggify`), for the points that did.
    pub fault_points: BTreeMap<String, u64>,
    /// Coordinate accuracy each virtual second.
    pub accuracy: Vec<Accuracy>,
    /// Every scored pair at the end.
    pub final_pairs: Vec<PairError>,
    /// WAN coordinate accuracy each virtual second: server pairs of
    /// different datacenters (empty unless the datacenters federate).
    pub wan_accuracy: Vec<Accuracy>,
    /// Every WAN pair scored at the end.
    pub wan_pairs: Vec<PairError>,
    /// Every node each virtual second.
    pub samples: Vec<NodeSample>,
    /// The actions as they took effect: limited to the nodes they could
    /// change (a crash of a crashed node is no crash), in order.
    pub applied: Vec<TimedAction>,
    /// How each leave, crash and join spread through its pool.
    pub spreads: Vec<Spread>,
    /// Failure verdicts about running, reachable nodes by running,
    /// reachable observers, counted over every node (the protocol engine
    /// counts these live; the full engine's `no_false_failures` check
    /// judges its complete trace instead).
    pub false_failures: Option<u64>,
    /// The nodes whose membership events the trace holds, when only a
    /// sample does (large protocol-engine runs); `None`: every node.
    pub observed: Option<std::collections::BTreeSet<String>>,
    /// Every KV operation the `kv_load` clients made.
    pub history: Vec<Op>,
    /// Every time a `kv_load` lock client believed it held a lock.
    pub holds: Vec<crate::engine::full::locks::Hold>,
    /// Every transaction the `kv_load` transaction clients made.
    pub txns: Vec<crate::checks::serializability::Txn>,
    /// The state of every server running at the end.
    pub replicas: Vec<Replica>,
    /// What each tagged leader placeholder of the timeline stood for when
    /// its event came (see [`tagged_leader_placeholder`]).
    ///
    /// [`tagged_leader_placeholder`]: crate::scenario::select::tagged_leader_placeholder
    pub picks: BTreeMap<usize, String>,
}

/// A server's replicated state at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The server.
    pub node: String,
    /// Its datacenter.
    pub dc: String,
    /// The last Raft log index it applied.
    pub last_applied: u64,
    /// Every KV entry: key -> (value, ModifyIndex).
    pub kv: BTreeMap<String, (Vec<u8>, u64)>,
}

/// Errors from a run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A host's software failed.
    #[error("simulation failed at {at:?}: {why}")]
    Host {
        /// Virtual time of the failure.
        at: Duration,
        /// What the host reported.
        why: String,
    },
    /// The schedule names a node the cluster does not have.
    #[error("the schedule names unknown node {0:?}")]
    UnknownNode(String),
    /// The cluster cannot be set up as specified.
    #[error("{0}")]
    Setup(String),
}
