//! A whole gossip node without I/O: the SWIM core plus what Serf keeps on
//! top of memberlist — the member [`Roster`], network coordinates learned
//! from probe round trips, the reconnect loop that retries failed members,
//! and reaping of members kept past their timeouts.
//!
//! The [`driver`](super::driver) runs one over sockets; the simulator's
//! protocol engine runs thousands under a discrete-event scheduler. Both
//! feed it the same inputs, so both run the same protocol.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::{Coordinates, GossipOptions, SwimError, REAP_INTERVAL};
use super::core::{LocalNode, MemberTable, Output, StreamId, Swim};
use super::event::NodeInfo;
use super::event::PingComplete;
use super::roster::{roster_table, Roster, RosterTable};
use super::wire::StreamMessage;
use crate::coordinate::{self, Client as VivaldiClient, Coordinate};
use crate::time::Instant;

/// Members that nodes can start out knowing, alive, as if they had already
/// joined one another (see [`Node::preload`]). Built once per pool and
/// shared: a simulator starting 100,000 nodes "already converged" keeps the
/// member list once, and each node copies only the entries it changes.
#[derive(Debug, Clone)]
pub struct KnownMembers {
    core: MemberTable,
    roster: RosterTable,
}

impl KnownMembers {
    /// The table of `members` (each as its own node describes itself:
    /// [`Swim::local_node`]), alive since `now`.
    pub fn new(members: Vec<NodeInfo>, now: Instant) -> Result<Self, SwimError> {
        // The core's table refuses duplicate names; the roster's would not.
        let core = MemberTable::new(members.iter().cloned(), now)?;
        Ok(KnownMembers {
            roster: roster_table(members, now),
            core,
        })
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.core.len() == 0
    }
}

/// A gossip node as a state machine; see the [module docs](self).
#[derive(Debug)]
pub struct Node {
    core: Swim,
    roster: Roster,
    vivaldi: Option<VivaldiClient<String>>,
    /// Members' estimate coordinates, from their acks.
    coord_cache: BTreeMap<String, Coordinate>,
    rng: ChaCha8Rng,
    opts: GossipOptions,
    next_reconnect: Option<Instant>,
    next_reap: Instant,
    /// The core's outputs, already applied to the roster and coordinates.
    pending: VecDeque<Output>,
}

impl Node {
    /// A node named and tuned by `opts`, reachable at `advertise`; `seed`
    /// gives a seed for each purpose (`"gossip"`, `"gossip-reconnect"`,
    /// `"vivaldi"`), as [`Env::seed`](crate::env::Env::seed) does.
    pub fn new(
        opts: GossipOptions,
        advertise: SocketAddr,
        seed: impl Fn(&str) -> u64,
        now: Instant,
    ) -> Result<Node, SwimError> {
        let local = LocalNode {
            name: opts.name.clone(),
            addr: advertise,
            meta: opts.meta.clone(),
        };
        let core = Swim::new(opts.config.clone(), local, seed("gossip"), now)?;
        let vivaldi = match &opts.coordinates {
            Some(cfg) => Some(
                VivaldiClient::new(cfg.clone(), seed("vivaldi"))
                    .map_err(|e| SwimError::Config(format!("coordinates: {e}")))?,
            ),
            None => None,
        };
        let reconnect = opts.reconnect_interval;
        let mut node = Node {
            roster: Roster::new(&opts.name),
            core,
            vivaldi,
            coord_cache: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed("gossip-reconnect")),
            next_reconnect: (!reconnect.is_zero()).then(|| now + reconnect),
            next_reap: now + REAP_INTERVAL,
            opts,
            pending: VecDeque::new(),
        };
        node.refresh_ack_payload();
        Ok(node)
    }

    /// Starts this fresh node knowing every member of `known` alive, as if
    /// it had joined them long ago: no join, no push/pull, no events. For
    /// simulations that study a settled cluster without paying for its
    /// join storm first.
    pub fn preload(&mut self, known: &KnownMembers, now: Instant) -> Result<(), SwimError> {
        self.core.preload(&known.core, now)?;
        self.roster
            .preload(&known.roster)
            .map_err(SwimError::Preload)
    }

    /// The SWIM core.
    pub fn core(&self) -> &Swim {
        &self.core
    }

    /// The Serf-style member list.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The options the node was made with.
    pub fn options(&self) -> &GossipOptions {
        &self.opts
    }

    /// Our estimate coordinate, if coordinates are on.
    pub fn coordinate(&self) -> Option<&Coordinate> {
        self.vivaldi.as_ref().map(|v| v.estimate())
    }

    /// Our and every member's coordinates.
    pub fn coordinates(&self) -> Coordinates {
        let local = self.coordinate().cloned();
        let mut members = self.coord_cache.clone();
        if let Some(c) = &local {
            members.insert(self.opts.name.clone(), c.clone());
        }
        Coordinates { local, members }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let chore = self
            .next_reconnect
            .map_or(self.next_reap, |t| t.min(self.next_reap));
        Some(self.core.poll_timeout().map_or(chore, |t| t.min(chore)))
    }

    /// Runs the core's due timers and, when due, reaping and reconnecting.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        // The chores read the roster: let it see what the timers just did
        // (a member that failed this instant is one to reconnect to).
        self.pump();
        if now >= self.next_reap {
            self.reap(now);
            self.next_reap = now + REAP_INTERVAL;
        }
        if self.next_reconnect.is_some_and(|t| now >= t) {
            self.reconnect(now);
            self.next_reconnect = Some(now + self.opts.reconnect_interval);
        }
    }

    /// The next thing to do or know. Membership events have already been
    /// applied to the roster, and completed probes to our coordinate.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.pump();
        self.pending.pop_front()
    }

    /// Moves the core's outputs to `pending`, learning from them on the way.
    fn pump(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match &out {
                Output::Event(ev) => self.roster.apply(ev),
                Output::PingComplete(p) => self.learn_coordinate(p),
                Output::LeaveComplete
                | Output::User(_)
                | Output::Packet { .. }
                | Output::Messages { .. }
                | Output::Stream(_) => {}
            }
            self.pending.push_back(out);
        }
    }

    /// Marks our own departure in the roster once the leave has spread.
    pub fn left(&mut self, now: Instant) {
        self.roster.local_left(now);
    }

    /// Handles one UDP packet.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.core.handle_packet(now, from, data)
    }

    /// Skips the codec from now on (see [`Swim::skip_codec`]).
    pub fn skip_codec(&mut self) {
        self.core.skip_codec()
    }

    /// Handles one datagram's messages, as values (codec skipped).
    pub fn handle_messages(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msgs: Vec<std::sync::Arc<super::wire::Message>>,
    ) {
        self.core.handle_messages(now, from, msgs)
    }

    /// Handles a message from an incoming stream; returns the reply as a
    /// value (codec skipped).
    pub fn handle_stream_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: StreamMessage,
    ) -> Option<StreamMessage> {
        self.core.handle_stream_message(now, from, msg)
    }

    /// Handles a message from an incoming stream; returns the reply bytes.
    pub fn handle_stream(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: StreamMessage,
    ) -> Option<bytes::Bytes> {
        self.core.handle_stream(now, from, msg)
    }

    /// Reports how a requested stream went.
    pub fn handle_stream_result(
        &mut self,
        now: Instant,
        id: StreamId,
        result: Result<Option<StreamMessage>, String>,
    ) -> Result<(), String> {
        self.core.handle_stream_result(now, id, result)
    }

    /// Starts a join through each address.
    pub fn join(&mut self, now: Instant, addrs: &[SocketAddr]) -> Vec<StreamId> {
        self.core.join(now, addrs)
    }

    /// Leaves the cluster ([`Output::LeaveComplete`] follows).
    pub fn leave(&mut self, now: Instant) {
        self.core.leave(now)
    }

    /// Declares a failed member departed (see [`Swim::force_leave`]).
    pub fn force_leave(&mut self, now: Instant, name: &str) -> Result<(), SwimError> {
        self.core.force_leave(now, name)
    }

    /// Gossips an application message (see [`Swim::broadcast_user`]).
    pub fn broadcast_user(&mut self, now: Instant, payload: Vec<u8>) -> bool {
        self.core.broadcast_user(now, payload)
    }

    /// Replaces our metadata and gossips it.
    pub fn set_meta(&mut self, now: Instant, meta: Vec<u8>) -> Result<(), SwimError> {
        self.core.set_meta(now, meta)
    }

    /// Updates our coordinate from a completed probe (Serf's ping delegate).
    fn learn_coordinate(&mut self, p: &PingComplete) {
        let Some(vivaldi) = self.vivaldi.as_mut() else {
            return;
        };
        let peer = match coordinate::decode_ping_payload(&p.payload) {
            Ok(c) => c,
            // Peers without coordinates (plain memberlist) send none.
            Err(coordinate::PayloadError::Empty) => return,
            Err(e) => {
                tracing::debug!(node = %self.opts.name, peer = %p.node, error = %e, "ignoring a coordinate");
                return;
            }
        };
        if let Err(e) = vivaldi.update(&p.node, &peer.coordinate, p.rtt) {
            tracing::debug!(node = %self.opts.name, peer = %p.node, error = %e, "coordinate update refused");
            return;
        }
        self.coord_cache
            .insert(p.node.clone(), peer.estimate().clone());
        self.refresh_ack_payload();
    }

    /// Puts our current coordinate in the acks we send.
    fn refresh_ack_payload(&mut self) {
        if let Some(v) = &self.vivaldi {
            let estimate = (v.estimate() != v.coordinate()).then(|| v.estimate());
            self.core
                .set_ack_payload(coordinate::encode_ping_payload(v.coordinate(), estimate));
        }
    }

    /// Forgets members kept past their reconnect or tombstone timeout, and
    /// their coordinates with them.
    fn reap(&mut self, now: Instant) {
        let reaped = self.roster.reap(
            now,
            self.opts.reconnect_timeout,
            self.opts.tombstone_timeout,
        );
        for gone in reaped {
            self.coord_cache.remove(&gone);
            if let Some(v) = self.vivaldi.as_mut() {
                v.forget(&gone);
            }
        }
    }

    /// Serf's reconnect: with probability failed/alive (at most one), try
    /// one random failed member again, so a large cluster does not flood a
    /// few failed nodes with joins.
    fn reconnect(&mut self, now: Instant) {
        let failed: Vec<SocketAddr> = self.roster.failed().map(|m| m.addr).collect();
        if failed.is_empty() {
            return;
        }
        let alive = self.roster.alive_count().max(1);
        let chance = failed.len() as f64 / alive as f64;
        if self.rng.random::<f64>() > chance {
            return;
        }
        let addr = failed[self.rng.random_range(0..failed.len())];
        tracing::debug!(node = %self.opts.name, %addr, "trying to reach a failed member again");
        self.core.join(now, &[addr]);
    }
}
