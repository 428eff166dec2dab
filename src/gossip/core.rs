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

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::broadcast::BroadcastQueue;
use super::config::{Config, SwimError};
use super::event::{EventKind, MemberEvent, NodeInfo, PingComplete};
use super::hash::LookupMap;
use super::lifeguard::{Awareness, Suspicion};
pub(crate) use super::members::MemberTable;
use super::members::{Members, NodeState};
use super::memo;
use super::wire::{
    self, Ack, Alive, AliveRef, Dead, IndirectPing, Message, Nack, NodeStateKind, Ping,
    PushNodeState, PushPull, StreamMessage, Suspect, Versions, WireError, COMPOUND_HEADER_OVERHEAD,
    COMPOUND_OVERHEAD, MAX_COMPOUND_PARTS, MAX_NAME_LEN, META_MAX_SIZE, PROTOCOL_VERSION_MAX,
    PROTOCOL_VERSION_MIN,
};
use crate::time::Instant;

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

/// A walk through the first `len` slots of a probe order.
#[derive(Debug, Clone, Copy)]
struct Walk {
    offset: usize,
    stride: usize,
    len: usize,
}

impl Walk {
    /// The slot visited at step `i` (< `len`).
    fn slot(self, i: usize) -> usize {
        (self.offset + i * self.stride) % self.len
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    NotTried,
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
struct ProbeRun {
    seq: u32,
    target: Arc<str>,
    target_incarnation: u32,
    sent: Instant,
    indirect: bool,
    expected_nacks: usize,
    nacks: usize,
    fallback: Fallback,
    deadline_passed: bool,
    timeout_key: (Instant, u64),
    deadline_key: (Instant, u64),
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
    probe_index: usize,
    /// This node's own walk through a shared probe order (see `preload`);
    /// `None`: the order is private and walked as it stands.
    probe_walk: Option<Walk>,
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
    probe: Option<ProbeRun>,
    probe_tick_missed: bool,
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
            probe_index: 0,
            probe_walk: None,
            awareness: Awareness::new(cfg.awareness_max_multiplier),
            broadcasts: BroadcastQueue::new(cfg.max_queued_broadcasts),
            gossip_clock: (now, true),
            typed: false,
            suspicions: LookupMap::default(),
            verifying: LookupMap::default(),
            acks: LookupMap::default(),
            relay_timers: LookupMap::default(),
            probe: None,
            probe_tick_missed: false,
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
        self.probe_index = 0;
        self.probe_walk = Some(self.random_walk());
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

    /// An alive notice from a packet. Most repeat what we know (a join
    /// storm delivers each about a dozen times): those return here, before
    /// anything is copied, exactly where [`alive_node`](Self::alive_node)
    /// would return without a trace.
    fn handle_alive(&mut self, now: Instant, mut a: AliveRef<'_>) {
        if a.addr.port() == 0 {
            a.addr.set_port(self.advertise.port());
        }
        let valid = a.vsn.is_none_or(|v| v[0] != 0 && v[1] != 0 && v[0] <= v[1]);
        let known = *a.node != *self.me
            && valid
            && self
                .map
                .get(a.node)
                .is_some_and(|s| s.addr == a.addr && a.incarnation <= s.incarnation);
        if !known {
            self.alive_node(now, &a, false);
        }
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
                let finish = match self.probe.as_mut() {
                    Some(p) if p.seq == seq => {
                        p.fallback = if ok {
                            Fallback::Succeeded
                        } else {
                            Fallback::Failed
                        };
                        p.deadline_passed
                    }
                    _ => false,
                };
                if finish {
                    self.finish_probe(now);
                }
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
                if self.probe.is_some() {
                    // Like Go's ticker, remember one missed tick and probe as
                    // soon as the current probe ends.
                    self.probe_tick_missed = true;
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
            Timer::ProbeDeadline(seq) => {
                let (pending, again) = match self.probe.as_mut() {
                    Some(p) if p.seq == seq => {
                        let again = std::mem::replace(&mut p.deadline_passed, true);
                        (p.fallback == Fallback::Pending, again)
                    }
                    _ => return,
                };
                self.acks.remove(&seq);
                // A TCP fallback still in flight decides the probe when it
                // reports (the driver bounds it by the same deadline); if the
                // report never comes, a second deadline ends the probe anyway.
                if pending && !again {
                    self.schedule(now + self.cfg.probe_timeout, Timer::ProbeDeadline(seq));
                    return;
                }
                self.finish_probe(now);
            }
            Timer::RelayExpire(seq) => {
                self.relay_timers.remove(&seq);
                if let Some(AckHandler::Relay {
                    orig_seq,
                    reply_to,
                    reply_node,
                    nack: true,
                }) = self.acks.remove(&seq)
                {
                    let nack = Message::Nack(Nack { seq_no: orig_seq });
                    self.send_msg(reply_to, reply_node.as_deref(), &nack);
                }
            }
            Timer::Suspicion(node) => self.suspicion_expired(now, node),
        }
    }

    // ----------------------------------------------------------------- probe

    fn start_probe(&mut self, now: Instant) {
        let mut checked = 0;
        loop {
            if checked >= self.nodes.len() {
                return;
            }
            if self.probe_index >= self.nodes.len() {
                self.reset_nodes(now);
                self.probe_index = 0;
                checked += 1;
                continue;
            }
            let name = self.nodes[self.probe_slot(self.probe_index)].clone();
            self.probe_index += 1;
            let skip = *name == *self.me
                || self
                    .map
                    .get(&name)
                    .is_none_or(|n| n.state.is_dead_or_left());
            if skip {
                checked += 1;
                continue;
            }
            self.probe_node(now, name);
            return;
        }
    }

    fn probe_node(&mut self, now: Instant, target: Arc<str>) {
        let Some(node) = self.map.get(&target).cloned() else {
            return;
        };
        self.stats.probes += 1;
        let interval = self.awareness.scale(self.cfg.probe_interval);
        let seq = self.next_seq();
        let ping = Message::Ping(Ping {
            seq_no: seq,
            node: node.name.to_string(),
            source_addr: Some(self.advertise),
            source_node: self.me.to_string(),
        });
        if node.state == NodeStateKind::Alive {
            self.send_msg(node.addr, Some(&node.name), &ping);
        } else {
            // Buddy system: tell a suspect it is suspected, in the probe
            // itself, so it can refute at once.
            let suspect = Message::Suspect(Suspect {
                incarnation: node.incarnation,
                node: node.name.to_string(),
                from: self.me.to_string(),
            });
            let parts = vec![self.part(&ping), self.part(&suspect)];
            self.raw_send(node.addr, Some(node.pmax()), parts);
        }
        self.acks.insert(seq, AckHandler::Probe);
        let timeout_key = self.schedule(now + self.cfg.probe_timeout, Timer::ProbeTimeout(seq));
        let deadline_key = self.schedule(now + interval, Timer::ProbeDeadline(seq));
        self.probe = Some(ProbeRun {
            seq,
            target: node.name.clone(),
            target_incarnation: node.incarnation,
            sent: now,
            indirect: false,
            expected_nacks: 0,
            nacks: 0,
            fallback: Fallback::NotTried,
            deadline_passed: false,
            timeout_key,
            deadline_key,
        });
    }

    fn probe_timed_out(&mut self, now: Instant, seq: u32) {
        let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) else {
            return;
        };
        p.indirect = true;
        let target_name = p.target.clone();
        let deadline = p.deadline_key.0;
        let Some(target) = self.map.get(&target_name).cloned() else {
            return;
        };
        let me = self.me.clone();
        let peers = self.k_random_nodes(self.cfg.indirect_checks, |n| {
            *n.name == *me || *n.name == *target_name || n.state != NodeStateKind::Alive
        });
        let mut expected = 0;
        for peer in &peers {
            // Only protocol 4+ peers send nacks.
            let nack = peer.pmax() >= 4;
            expected += nack as usize;
            let ind = Message::IndirectPing(IndirectPing {
                seq_no: seq,
                target: target.addr,
                node: target.name.to_string(),
                nack,
                source_addr: Some(self.advertise),
                source_node: self.me.to_string(),
            });
            self.stats.indirect_probes += 1;
            self.send_msg(peer.addr, Some(&peer.name), &ind);
        }
        let tcp = !self.cfg.disable_tcp_pings && target.pmax() >= 3;
        if tcp {
            let ping = StreamMessage::Ping(Ping {
                seq_no: seq,
                node: target.name.to_string(),
                source_addr: Some(self.advertise),
                source_node: self.me.to_string(),
            });
            self.open_stream(
                now,
                target.addr,
                ping,
                deadline,
                true,
                PendingStream::FallbackPing { seq },
            );
        }
        if let Some(p) = self.probe.as_mut() {
            p.expected_nacks = expected;
            if tcp {
                p.fallback = Fallback::Pending;
            }
        }
    }

    fn probe_acked(&mut self, now: Instant, payload: Vec<u8>) {
        let Some(p) = self.probe.take() else {
            return;
        };
        self.timers.remove(&p.timeout_key);
        self.timers.remove(&p.deadline_key);
        self.awareness.apply(-1);
        if !p.indirect {
            self.outputs.push_back(Output::PingComplete(PingComplete {
                node: p.target.to_string(),
                rtt: now - p.sent,
                payload,
            }));
        }
        self.probe_done(now);
    }

    /// Ends the current probe at its deadline with no UDP ack.
    fn finish_probe(&mut self, now: Instant) {
        let Some(p) = self.probe.take() else {
            return;
        };
        self.timers.remove(&p.timeout_key);
        if p.fallback == Fallback::Succeeded {
            tracing::warn!(
                node = %self.me, peer = %p.target,
                "reached peer over TCP but not UDP; the network may be misconfigured"
            );
            self.awareness.apply(-1);
        } else {
            // With nack-capable helpers, missing nacks point at us rather
            // than at the target (Lifeguard); without them any failure counts.
            let delta = if p.expected_nacks > 0 {
                p.expected_nacks.saturating_sub(p.nacks) as i64
            } else {
                1
            };
            self.awareness.apply(delta);
            self.stats.probes_failed += 1;
            let s = Suspect {
                incarnation: p.target_incarnation,
                node: p.target.to_string(),
                from: self.me.to_string(),
            };
            self.suspect_node(now, &s, true);
        }
        self.probe_done(now);
    }

    fn probe_done(&mut self, now: Instant) {
        if std::mem::take(&mut self.probe_tick_missed) {
            self.start_probe(now);
        }
    }

    /// At the end of each probe round: forget nodes dead for longer than
    /// `gossip_to_the_dead_time`, and shuffle the probe order.
    fn reset_nodes(&mut self, now: Instant) {
        let keep_for = self.cfg.gossip_to_the_dead_time;
        let map = &self.map;
        let expired =
            |s: &NodeState| s.state == NodeStateKind::Dead && now - s.state_change > keep_for;
        // A shared order with nobody to forget stays shared: a fresh random
        // walk through it is this node's reshuffle.
        if self.probe_walk.is_some()
            && !self
                .nodes
                .iter()
                .any(|n| map.get(n).is_none_or(|s| expired(s)))
        {
            self.probe_walk = Some(self.random_walk());
            return;
        }
        let (mut keep, gone): (Vec<_>, Vec<_>) = self
            .nodes
            .iter()
            .cloned()
            .partition(|n| map.get(n).is_some_and(|s| !expired(s)));
        for n in gone {
            self.map.remove(&n);
            self.suspicions.remove(&n);
        }
        for i in (1..keep.len()).rev() {
            let j = self.rng.random_range(0..=i);
            keep.swap(i, j);
        }
        self.nodes = keep.into_iter().collect();
        self.probe_walk = None;
    }

    /// The slot of the probe order visited at step `i` of this round.
    fn probe_slot(&self, i: usize) -> usize {
        match self.probe_walk {
            Some(w) if i < w.len => w.slot(i),
            // Past the walk: members added since, in the order they came.
            _ => i,
        }
    }

    /// A random walk through the whole probe order: a random start and a
    /// random stride prime to the length visit every member once, and at
    /// any moment each member is probed by as many nodes as under private
    /// shuffles (each node lands on it with chance 1/N, independently).
    fn random_walk(&mut self) -> Walk {
        let len = self.nodes.len();
        let stride = if len > 1 {
            loop {
                let a = self.rng.random_range(1..len);
                if gcd(a, len) == 1 {
                    break a;
                }
            }
        } else {
            1
        };
        let offset = if len > 0 {
            self.rng.random_range(0..len)
        } else {
            0
        };
        Walk {
            offset,
            stride,
            len,
        }
    }

    /// Up to `k` distinct random nodes not rejected by `exclude` (memberlist's
    /// `kRandomNodes`: at most 3n draws, so small clusters are searched
    /// exhaustively and large ones cheaply).
    fn k_random_nodes(
        &mut self,
        k: usize,
        exclude: impl Fn(&NodeState) -> bool,
    ) -> Vec<Arc<NodeState>> {
        let n = self.nodes.len();
        let mut out: Vec<Arc<NodeState>> = Vec::with_capacity(k);
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

    // --------------------------------------------------------- ping handlers

    fn handle_ping(&mut self, from: SocketAddr, p: Ping) {
        if !p.node.is_empty() && *p.node != *self.me {
            self.stats.misdirected_pings += 1;
            tracing::debug!(node = %self.me, %from, to = %p.node, "ping for another node");
            return;
        }
        let ack = Message::Ack(Ack {
            seq_no: p.seq_no,
            payload: self.ack_payload.clone(),
        });
        let to = p.source_addr.unwrap_or(from);
        let name = (!p.source_node.is_empty()).then_some(p.source_node);
        self.send_msg(to, name.as_deref(), &ack);
        // Beyond memberlist: a ping from a member we hold suspect or dead
        // proves it is alive and has not heard the accusation (say, it was
        // cut off while it was declared dead, and the notices are spent).
        // Tell it, so it refutes now rather than at the next reconnect.
        let accused = name
            .as_deref()
            .and_then(|n| self.map.get(n))
            .filter(|st| matches!(st.state, NodeStateKind::Suspect | NodeStateKind::Dead))
            .filter(|st| wire::canonical(st.addr) == wire::canonical(to))
            .map(|st| (st.pmax(), st.incarnation, st.name.to_string()));
        if let Some((pmax, incarnation, node)) = accused {
            self.stats.accusations_told += 1;
            let s = Message::Suspect(Suspect {
                incarnation,
                node,
                from: self.me.to_string(),
            });
            let parts = vec![self.part(&s)];
            self.raw_send(to, Some(pmax), parts);
        }
    }

    fn handle_indirect_ping(&mut self, now: Instant, from: SocketAddr, ind: IndirectPing) {
        let local_seq = self.next_seq();
        let mut target = ind.target;
        if target.port() == 0 {
            target.set_port(self.advertise.port());
        }
        let reply_node =
            (!ind.source_node.is_empty()).then(|| Arc::<str>::from(ind.source_node.as_str()));
        self.acks.insert(
            local_seq,
            AckHandler::Relay {
                orig_seq: ind.seq_no,
                reply_to: ind.source_addr.unwrap_or(from),
                reply_node,
                nack: ind.nack,
            },
        );
        let key = self.schedule(now + self.cfg.probe_timeout, Timer::RelayExpire(local_seq));
        self.relay_timers.insert(local_seq, key);
        let ping = Message::Ping(Ping {
            seq_no: local_seq,
            node: ind.node.clone(),
            source_addr: Some(self.advertise),
            source_node: self.me.to_string(),
        });
        self.send_msg(target, Some(&ind.node), &ping);
    }

    fn handle_ack(&mut self, now: Instant, ack: Ack) {
        match self.acks.remove(&ack.seq_no) {
            Some(AckHandler::Probe) => self.probe_acked(now, ack.payload),
            Some(AckHandler::Verify(node)) => {
                if let Some(v) = self.verifying.get_mut(&node) {
                    v.1 = true;
                }
                // The suspect is alive, yet its refutation may never reach
                // us: if the others had declared *us* dead (we were the one
                // cut off), nobody gossips to us and our push/pull partners
                // are all suspects. Sync state with the suspect directly: we
                // learn its refutation, and of our own death to refute.
                if let Some(addr) = self.map.get(&node).map(|s| s.addr) {
                    self.push_pull_with(now, addr);
                }
            }
            Some(AckHandler::Relay {
                orig_seq,
                reply_to,
                reply_node,
                ..
            }) => {
                if let Some(key) = self.relay_timers.remove(&ack.seq_no) {
                    self.timers.remove(&key);
                }
                let fwd = Message::Ack(Ack {
                    seq_no: orig_seq,
                    payload: Vec::new(),
                });
                self.send_msg(reply_to, reply_node.as_deref(), &fwd);
            }
            None => {}
        }
    }

    fn handle_nack(&mut self, nack: Nack) {
        if let Some(p) = self.probe.as_mut() {
            if p.seq == nack.seq_no
                && matches!(self.acks.get(&nack.seq_no), Some(AckHandler::Probe))
            {
                p.nacks += 1;
            }
        }
    }

    // ----------------------------------------------------------- membership

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn next_incarnation(&mut self) -> u32 {
        self.incarnation = self.incarnation.saturating_add(1);
        self.incarnation
    }

    fn event(&mut self, now: Instant, kind: EventKind, name: &str) {
        if let Some(n) = self.map.get(name) {
            let node = n.info();
            self.outputs.push_back(Output::Event(Box::new(MemberEvent {
                at: now,
                kind,
                node,
            })));
        }
    }

    fn broadcast(&mut self, now: Instant, node: &Arc<str>, msg: &Message, notify: Option<u64>) {
        self.enqueue(now, Some(node), msg, notify);
    }

    /// Queues an application message (a memberlist "user" message) to
    /// piggyback on gossip and probes like membership news; receivers get
    /// it as [`Output::User`]. Whether the message was small enough to
    /// gossip.
    pub fn broadcast_user(&mut self, now: Instant, payload: Vec<u8>) -> bool {
        self.enqueue(now, None, &Message::User(payload), None)
    }

    /// Queues `msg`; news about a member (`about`) replaces older news
    /// about it. Whether it was queued.
    fn enqueue(
        &mut self,
        now: Instant,
        about: Option<&Arc<str>>,
        msg: &Message,
        notify: Option<u64>,
    ) -> bool {
        let bytes = msg.to_bytes();
        // A message that can never fit a packet would sit in the queue for
        // ever (it is never sent, so never retired) and crowd out the rest.
        if bytes.len() + COMPOUND_OVERHEAD + COMPOUND_HEADER_OVERHEAD > self.cfg.udp_buffer_size {
            tracing::warn!(node = %self.me, about = ?about, len = bytes.len(), "message too large to gossip; dropped");
            if notify == Some(LEAVE_TOKEN) {
                self.leave_complete();
            }
            return false;
        }
        // Queued messages live long and there is one per member: keep only
        // their bytes, not the encoder's spare capacity.
        let part = Part {
            bytes: Bytes::from(bytes.into_boxed_slice()),
            msg: self.typed.then(|| Arc::new(msg.clone())),
        };
        match about {
            Some(node) if **node == *self.me => {
                self.broadcasts
                    .push_pinned(Some(node.clone()), part, notify)
            }
            about => self.broadcasts.push(about.cloned(), part, notify),
        }
        self.wake_gossip(now);
        self.check_finished();
        true
    }

    fn leave_complete(&mut self) {
        if !std::mem::replace(&mut self.leave_reported, true) {
            self.outputs.push_back(Output::LeaveComplete);
        }
    }

    fn check_finished(&mut self) {
        for token in self.broadcasts.take_finished() {
            if token == LEAVE_TOKEN {
                self.leave_complete();
            }
        }
    }

    fn any_alive(&self) -> bool {
        self.map
            .values()
            .any(|n| *n.name != *self.me && !n.state.is_dead_or_left())
    }

    /// Bumps our incarnation past `accused` and gossips that we are alive.
    fn refute(&mut self, now: Instant, accused: u32) {
        let mut inc = self.next_incarnation();
        if accused >= inc {
            inc = accused.saturating_add(1);
            self.incarnation = inc;
        }
        self.awareness.apply(1);
        self.stats.refutations += 1;
        let (name, alive) = {
            let Some(mut me) = self.map.state_mut(&self.me) else {
                return;
            };
            me.incarnation = inc;
            let alive = Message::Alive(Alive {
                incarnation: inc,
                node: me.name.to_string(),
                addr: me.addr,
                meta: me.meta.clone(),
                vsn: Some(me.vsn),
            });
            (me.name.clone(), alive)
        };
        self.broadcast(now, &name, &alive, None);
        self.event(now, EventKind::Refuted, &name);
    }

    fn alive_node(&mut self, now: Instant, a: &AliveRef<'_>, bootstrap: bool) {
        let is_local = *a.node == *self.me;
        if self.left && is_local {
            return;
        }
        if let Some(v) = a.vsn {
            if v[0] == 0 || v[1] == 0 || v[0] > v[1] {
                tracing::warn!(node = %self.me, peer = %a.node, vsn = ?v, "ignoring alive message with invalid protocol versions");
                return;
            }
        }
        let mut updates_node = false;
        let name: Arc<str> = match self.map.get_key_value(a.node) {
            Some((name, state)) => {
                if state.addr != a.addr {
                    let reclaim = !self.cfg.dead_node_reclaim_time.is_zero()
                        && now - state.state_change > self.cfg.dead_node_reclaim_time;
                    if state.state == NodeStateKind::Left
                        || (state.state == NodeStateKind::Dead && reclaim)
                    {
                        tracing::info!(node = %self.me, peer = %a.node, old = %state.addr, new = %a.addr, "address of a departed node taken over");
                        updates_node = true;
                    } else {
                        self.stats.address_conflicts += 1;
                        tracing::error!(node = %self.me, peer = %a.node, ours = %state.addr, theirs = %a.addr, "conflicting address for node");
                        return;
                    }
                }
                // Most alive messages repeat what is known: done with one
                // lookup.
                if a.incarnation <= state.incarnation && !is_local && !updates_node {
                    return;
                }
                name.clone()
            }
            None => {
                let name = memo::name(a.node);
                self.map.insert(
                    name.clone(),
                    NodeState {
                        name: name.clone(),
                        addr: a.addr,
                        meta: a.meta.to_vec(),
                        incarnation: 0,
                        state: NodeStateKind::Dead,
                        state_change: now,
                        vsn: a.vsn.unwrap_or_default(),
                    },
                );
                // A random slot, not the end: appending would leave new nodes
                // unprobed for a whole round and stretch detection times.
                // Walking a shared order, though, moving a member would
                // break the walk: the newcomer goes after it, still this
                // round.
                let n = self.nodes.len();
                self.nodes.push_back(name.clone());
                if self.probe_walk.is_none() && n > 0 {
                    let offset = self.rng.random_range(0..n);
                    self.nodes.swap(offset, n);
                }
                name
            }
        };
        let Some(state) = self.map.get(&name) else {
            return;
        };
        if a.incarnation <= state.incarnation && !is_local && !updates_node {
            return;
        }
        if a.incarnation < state.incarnation && is_local {
            return;
        }
        let old_state = state.state;
        let old_meta_differs = state.meta[..] != *a.meta;
        let changed = old_meta_differs || a.vsn.is_some_and(|v| v != state.vsn);
        let identical =
            a.incarnation == state.incarnation && !old_meta_differs && a.vsn == Some(state.vsn);
        self.clear_suspicion(&name);
        if !bootstrap && is_local {
            // Someone gossips an alive message about us that is not ours
            // (we restarted, or our old self is remembered): outbid it unless
            // it says exactly what we would say.
            if identical {
                return;
            }
            self.refute(now, a.incarnation);
            return;
        }
        self.broadcast(now, &name, &Message::Alive(a.to_owned()), None);
        {
            let Some(mut state) = self.map.state_mut(&name) else {
                return;
            };
            if let Some(v) = a.vsn {
                state.vsn = v;
            }
            state.incarnation = a.incarnation;
            state.meta = a.meta.to_vec();
            state.addr = a.addr;
            if state.state != NodeStateKind::Alive {
                state.state = NodeStateKind::Alive;
                state.state_change = now;
            }
        }
        match old_state {
            NodeStateKind::Dead | NodeStateKind::Left => self.event(now, EventKind::Joined, &name),
            NodeStateKind::Suspect => {
                self.event(now, EventKind::Alive, &name);
                if changed {
                    self.event(now, EventKind::Updated, &name);
                }
            }
            NodeStateKind::Alive if changed => self.event(now, EventKind::Updated, &name),
            NodeStateKind::Alive => {}
        }
    }

    fn clear_suspicion(&mut self, name: &Arc<str>) {
        self.suspicions.remove(name);
        if let Some((seq, _)) = self.verifying.remove(name) {
            self.acks.remove(&seq);
        }
    }

    /// Handles a suspicion. `witnessed` is false for suspicions learned from
    /// another member's state in push/pull: those are hearsay, so they are
    /// adopted locally but neither re-broadcast nor counted as Lifeguard
    /// confirmations (see `merge_remote`).
    fn suspect_node(&mut self, now: Instant, s: &Suspect, witnessed: bool) {
        let Some((name, state)) = self.map.get_key_value(s.node.as_str()) else {
            return;
        };
        let name = name.clone();
        if s.incarnation < state.incarnation {
            return;
        }
        let from: Arc<str> = Arc::from(s.from.as_str());
        if *name == *self.me && s.incarnation == u32::MAX {
            // Nothing can outbid it: only a broken or hostile peer sends it.
            tracing::warn!(node = %self.me, from = %s.from, "ignoring a suspicion at the largest incarnation");
            return;
        }
        if let Some(susp) = self.suspicions.get_mut(&name) {
            if witnessed && susp.confirm(&from) {
                let deadline = susp.deadline;
                self.arm_suspicion(name.clone(), deadline);
                self.broadcast(now, &name, &Message::Suspect(s.clone()), None);
            }
            return;
        }
        if state.state != NodeStateKind::Alive {
            return;
        }
        if *name == *self.me {
            tracing::warn!(node = %self.me, from = %s.from, "refuting a suspicion about us");
            self.refute(now, s.incarnation);
            return;
        }
        if witnessed {
            self.broadcast(now, &name, &Message::Suspect(s.clone()), None);
        }
        if let Some(mut state) = self.map.state_mut(&name) {
            state.incarnation = s.incarnation;
            state.state = NodeStateKind::Suspect;
            state.state_change = now;
        }
        // Expect k independent confirmations, two probe intervals short of
        // the multiplier; none when the cluster is too small to give them.
        let n = self.nodes.len();
        let mut k = self.cfg.suspicion_mult as i64 - 2;
        if (n as i64) - 2 < k {
            k = 0;
        }
        let min = self.cfg.suspicion_timeout(n);
        let max = min * self.cfg.suspicion_max_timeout_mult as u32;
        let susp = Suspicion::new(witnessed.then_some(from), k, min, max, now);
        let deadline = susp.deadline;
        self.suspicions.insert(name.clone(), susp);
        self.arm_suspicion(name.clone(), deadline);
        self.event(now, EventKind::Suspect, &name);
    }

    fn arm_suspicion(&mut self, name: Arc<str>, at: Instant) {
        self.schedule(at, Timer::Suspicion(name));
    }

    fn suspicion_expired(&mut self, now: Instant, name: Arc<str>) {
        let Some(susp) = self.suspicions.get(&name) else {
            return;
        };
        // A confirmation moved the deadline (another timer is armed for it).
        if susp.deadline > now {
            return;
        }
        let confirmations = susp.confirmations();
        let unconfirmed = confirmations == 0 && susp.expected() > 0;
        let change = susp.state_change;
        let Some(state) = self.map.get(&name) else {
            return;
        };
        let incarnation = state.incarnation;
        if state.state != NodeStateKind::Suspect || state.state_change != change {
            self.clear_suspicion(&name);
            return;
        }
        // Our own bad health makes our judgement suspect even when others
        // agree: they may have been cut off with us, and their suspicions
        // confirm ours for no good reason once the cut heals.
        if (unconfirmed || self.awareness.score() > 0) && self.reconsider(now, &name, unconfirmed) {
            return;
        }
        tracing::info!(node = %self.me, peer = %name, confirmations, "suspicion timed out; marking failed");
        let d = Dead {
            incarnation,
            node: name.to_string(),
            from: self.me.to_string(),
        };
        self.dead_node(now, &d);
    }

    /// Beyond memberlist: a suspicion no other member confirmed rests on our
    /// own failed probe alone, possibly long ago, and a confirmed one is
    /// only as good as our own health. Before condemning the node: if the
    /// suspicion is unconfirmed and our health is degraded, we are the
    /// likelier culprit (cut off, or overloaded), so say the suspicion again
    /// and wait another full period; otherwise ping the suspect once more,
    /// with the suspicion in front so a live suspect refutes at once, and
    /// condemn it only if that goes unanswered. Returns true if the verdict
    /// is postponed.
    fn reconsider(&mut self, now: Instant, name: &Arc<str>, unconfirmed: bool) -> bool {
        let Some(state) = self.map.get(name).cloned() else {
            return false;
        };
        let suspect = Message::Suspect(Suspect {
            incarnation: state.incarnation,
            node: name.to_string(),
            from: self.me.to_string(),
        });
        // Whether to say the suspicion again, in our name, when extending it.
        let announce = match self.verifying.remove(name) {
            Some((seq, answered)) => {
                self.acks.remove(&seq);
                if !answered {
                    return false;
                }
                // Alive after all; its refutation is on its way (or it
                // already stands at a higher incarnation than we know).
                // Gossiping the suspicion now would only add a confirmation
                // against a node we just heard from.
                self.stats.verifications_answered += 1;
                false
            }
            None if unconfirmed && self.awareness.score() > 0 => {
                self.stats.suspicions_deferred += 1;
                // Re-say only what someone witnessed: hearsay stays hearsay.
                self.suspicions.get(name).is_some_and(Suspicion::witnessed)
            }
            None => {
                let seq = self.next_seq();
                self.stats.verifications += 1;
                self.verifying.insert(name.clone(), (seq, false));
                self.acks.insert(seq, AckHandler::Verify(name.clone()));
                let ping = Message::Ping(Ping {
                    seq_no: seq,
                    node: name.to_string(),
                    source_addr: Some(self.advertise),
                    source_node: self.me.to_string(),
                });
                let parts = vec![self.part(&suspect), self.part(&ping)];
                self.raw_send(state.addr, Some(state.pmax()), parts);
                let deadline = now + self.awareness.scale(self.cfg.probe_interval);
                self.postpone(name, deadline);
                return true;
            }
        };
        tracing::info!(node = %self.me, peer = %name, health = self.awareness.score(), "unconfirmed suspicion; extending it");
        let Some(deadline) = self.suspicions.get_mut(name).map(|s| {
            s.extend(now);
            s.deadline
        }) else {
            return false;
        };
        self.postpone(name, deadline);
        if announce {
            self.broadcast(now, name, &suspect, None);
        }
        true
    }

    fn postpone(&mut self, name: &Arc<str>, deadline: Instant) {
        if let Some(susp) = self.suspicions.get_mut(name) {
            susp.deadline = deadline;
        }
        self.arm_suspicion(name.clone(), deadline);
    }

    fn dead_node(&mut self, now: Instant, d: &Dead) {
        let Some((name, state)) = self.map.get_key_value(d.node.as_str()) else {
            return;
        };
        let name = name.clone();
        if d.incarnation < state.incarnation {
            return;
        }
        self.clear_suspicion(&name);
        let Some(state) = self.map.get(&name) else {
            return;
        };
        // A failed member can still be declared departed (a force-leave):
        // its own "dead" notice moves it from failed to left.
        let now_left = state.state == NodeStateKind::Dead && d.node == d.from;
        if state.state.is_dead_or_left() && !now_left {
            return;
        }
        let msg = Message::Dead(d.clone());
        if *name == *self.me {
            if !self.left && d.incarnation == u32::MAX {
                tracing::warn!(node = %self.me, from = %d.from, "ignoring a death notice at the largest incarnation");
                return;
            }
            if !self.left {
                tracing::warn!(node = %self.me, from = %d.from, "refuting a death notice about us");
                self.refute(now, d.incarnation);
                return;
            }
            self.broadcast(now, &name, &msg, Some(LEAVE_TOKEN));
        } else {
            self.broadcast(now, &name, &msg, None);
        }
        let left = d.node == d.from;
        if let Some(mut state) = self.map.state_mut(&name) {
            state.incarnation = d.incarnation;
            state.state = if left {
                NodeStateKind::Left
            } else {
                NodeStateKind::Dead
            };
            state.state_change = now;
        }
        let kind = if left {
            EventKind::Left
        } else {
            EventKind::Failed
        };
        self.event(now, kind, &name);
    }

    // ------------------------------------------------------------- push/pull

    /// Every member as this node sees it, by name: nodes that see the same
    /// pool send the same bytes (memberlist's own order, its shuffled probe
    /// list, says nothing the receiver uses; the member map's order
    /// depends on the order members were added). With the [`memo`] on,
    /// nodes whose tables agree share one state.
    fn local_state(&self, join: bool) -> Arc<PushPull> {
        let build = || {
            let mut nodes: Vec<PushNodeState> = self
                .map
                .values()
                .map(|n| PushNodeState {
                    name: n.name.to_string(),
                    addr: n.addr,
                    meta: n.meta.clone(),
                    incarnation: n.incarnation,
                    state: n.state,
                    vsn: Some(n.vsn),
                })
                .collect();
            nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            PushPull::new(join, nodes, Vec::new())
        };
        if !memo::enabled() {
            return Arc::new(build());
        }
        let (digest, len) = self.map.digest();
        memo::state((digest, len, join), build, |pp| pp.nodes.len())
    }

    /// Whether merging `pp` would change nothing here, known without
    /// merging it: it holds exactly our table (by digest, with the [`memo`]
    /// on), so every alive, suspect, dead and left record in it repeats
    /// ours at our incarnation, and each handler returns at its first
    /// check. The one side effect those handlers could have, dropping a
    /// suspicion, needs a suspicion of a member not suspect here, and
    /// there is none.
    fn holds_our_table(&self, pp: &PushPull) -> bool {
        if !memo::enabled() || pp.digest() != self.map.digest() {
            return false;
        }
        #[cfg(debug_assertions)]
        debug_assert_eq!(
            self.map.digest().0,
            self.map.digest_from_scratch(),
            "{}: the member digest drifted",
            self.me
        );
        self.suspicions.keys().all(|n| {
            self.map
                .get(n)
                .is_some_and(|s| s.state == NodeStateKind::Suspect)
        })
    }

    fn merge_remote(&mut self, now: Instant, pp: &PushPull) -> Result<(), String> {
        if self.holds_our_table(pp) {
            // The check runs over the union of both tables, here one table:
            // its verdict is the state's own.
            pp.memo
                .verified
                .get_or_init(|| self.verify_protocol(&pp.nodes))
                .clone()?;
            self.stats.push_pulls += 1;
            return Ok(());
        }
        self.verify_protocol(&pp.nodes)?;
        self.stats.push_pulls += 1;
        for r in &pp.nodes {
            match r.state {
                NodeStateKind::Alive => {
                    let mut addr = r.addr;
                    if addr.port() == 0 {
                        addr.set_port(self.advertise.port());
                    }
                    let a = AliveRef {
                        incarnation: r.incarnation,
                        node: &r.name,
                        addr,
                        meta: &r.meta,
                        vsn: r.vsn,
                    };
                    self.alive_node(now, &a, false);
                }
                NodeStateKind::Left => {
                    let d = Dead {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: r.name.clone(),
                    };
                    self.dead_node(now, &d);
                }
                // A remote death is only a suspicion here: it must be
                // confirmed locally, or refuted. memberlist re-issues it in
                // its own name and gossips it, so every member that merely
                // synced with the suspector counts as an independent
                // confirmation and Lifeguard cuts the timeout short: one
                // node's stale suspicion (say, from while it was cut off)
                // confirms itself through its own echoes. Here it is
                // hearsay: held locally (our probes carry it to the suspect,
                // which refutes), but not gossiped and not counted.
                NodeStateKind::Dead | NodeStateKind::Suspect => {
                    let s = Suspect {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: String::new(),
                    };
                    self.suspect_node(now, &s, false);
                }
            }
        }
        Ok(())
    }

    /// Checks that every live node, ours and theirs, speaks a protocol version
    /// every other live node understands (memberlist's `verifyProtocol`).
    fn verify_protocol(&self, remote: &[PushNodeState]) -> Result<(), String> {
        let (mut maxpmin, mut minpmax, mut maxdmin, mut mindmax) = (0u8, u8::MAX, 0u8, u8::MAX);
        let remote_alive = remote
            .iter()
            .filter(|r| r.state == NodeStateKind::Alive)
            .filter_map(|r| r.vsn);
        let local_alive = self
            .map
            .values()
            .filter(|n| n.state == NodeStateKind::Alive)
            .map(|n| n.vsn);
        for v in remote_alive.chain(local_alive) {
            maxpmin = maxpmin.max(v[0]);
            minpmax = minpmax.min(v[1]);
            maxdmin = maxdmin.max(v[3]);
            mindmax = mindmax.min(v[4]);
        }
        let remote_all = remote
            .iter()
            .map(|r| (r.name.as_str(), r.vsn.unwrap_or_default()));
        let local_all = self.map.values().map(|n| (&*n.name, n.vsn));
        for (name, v) in remote_all.chain(local_all) {
            if v[2] < maxpmin || v[2] > minpmax {
                return Err(format!(
                    "node '{name}' speaks protocol version {}, outside the cluster's [{maxpmin}, {minpmax}]",
                    v[2]
                ));
            }
            if v[5] < maxdmin || v[5] > mindmax {
                return Err(format!(
                    "node '{name}' speaks delegate protocol version {}, outside the cluster's [{maxdmin}, {mindmax}]",
                    v[5]
                ));
            }
        }
        Ok(())
    }

    fn push_pull(&mut self, now: Instant) {
        let me = self.me.clone();
        let peers = self.k_random_nodes(1, |n| *n.name == *me || n.state != NodeStateKind::Alive);
        if let Some(peer) = peers.into_iter().next() {
            self.push_pull_with(now, peer.addr);
        }
    }

    fn push_pull_with(&mut self, now: Instant, addr: SocketAddr) {
        let data = StreamMessage::PushPull(self.local_state(false));
        self.open_stream(
            now,
            addr,
            data,
            now + self.cfg.tcp_timeout,
            true,
            PendingStream::PushPull,
        );
    }

    // ---------------------------------------------------------------- gossip

    /// Arms the gossip tick at the grid's next point after `now`, if it
    /// sleeps: a node with nothing to say costs no wake-ups.
    fn wake_gossip(&mut self, now: Instant) {
        let (origin, armed) = self.gossip_clock;
        if armed {
            return;
        }
        let every = self.cfg.gossip_interval.as_nanos();
        let since = now.saturating_duration_since(origin).as_nanos();
        let ticks = (since / every + 1).min(u32::MAX as u128) as u32;
        let at = origin + self.cfg.gossip_interval * ticks;
        self.schedule(at, Timer::GossipTick);
        self.gossip_clock.1 = true;
    }

    fn gossip(&mut self, now: Instant) {
        // Nothing to say: no targets to pick (memberlist picks them first,
        // then finds nothing to send).
        if self.broadcasts.is_empty() {
            return;
        }
        let me = self.me.clone();
        let dead_time = self.cfg.gossip_to_the_dead_time;
        let targets = self.k_random_nodes(self.cfg.gossip_nodes, |n| {
            *n.name == *me
                || match n.state {
                    NodeStateKind::Alive | NodeStateKind::Suspect => false,
                    NodeStateKind::Dead => now - n.state_change > dead_time,
                    NodeStateKind::Left => true,
                }
        });
        let limit = self.cfg.udp_buffer_size - COMPOUND_HEADER_OVERHEAD;
        for node in targets {
            let msgs = self.take_broadcasts(limit, MAX_COMPOUND_PARTS);
            if msgs.is_empty() {
                return;
            }
            self.raw_send(node.addr, Some(node.pmax()), msgs);
        }
    }

    fn take_broadcasts(&mut self, limit: usize, max_parts: usize) -> Vec<Part> {
        let transmit_limit = self.cfg.retransmit_limit(self.nodes.len());
        let msgs = self
            .broadcasts
            .take(COMPOUND_OVERHEAD, limit, transmit_limit, max_parts);
        self.check_finished();
        msgs
    }

    /// Sends `msg`, piggybacking queued broadcasts when there is room.
    fn send_msg(&mut self, to: SocketAddr, node: Option<&str>, msg: &Message) {
        let first = self.part(msg);
        let pmax = node.and_then(|n| self.map.get(n)).map(|n| n.pmax());
        let avail = self
            .cfg
            .udp_buffer_size
            .saturating_sub(first.bytes.len() + COMPOUND_HEADER_OVERHEAD);
        // One part of the compound is the message itself.
        let extra = self.take_broadcasts(avail, MAX_COMPOUND_PARTS - 1);
        let mut parts = Vec::with_capacity(1 + extra.len());
        parts.push(first);
        parts.extend(extra);
        self.raw_send(to, pmax, parts);
    }

    /// `msg` ready to send.
    fn part(&self, msg: &Message) -> Part {
        Part {
            bytes: msg.to_bytes().into(),
            msg: self.typed.then(|| Arc::new(msg.clone())),
        }
    }

    /// Sends `parts` as one datagram: one message alone, more as a
    /// compound; compressed and checksummed as configured. With the codec
    /// skipped, the messages go as they are.
    fn raw_send(&mut self, to: SocketAddr, pmax: Option<u8>, parts: Vec<Part>) {
        let to = wire::canonical(to);
        self.stats.packets_sent += 1;
        if self.typed {
            let size = wire::compound_len(parts.iter().map(|p| p.bytes.len()));
            // A part queued before the codec was skipped has only bytes.
            let mut msgs = Vec::with_capacity(parts.len());
            for p in parts {
                match p.msg {
                    Some(m) => msgs.push(m),
                    None => {
                        wire::decode_packet(&p.bytes, &mut |m| msgs.extend(m.ok().map(Arc::new)))
                    }
                }
            }
            self.outputs.push_back(Output::Messages { to, msgs, size });
            return;
        }
        let mut data = match parts.as_slice() {
            [one] => one.bytes.to_vec(),
            _ => {
                let mut out = Vec::with_capacity(self.cfg.udp_buffer_size);
                let bytes: Vec<&[u8]> = parts.iter().map(|p| &p.bytes[..]).collect();
                wire::encode_compound(&bytes, &mut out);
                out
            }
        };
        if self.cfg.enable_compression {
            let c = wire::compress(&data);
            if c.len() < data.len() {
                data = c;
            }
        }
        if pmax.is_some_and(|p| p >= 5) {
            data = wire::add_crc(&data);
        }
        self.outputs.push_back(Output::Packet { to, data });
    }

    fn stream_bytes(&self, msg: &StreamMessage) -> Bytes {
        let encode = || {
            let raw = msg.to_bytes();
            Bytes::from(if self.cfg.enable_compression {
                wire::compress(&raw)
            } else {
                raw
            })
        };
        match msg {
            // A state shared by many nodes is encoded once per form, and
            // its bytes decode to it by lookup.
            StreamMessage::PushPull(pp) if memo::enabled() => {
                let slot = &pp.memo.encoded[usize::from(self.cfg.enable_compression)];
                let mut fresh = false;
                let bytes = slot.get_or_init(|| {
                    fresh = true;
                    encode()
                });
                if fresh {
                    memo::remember_stream(bytes, pp.clone());
                }
                bytes.clone()
            }
            _ => encode(),
        }
    }

    fn open_stream(
        &mut self,
        _now: Instant,
        to: SocketAddr,
        msg: StreamMessage,
        deadline: Instant,
        expect_reply: bool,
        kind: PendingStream,
    ) -> StreamId {
        self.next_stream += 1;
        let id = self.next_stream;
        self.streams.insert(id, kind);
        let size = msg.encoded_len();
        let (data, message) = if self.typed {
            (Bytes::new(), Some(msg))
        } else {
            (self.stream_bytes(&msg), None)
        };
        self.outputs
            .push_back(Output::Stream(Box::new(StreamRequest {
                id,
                to: wire::canonical(to),
                data,
                message,
                size,
                deadline,
                expect_reply,
            })));
        id
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
