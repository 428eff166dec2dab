//! The sans-IO SWIM + Lifeguard state machine.
//!
//! [`Swim`] never reads a clock and never touches a socket. The caller feeds
//! it packets, stream messages, stream results and timeouts, each with the
//! current time, and drains [`Output`]s: packets to send, streams to open,
//! membership events. [`Swim::poll_timeout`] says when it next wants
//! [`Swim::handle_timeout`]. The same core runs under the tokio driver, under
//! turmoil, and under the discrete-event protocol engine.
//!
//! Behaviour follows memberlist 0.2.2 closely — the probe cycle, indirect
//! probes with nacks, TCP fallback, suspicion with Lifeguard's shrinking
//! timeout, refutation, piggybacked dissemination, push/pull anti-entropy —
//! so a cairn node and a Go memberlist node can share a cluster.
//!
//! One node's state is one [`Swim`], defined here with its vocabulary, its
//! construction, its accessors, its entry points (packets, streams,
//! commands) and its timers. Each concern of the protocol is an `impl Swim`
//! of its own, in a file below this one:
//!
//! - `probe/`: the probe cycle (direct, indirect, TCP fallback), the walk
//!   through the probe order, and the ping, ack and nack handlers; the
//!   probe's own state is in `probe/state.rs`;
//! - `members/`: the member table (`members/table.rs`) and its changes:
//!   alive, suspect, dead, refute, and when a suspicion runs out;
//! - `push_pull.rs`: anti-entropy, a full state exchange over a stream;
//! - `send.rs`: what leaves the node: the broadcast queue, the gossip tick,
//!   packets (compound, compressed, checksummed) and streams.
//!
//! Data flows one way: the concerns use the types defined here, and this
//! file reaches them only through method calls on `self`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::members::table::{Members, NodeState};
use self::probe::state::Probe;
use super::broadcast::BroadcastQueue;
use super::config::{Config, SwimError};
use super::event::{MemberEvent, NodeInfo, PingComplete};
use super::hash::LookupMap;
use super::lifeguard::{Awareness, Suspicion};
use super::wire::{
    self, Ack, Alive, Dead, Message, NodeStateKind, StreamMessage, Versions, WireError,
    MAX_NAME_LEN, META_MAX_SIZE, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN,
};
use crate::time::Instant;

mod members;
mod probe;
mod push_pull;
mod send;

pub(crate) use self::members::table::MemberTable;

/// Identifies a stream the core asked the driver to open.
pub type StreamId = u64;

/// Notification token for the leave broadcast.
const LEAVE_TOKEN: u64 = 1;

/// The local node's identity.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Unique name in the cluster.
    pub name: String,
    /// Address other members reach us on (UDP and TCP share the port).
    pub addr: SocketAddr,
    /// Metadata, at most [`META_MAX_SIZE`] bytes.
    pub meta: Vec<u8>,
}

/// A stream the driver should open: connect to `to`, write `data`, and if
/// `expect_reply` read one stream message back, all before `deadline`; then
/// report with [`Swim::handle_stream_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// Identifies the request in the result.
    pub id: StreamId,
    /// Peer address.
    pub to: SocketAddr,
    /// Bytes to write (empty when the codec is skipped: see `message`).
    /// Shared, not copied: a push/pull state many nodes send is one buffer.
    pub data: Bytes,
    /// The message itself, instead of `data`, when the codec is skipped
    /// ([`Swim::skip_codec`]).
    pub message: Option<StreamMessage>,
    /// The message's encoded length before compression, with the codec
    /// skipped or not (simulators time the transfer by it).
    pub size: usize,
    /// Give up after this.
    pub deadline: Instant,
    /// Whether to read a reply.
    pub expect_reply: bool,
}

/// Something the core wants done or known.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send a UDP packet.
    Packet {
        /// Destination.
        to: SocketAddr,
        /// Payload.
        data: Vec<u8>,
    },
    /// Deliver these messages as one datagram, not encoded: only with the
    /// codec skipped ([`Swim::skip_codec`]), for simulators.
    Messages {
        /// Destination.
        to: SocketAddr,
        /// The datagram's messages, in order.
        msgs: Vec<Arc<Message>>,
        /// Bytes the datagram would take encoded, before compression.
        size: usize,
    },
    /// Open a stream (see [`StreamRequest`]). (Boxed, as is the event:
    /// every packet is an `Output` too, moved through two queues, and
    /// these two would make each several times larger.)
    Stream(Box<StreamRequest>),
    /// A membership change.
    Event(Box<MemberEvent>),
    /// A direct probe completed; carries the RTT and the ack payload.
    PingComplete(PingComplete),
    /// Our leave notice has been gossiped enough; it is safe to shut down.
    LeaveComplete,
    /// An application message arrived (see [`Swim::broadcast_user`]).
    User(Vec<u8>),
}

/// Counters kept by the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets handed to the core.
    pub packets_received: u64,
    /// Packets the core asked to send.
    pub packets_sent: u64,
    /// Messages (or packets) that failed to decode.
    pub decode_errors: u64,
    /// Probes started.
    pub probes: u64,
    /// Probes that ended without any ack.
    pub probes_failed: u64,
    /// Indirect probe requests sent.
    pub indirect_probes: u64,
    /// Times we refuted a suspicion or death notice about ourselves.
    pub refutations: u64,
    /// Pings addressed to a different node name (a restarted peer).
    pub misdirected_pings: u64,
    /// Alive messages rejected for claiming a taken name with another address.
    pub address_conflicts: u64,
    /// Push/pull exchanges completed (either side).
    pub push_pulls: u64,
    /// User messages received (handled by layers above).
    pub user_messages: u64,
    /// Unconfirmed suspicions extended because our own health was degraded.
    pub suspicions_deferred: u64,
    /// Verification pings sent to suspects whose suspicion ran out unconfirmed.
    pub verifications: u64,
    /// Of those, answered (the suspect was alive after all).
    pub verifications_answered: u64,
    /// Accused members that pinged us and were told of the accusation.
    pub accusations_told: u64,
}

/// A message on its way out: its encoding, which sizes packets (and is
/// sent), and, with the codec skipped, the message itself.
#[derive(Debug, Clone)]
struct Part {
    bytes: Bytes,
    msg: Option<Arc<Message>>,
}

impl super::broadcast::Encoded for Part {
    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }
}

#[derive(Debug, Clone)]
enum Timer {
    ProbeTick,
    GossipTick,
    PushPullTick,
    /// The direct ack for probe `seq` is overdue: go indirect.
    ProbeTimeout(u32),
    /// Probe `seq` is out of time.
    ProbeDeadline(u32),
    /// An indirect probe we relay for someone expires (and may nack).
    RelayExpire(u32),
    /// The suspicion about this node may have run out. Confirmations arm an
    /// earlier timer; the later ones then find the node already handled.
    Suspicion(Arc<str>),
}

#[derive(Debug, Clone)]
enum AckHandler {
    Probe,
    /// A last ping to a suspect whose suspicion ran out unconfirmed.
    Verify(Arc<str>),
    Relay {
        orig_seq: u32,
        reply_to: SocketAddr,
        reply_node: Option<Arc<str>>,
        nack: bool,
    },
}

#[derive(Debug, Clone)]
enum PendingStream {
    Join,
    PushPull,
    FallbackPing { seq: u32 },
}

/// One node's SWIM protocol state.
#[derive(Debug)]
pub struct Swim {
    cfg: Config,
    me: Arc<str>,
    advertise: SocketAddr,
    rng: ChaCha8Rng,
    seq: u32,
    incarnation: u32,
    /// Probe order; shuffled each round, new nodes inserted at random.
    /// Persistent (structurally shared) so that members preloaded from one
    /// [`MemberTable`] cost a pool its size once, not once per node.
    nodes: imbl::Vector<Arc<str>>,
    map: Members,
    /// Where this node is in its probe round, and the probe in flight.
    probe: Probe,
    awareness: Awareness,
    broadcasts: BroadcastQueue<Part>,
    /// The gossip ticks' grid: one tick at `.0`, then every interval. The
    /// tick sleeps while nothing is queued (a tick would send nothing) and
    /// wakes at the grid's next point when something is (`.1`: armed; the
    /// constructor arms the first tick itself).
    gossip_clock: (Instant, bool),
    /// Messages go out and come in as values, not bytes (`skip_codec`).
    typed: bool,
    suspicions: LookupMap<Arc<str>, Suspicion>,
    /// Verification pings in flight: suspect -> (seq, acked).
    verifying: LookupMap<Arc<str>, (u32, bool)>,
    acks: LookupMap<u32, AckHandler>,
    relay_timers: LookupMap<u32, (Instant, u64)>,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    outputs: VecDeque<Output>,
    streams: LookupMap<StreamId, PendingStream>,
    next_stream: StreamId,
    left: bool,
    leave_reported: bool,
    ack_payload: Vec<u8>,
    stats: Stats,
}

impl Swim {
    /// A node that knows only itself. `seed` drives every random choice the
    /// core makes (probe order, peer selection, timer stagger), so equal seeds
    /// and equal inputs give equal outputs.
    pub fn new(cfg: Config, local: LocalNode, seed: u64, now: Instant) -> Result<Self, SwimError> {
        cfg.validate().map_err(SwimError::Config)?;
        if local.name.is_empty() {
            return Err(SwimError::EmptyName);
        }
        if local.name.len() > MAX_NAME_LEN {
            return Err(SwimError::NameTooLong(local.name.len()));
        }
        if local.meta.len() > META_MAX_SIZE {
            return Err(SwimError::MetaTooLarge(local.meta.len()));
        }
        let mut s = Swim {
            me: Arc::from(local.name.as_str()),
            advertise: local.addr,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seq: 0,
            incarnation: 0,
            nodes: imbl::Vector::new(),
            map: Members::default(),
            probe: Probe::default(),
            awareness: Awareness::new(cfg.awareness_max_multiplier),
            broadcasts: BroadcastQueue::new(cfg.max_queued_broadcasts),
            gossip_clock: (now, true),
            typed: false,
            suspicions: LookupMap::default(),
            verifying: LookupMap::default(),
            acks: LookupMap::default(),
            relay_timers: LookupMap::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            outputs: VecDeque::new(),
            streams: LookupMap::default(),
            next_stream: 0,
            left: false,
            leave_reported: false,
            ack_payload: Vec::new(),
            stats: Stats::default(),
            cfg,
        };
        let inc = s.next_incarnation();
        let alive = Alive {
            incarnation: inc,
            node: local.name,
            addr: local.addr,
            meta: local.meta,
            vsn: Some(s.versions()),
        };
        s.alive_node(now, &alive.view(), true);
        // A random stagger keeps members from probing in lockstep.
        let probe_at = now + s.stagger(s.cfg.probe_interval);
        s.schedule(probe_at, Timer::ProbeTick);
        let gossip_at = now + s.stagger(s.cfg.gossip_interval);
        s.schedule(gossip_at, Timer::GossipTick);
        s.gossip_clock = (gossip_at, true);
        if !s.cfg.push_pull_interval.is_zero() {
            let pp_at = now + s.stagger(s.cfg.push_pull_interval);
            s.schedule(pp_at, Timer::PushPullTick);
        }
        Ok(s)
    }

    /// Starts this fresh node as if it had already joined: it knows every
    /// member of `table` alive, without a join or a push/pull, and without
    /// an event for each. The table must list this node as it is (a table
    /// built from every node's [`local_node`](Self::local_node)). Each node
    /// starts its probe round at its own random place in the shared order.
    pub(crate) fn preload(&mut self, table: &MemberTable, now: Instant) -> Result<(), SwimError> {
        if self.nodes.len() > 1 || self.left {
            return Err(SwimError::Preload(format!(
                "{} already knows other members",
                self.me
            )));
        }
        let mine = self.map.get(&self.me);
        let theirs = table.map.get(&self.me);
        let same = match (mine, theirs) {
            (Some(a), Some(b)) => {
                (a.addr, a.incarnation, &a.meta, a.vsn) == (b.addr, b.incarnation, &b.meta, b.vsn)
            }
            _ => false,
        };
        if !same {
            return Err(SwimError::Preload(format!(
                "the table does not list {} as the node describes itself",
                self.me
            )));
        }
        self.nodes = table.nodes.clone();
        self.map = table.map.clone();
        self.probe.index = 0;
        self.probe.walk = Some(self.random_walk());
        // A settled cluster has nothing to say: not even our own start.
        self.broadcasts = BroadcastQueue::new(self.cfg.max_queued_broadcasts);
        // The first push/pull waits as long as the cluster's size asks for;
        // the one armed at start assumed a cluster of one.
        if !self.cfg.push_pull_interval.is_zero() {
            self.timers.retain(|_, t| !matches!(t, Timer::PushPullTick));
            let every = self.cfg.push_pull_scale(self.nodes.len());
            let at = now + self.stagger(every);
            self.schedule(at, Timer::PushPullTick);
        }
        Ok(())
    }

    /// From now on, hand out messages as values ([`Output::Messages`],
    /// [`StreamRequest::message`]) and take them in as values
    /// ([`handle_messages`](Self::handle_messages),
    /// [`handle_stream_message`](Self::handle_stream_message)): no
    /// encoding of what is sent, no compression, no checksums, no decoding.
    /// Packets are still sized by their encoding, so the protocol decides
    /// exactly as it would on the wire. For simulators, where the codec
    /// would be most of the cost; a real network needs bytes.
    pub fn skip_codec(&mut self) {
        self.typed = true;
    }

    // ------------------------------------------------------------ accessors

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.me
    }

    /// This node's advertised gossip address.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every node the core currently tracks, in probe order (dead ones are
    /// forgotten after `gossip_to_the_dead_time`).
    pub fn nodes(&self) -> impl Iterator<Item = NodeInfo> + '_ {
        self.nodes
            .iter()
            .filter_map(|n| self.map.get(n).map(|n| n.info()))
    }

    /// One node's record.
    pub fn node(&self, name: &str) -> Option<NodeInfo> {
        self.map.get(name).map(|n| n.info())
    }

    /// This node's own record.
    pub fn local_node(&self) -> NodeInfo {
        self.map
            .get(&self.me)
            .map(|n| n.info())
            .unwrap_or_else(|| NodeInfo {
                name: self.me.to_string(),
                addr: self.advertise,
                meta: Vec::new(),
                incarnation: self.incarnation,
                state: NodeStateKind::Alive,
                vsn: self.versions(),
            })
    }

    /// Members neither dead nor left, including this node.
    pub fn num_alive(&self) -> usize {
        self.map
            .values()
            .filter(|n| !n.state.is_dead_or_left())
            .count()
    }

    /// Lifeguard health score (0 is healthy).
    pub fn health_score(&self) -> usize {
        self.awareness.score()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Broadcasts waiting to be piggybacked.
    pub fn queued_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// The bound on queued broadcasts.
    pub fn broadcast_bound(&self) -> usize {
        self.broadcasts.bound()
    }

    /// Whether [`leave`](Self::leave) has been called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Sets the payload attached to every ack we send (our network coordinate).
    pub fn set_ack_payload(&mut self, payload: Vec<u8>) {
        self.ack_payload = payload;
    }

    fn versions(&self) -> Versions {
        [
            PROTOCOL_VERSION_MIN,
            PROTOCOL_VERSION_MAX,
            self.cfg.protocol_version,
            self.cfg.delegate_protocol_min,
            self.cfg.delegate_protocol_max,
            self.cfg.delegate_protocol_version,
        ]
    }

    // ----------------------------------------------------------------- I/O

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first_key_value().map(|(k, _)| k.0)
    }

    /// Runs every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.fire(now, timer);
        }
    }

    /// Handles one UDP packet from `from`.
    pub fn handle_packet(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.packets_received += 1;
        // Each part is handled as it is decoded, in the packet's order.
        wire::decode_packet_parts(data, &mut |part| match part {
            wire::Part::Alive(a) => self.handle_alive(now, a),
            wire::Part::Message(Ok(m)) => self.handle_message(now, from, m),
            wire::Part::Message(Err(e)) => self.decode_failed(from, e),
        });
    }

    /// Handles one datagram's messages, as values (see
    /// [`skip_codec`](Self::skip_codec)).
    pub fn handle_messages(&mut self, now: Instant, from: SocketAddr, msgs: Vec<Arc<Message>>) {
        self.stats.packets_received += 1;
        for m in msgs {
            self.handle_message(now, from, Arc::unwrap_or_clone(m));
        }
    }

    fn decode_failed(&mut self, from: SocketAddr, e: WireError) {
        self.stats.decode_errors += 1;
        tracing::debug!(node = %self.me, %from, error = %e, "dropping undecodable gossip");
    }

    fn handle_message(&mut self, now: Instant, from: SocketAddr, msg: Message) {
        match msg {
            Message::Ping(p) => self.handle_ping(from, p),
            Message::IndirectPing(p) => self.handle_indirect_ping(now, from, p),
            Message::Ack(a) => self.handle_ack(now, a),
            Message::Nack(n) => self.handle_nack(n),
            Message::Suspect(s) => self.suspect_node(now, &s, true),
            Message::Alive(a) => self.handle_alive(now, a.view()),
            Message::Dead(d) => self.dead_node(now, &d),
            Message::User(payload) => {
                self.stats.user_messages += 1;
                self.outputs.push_back(Output::User(payload));
            }
            Message::Err(e) => {
                tracing::debug!(node = %self.me, %from, error = %e.error, "peer reported an error")
            }
        }
    }

    /// Handles a message read from an incoming stream; returns the bytes to
    /// write back, if any.
    pub fn handle_stream(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: StreamMessage,
    ) -> Option<Bytes> {
        let reply = self.handle_stream_message(now, from, msg)?;
        Some(self.stream_bytes(&reply))
    }

    /// Handles a message read from an incoming stream; returns the message
    /// to write back, if any, as a value.
    pub fn handle_stream_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: StreamMessage,
    ) -> Option<StreamMessage> {
        match msg {
            StreamMessage::Ping(p) => {
                if !p.node.is_empty() && *p.node != *self.me {
                    self.stats.misdirected_pings += 1;
                    return None;
                }
                Some(StreamMessage::Ack(Ack {
                    seq_no: p.seq_no,
                    payload: Vec::new(),
                }))
            }
            StreamMessage::PushPull(pp) => {
                // Merge before answering (memberlist answers first): if the
                // peer holds us dead, our refutation rides back in the reply.
                // Otherwise two sides that each hold the other dead at the
                // same incarnation would stay split, since nobody gossips to
                // a member it believes dead once gossip_to_the_dead_time passes.
                if let Err(e) = self.merge_remote(now, &pp) {
                    tracing::warn!(node = %self.me, %from, error = %e, "refusing push/pull state");
                }
                Some(StreamMessage::PushPull(self.local_state(pp.join)))
            }
            StreamMessage::User(payload) => {
                self.stats.user_messages += 1;
                self.outputs.push_back(Output::User(payload));
                None
            }
            StreamMessage::Ack(_) | StreamMessage::Err(_) => None,
        }
    }

    /// Reports how a requested stream went: the reply, or why there is none.
    /// For join and push/pull streams, says whether the exchange succeeded.
    pub fn handle_stream_result(
        &mut self,
        now: Instant,
        id: StreamId,
        result: Result<Option<StreamMessage>, String>,
    ) -> Result<(), String> {
        let Some(kind) = self.streams.remove(&id) else {
            return Err(format!("unknown stream {id}"));
        };
        match kind {
            PendingStream::Join | PendingStream::PushPull => match result? {
                Some(StreamMessage::PushPull(pp)) => self.merge_remote(now, &pp),
                Some(StreamMessage::Err(e)) => Err(format!("remote error: {}", e.error)),
                Some(_) => Err("peer answered push/pull with another message type".into()),
                None => Err("peer closed the stream without answering".into()),
            },
            PendingStream::FallbackPing { seq } => {
                let ok = matches!(result, Ok(Some(StreamMessage::Ack(ref a))) if a.seq_no == seq);
                self.fallback_done(now, seq, ok);
                Ok(())
            }
        }
    }

    // -------------------------------------------------------------- commands

    /// Starts a join through each address (a push/pull with `join` set);
    /// results arrive through [`handle_stream_result`](Self::handle_stream_result).
    pub fn join(&mut self, now: Instant, addrs: &[SocketAddr]) -> Vec<StreamId> {
        addrs
            .iter()
            .map(|&a| {
                let data = StreamMessage::PushPull(self.local_state(true));
                self.open_stream(
                    now,
                    a,
                    data,
                    now + self.cfg.tcp_timeout,
                    true,
                    PendingStream::Join,
                )
            })
            .collect()
    }

    /// Leaves the cluster: broadcasts our own death notice, marked as a
    /// leave. [`Output::LeaveComplete`] follows once it has been gossiped.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.left = true;
        let inc = self
            .map
            .get(&self.me)
            .map_or(self.incarnation, |n| n.incarnation);
        let d = Dead {
            incarnation: inc,
            node: self.me.to_string(),
            from: self.me.to_string(),
        };
        self.dead_node(now, &d);
        if !self.any_alive() {
            self.leave_complete();
        }
    }

    /// Declares a failed member departed, as if it had left gracefully
    /// (Consul's `force-leave`): it stops being retried and can be reaped.
    /// Only failed members qualify; an alive one would refute it.
    pub fn force_leave(&mut self, now: Instant, name: &str) -> Result<(), SwimError> {
        let state = self
            .map
            .get(name)
            .ok_or_else(|| SwimError::ForceLeave(format!("no node found with name {name:?}")))?;
        match state.state {
            NodeStateKind::Left => Ok(()),
            NodeStateKind::Dead => {
                let d = Dead {
                    incarnation: state.incarnation,
                    node: name.to_owned(),
                    from: name.to_owned(),
                };
                self.dead_node(now, &d);
                Ok(())
            }
            NodeStateKind::Alive | NodeStateKind::Suspect => Err(SwimError::ForceLeave(format!(
                "node {name:?} is not failed; force-leave removes failed nodes only"
            ))),
        }
    }

    /// Changes our metadata and gossips it with a new incarnation.
    pub fn set_meta(&mut self, now: Instant, meta: Vec<u8>) -> Result<(), SwimError> {
        if meta.len() > META_MAX_SIZE {
            return Err(SwimError::MetaTooLarge(meta.len()));
        }
        let inc = self.next_incarnation();
        let a = Alive {
            incarnation: inc,
            node: self.me.to_string(),
            addr: self.advertise,
            meta,
            vsn: Some(self.versions()),
        };
        self.alive_node(now, &a.view(), true);
        Ok(())
    }

    /// Queues an application message (a memberlist "user" message) to
    /// piggyback on gossip and probes like membership news; receivers get
    /// it as [`Output::User`]. Whether the message was small enough to
    /// gossip.
    pub fn broadcast_user(&mut self, now: Instant, payload: Vec<u8>) -> bool {
        self.enqueue(now, None, &Message::User(payload), None)
    }

    // ---------------------------------------------------------------- timers

    fn schedule(&mut self, at: Instant, timer: Timer) -> (Instant, u64) {
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, timer);
        key
    }

    fn stagger(&mut self, d: Duration) -> Duration {
        let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.random_range(0..nanos))
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::ProbeTick => {
                self.schedule(now + self.cfg.probe_interval, Timer::ProbeTick);
                if self.probe.run.is_some() {
                    // Like Go's ticker, remember one missed tick and probe as
                    // soon as the current probe ends.
                    self.probe.tick_missed = true;
                } else {
                    self.start_probe(now);
                }
            }
            Timer::GossipTick => {
                self.gossip(now);
                if self.broadcasts.is_empty() {
                    self.gossip_clock.1 = false;
                } else {
                    self.schedule(now + self.cfg.gossip_interval, Timer::GossipTick);
                }
            }
            Timer::PushPullTick => {
                let next = self.cfg.push_pull_scale(self.nodes.len());
                self.schedule(now + next, Timer::PushPullTick);
                self.push_pull(now);
            }
            Timer::ProbeTimeout(seq) => self.probe_timed_out(now, seq),
            Timer::ProbeDeadline(seq) => self.probe_deadline(now, seq),
            Timer::RelayExpire(seq) => self.relay_expired(seq),
            Timer::Suspicion(node) => self.suspicion_expired(now, node),
        }
    }

    // ---------------------------------------------------------------- peers

    /// Up to `k` distinct random nodes not rejected by `exclude` (memberlist's
    /// `kRandomNodes`: at most 3n draws, so small clusters are searched
    /// exhaustively and large ones cheaply).
    fn k_random_nodes(&mut self, k: usize, exclude: impl Fn(&NodeState) -> bool) -> Vec<NodeState> {
        let n = self.nodes.len();
        let mut out: Vec<NodeState> = Vec::with_capacity(k);
        let mut i = 0;
        while i < 3 * n && out.len() < k {
            i += 1;
            let idx = self.rng.random_range(0..n);
            let Some(node) = self.map.get(&self.nodes[idx]) else {
                continue;
            };
            if exclude(node) || out.iter().any(|o| o.name == node.name) {
                continue;
            }
            out.push(node.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests;
