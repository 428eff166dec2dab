//! The protocol engine: the same sans-IO gossip nodes ([`cairn::gossip::Node`]:
//! SWIM, Lifeguard, Serf's roster and Vivaldi) under a discrete-event
//! scheduler, with continuous virtual time, no tokio and no sockets, for
//! thousands of nodes.
//!
//! - Events wait in one queue ordered by (time, insertion number), so ties
//!   break the same way every run.
//! - Datagrams travel through the real codec: the bytes a node emits are
//!   the bytes its peer parses. What the network does to each is the shared
//!   [`Model`]'s (the full engine's too): lost, cut off, duplicated, held
//!   back, or delivered after the link's latency (drawn per pair without
//!   ever holding all N² pairs) plus jitter and slowness.
//! - A stream exchange (push/pull, TCP fallback probe) costs a handshake (a
//!   round trip), then the request's bytes one way and the reply's the
//!   other, each queued on its link and taking its transmission time (sized
//!   before compression, so skipping the codec changes nothing). It fails
//!   at its deadline when the peer is down, or the path is cut or clogged:
//!   the engine does not retransmit into a heal. Loss does not touch
//!   streams, as TCP retransmits.
//! - Every node's randomness is seeded from the run's seed, its name and
//!   its boot count, exactly as in the full engine.
//!
//! For large runs the trace keeps a sample of observers, coordinates are
//! scored on a sample of pairs, and `metrics.csv` follows a sample of nodes;
//! news spreading ([`Spread`]) and false failures are counted over everyone.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn::gossip::wire::{self, Message, StreamMessage};
use cairn::gossip::{tags, GossipOptions, KnownMembers, Node, Output, StreamId, StreamRequest};
use cairn::time::Instant;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::action::{starts_waiting, Action, NodeStatus, TimedAction};
use crate::engine::{NodeSample, RunOutput, SimError};
use crate::net::topology::Role;
use crate::net::{self, Bits, Model, Override};
use crate::output::spread::Spread;
use crate::output::trace::{Trace, TraceEvent};
use crate::scenario::select::resolve_names;
use crate::scenario::{Scenario, Start};
use crate::seed::derive_seed;
use crate::tomography::{percentile, Accuracy, PairError};
use crate::verdict::Outages;

/// The gossip port every simulated node uses.
const PORT: u16 = 8301;

/// How much of a large run is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// Nodes whose membership events go into the trace and that have a row
    /// in `metrics.csv` each second (all of them, up to this many).
    pub observed_nodes: usize,
    /// Node pairs whose coordinates are scored each second.
    pub scored_pairs: usize,
    /// Skip work whose result no output shows (on by default): nodes
    /// outside the observed sample send uncompressed (their byte counts
    /// are never reported, and their peers read the same messages either
    /// way), and the thread remembers what it compressed (see
    /// `cairn::gossip::lzw::memoize`). Off, every byte is compressed and
    /// decompressed; a test holds that every output is the same.
    pub shortcuts: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            observed_nodes: 500,
            scored_pairs: 20_000,
            shortcuts: true,
        }
    }
}

/// A datagram in flight: its bytes, or (codec skipped) its messages.
enum Datagram {
    Bytes(Vec<u8>),
    Values(Vec<Arc<Message>>),
}

enum Ev {
    /// A datagram arrives.
    Packet { to: u32, from: u32, data: Datagram },
    /// A stream's request arrives at the peer.
    /// (Streams are rare and their parts large: boxed, they keep every
    /// queued event small.)
    StreamIn {
        to: u32,
        from: u32,
        from_boot: u32,
        req: Box<StreamRequest>,
    },
    /// A stream's outcome reaches the node that opened it.
    StreamDone {
        to: u32,
        boot: u32,
        id: StreamId,
        result: Box<Result<Option<StreamMessage>, String>>,
    },
    /// A node's timers are due.
    Timer { node: u32, boot: u32 },
    /// A departing node that could not finish its leave stops anyway.
    LeaveDeadline { node: u32, boot: u32 },
    /// A node whose join found nobody tries again.
    Rejoin { node: u32, boot: u32 },
    /// A paused node's pause is over.
    Resume { node: u32, boot: u32 },
    /// The next scenario action is due.
    Action,
    /// Once a virtual second: score, sample, report progress.
    Sample,
}

impl Ev {
    /// The node whose process handles it, if one does.
    fn target(&self) -> Option<usize> {
        match self {
            Ev::Packet { to, .. } | Ev::StreamIn { to, .. } | Ev::StreamDone { to, .. } => {
                Some(*to as usize)
            }
            Ev::Timer { node, .. } | Ev::LeaveDeadline { node, .. } | Ev::Rejoin { node, .. } => {
                Some(*node as usize)
            }
            Ev::Resume { .. } | Ev::Action | Ev::Sample => None,
        }
    }
}

struct Queued {
    at: Instant,
    ev: Ev,
}

/// Events in order of (time, insertion number), so ties break the same way
/// every run. The heap holds small keys and the events wait in a slab:
/// sifting a key moves 24 bytes, not an event.
#[derive(Default)]
struct EventQueue {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    events: Vec<Option<Ev>>,
    free: Vec<u32>,
    seq: u64,
}

impl EventQueue {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.events[s as usize] = Some(ev);
                s
            }
            None => {
                self.events.push(Some(ev));
                (self.events.len() - 1) as u32
            }
        };
        let nanos = u64::try_from(at.as_duration().as_nanos()).unwrap_or(u64::MAX);
        self.heap.push(Reverse((nanos, self.seq, slot)));
    }

    fn pop(&mut self) -> Option<Queued> {
        let Reverse((nanos, _, slot)) = self.heap.pop()?;
        let ev = self.events.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some(Queued {
            at: Instant::from_duration(Duration::from_nanos(nanos)),
            ev,
        })
    }
}

struct Slot {
    node: Option<Node>,
    boot: u32,
    status: NodeStatus,
    /// The time of the timer event queued for this node, if any.
    armed: Option<Instant>,
    /// Join streams in flight, and whether any succeeded.
    joins: BTreeSet<StreamId>,
    joined: bool,
    /// UDP datagrams, UDP bytes, stream bytes sent; and at the last sample.
    sent: [u64; 3],
    sampled: [u64; 3],
    /// Frozen by a pause: what reaches it waits in `held`.
    paused: bool,
    held: Vec<Ev>,
}

/// The gossip address of node `i`.
fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::new(net::ip_of(i), PORT)
}

fn index_of(a: SocketAddr, n: usize) -> Option<usize> {
    net::index_of(a.ip(), n).filter(|_| a.port() == PORT)
}

struct Engine<'a> {
    s: &'a Scenario,
    seed: u64,
    n: usize,
    names: Vec<String>,
    slots: Vec<Slot>,
    queue: EventQueue,
    now: Instant,
    net: Model,
    events: u64,
    trace: Vec<TraceEvent>,
    observers: Bits,
    shortcuts: bool,
    /// The scored pairs' true RTTs (ms), and the model's latency epoch
    /// they were drawn at.
    true_rtt: (Option<u64>, Vec<f64>),
    spreads: Vec<Spread>,
    /// Per fact: who should hear of it, and who has.
    spread_audience: Vec<Bits>,
    spread_seen: Vec<Bits>,
    spreads_of: BTreeMap<String, Vec<usize>>,
    /// Every failure verdict: (observer, member, when).
    verdicts: Vec<(u32, u32, Duration)>,
    actions: &'a [TimedAction],
    next_action: usize,
    applied: Vec<TimedAction>,
}

/// Runs `scenario` with `seed` on the protocol engine.
pub fn run_protocol(
    scenario: &Scenario,
    seed: u64,
    actions: &[TimedAction],
    sampling: Sampling,
    mut progress: impl FnMut(Duration),
) -> Result<RunOutput, SimError> {
    let _memo = sampling.shortcuts.then(net::CodecMemo::on);
    let topo = &scenario.topology;
    if let Some(node) = topo.nodes.iter().find(|x| x.role == Role::Server) {
        return Err(SimError::Setup(format!(
            "{} is a server: servers run only on the full engine (--engine full)",
            node.name
        )));
    }
    if scenario.encrypt.is_some() {
        return Err(SimError::Setup(
            "gossip.encrypt: encryption is the agents' gossip driver's, which runs only on the full engine (--engine full)".into(),
        ));
    }
    if scenario.acl_default_allow.is_some() {
        return Err(SimError::Setup(
            "[acl]: ACLs are the agents' and servers', which run only on the full engine (--engine full)".into(),
        ));
    }
    let n = topo.nodes.len();
    let names = topo.names();
    let bits = |sel: &[crate::scenario::select::Selector]| {
        let names = resolve_names(sel, topo, seed, "link");
        Bits::of(n, names.iter().filter_map(|x| topo.index(x)))
    };
    let fixed = scenario
        .links
        .iter()
        .map(|r| Override {
            a: bits(&r.between.0),
            b: bits(&r.between.1),
            latency: r.latency.map(|d| d.max(Duration::from_micros(1))),
            loss: r.loss,
            bandwidth: r.bandwidth,
        })
        .collect();
    let net = Model::drawn(topo, seed, fixed).map_err(SimError::Setup)?;
    let mut pick_rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "", 0, "protocol-sampling"));
    let sample = |k: usize, rng: &mut ChaCha8Rng| -> Bits {
        let mut idx: Vec<usize> = (0..n).collect();
        if n > k {
            idx.shuffle(rng);
            idx.truncate(k);
        }
        Bits::of(n, idx)
    };
    let observers = sample(sampling.observed_nodes, &mut pick_rng);
    let pairs = scored_pairs(scenario, sampling.scored_pairs, &mut pick_rng);
    let mut e = Engine {
        s: scenario,
        seed,
        n,
        slots: Vec::with_capacity(n),
        queue: EventQueue::default(),
        now: Instant::from_duration(Duration::ZERO),
        net,
        events: 0,
        trace: Vec::new(),
        observers,
        shortcuts: sampling.shortcuts,
        true_rtt: (None, Vec::new()),
        spreads: Vec::new(),
        spread_audience: Vec::new(),
        spread_seen: Vec::new(),
        spreads_of: BTreeMap::new(),
        verdicts: Vec::new(),
        actions,
        next_action: 0,
        applied: Vec::new(),
        names,
    };
    for i in 0..n {
        e.slots.push(Slot {
            node: None,
            boot: 0,
            status: NodeStatus::Waiting,
            armed: None,
            joins: BTreeSet::new(),
            joined: false,
            sent: [0; 3],
            sampled: [0; 3],
            paused: false,
            held: Vec::new(),
        });
        if !starts_waiting(&e.names[i], actions) {
            if scenario.start == Start::Converged {
                e.boot(i)?;
            } else {
                e.start(i)?;
            }
        }
    }
    if scenario.start == Start::Converged {
        e.preload()?;
    }
    if !actions.is_empty() {
        e.push(actions[0].at, Ev::Action);
    }
    e.push(Duration::ZERO, Ev::Sample);
    let end = Instant::from_duration(scenario.duration);
    let mut accuracy = Vec::new();
    let mut samples = Vec::new();
    let mut final_pairs = Vec::new();
    while let Some(q) = e.queue.pop() {
        if q.at >= end && !matches!(q.ev, Ev::Sample) || q.at > end {
            break;
        }
        debug_assert!(q.at >= e.now, "an event scheduled in the past");
        e.now = q.at;
        e.events += 1;
        match q.ev {
            Ev::Sample => {
                let t = e.now.as_duration();
                progress(t);
                let (acc, scored) = e.score(&pairs);
                accuracy.extend(acc);
                e.sample(&scored, &mut samples);
                final_pairs = scored;
                if t < scenario.duration {
                    e.push(t + Duration::from_secs(1), Ev::Sample);
                }
            }
            Ev::Action => e.next_actions()?,
            ev => e.handle(ev)?,
        }
    }
    let observed = (n > sampling.observed_nodes).then(|| {
        (0..n)
            .filter(|&i| e.observers.has(i))
            .map(|i| e.names[i].clone())
            .collect()
    });
    let false_failures = e.false_failures();
    let mut trace = Trace { events: e.trace };
    trace.events.sort_by_key(|x| x.t_us);
    for f in &mut e.spreads {
        f.delays.sort();
    }

    Ok(RunOutput {
        trace,
        virtual_time: scenario.duration,
        steps: e.events,
        lossy_packets: e.net.lossy(),
        // The gossip core has no fault points.
        fault_points: Default::default(),
        accuracy,
        final_pairs,
        // The protocol engine runs no servers, so no WAN pool.
        wan_accuracy: Vec::new(),
        wan_pairs: Vec::new(),
        samples,
        applied: e.applied,
        spreads: e.spreads,
        false_failures: Some(false_failures),
        observed,
        history: Vec::new(),
        holds: Vec::new(),
        txns: Vec::new(),
        replicas: Vec::new(),
        // No servers lead here, so no placeholder stands for one.
        picks: Default::default(),
    })
}

/// Pairs of nodes in one pool to score: all of them when few enough,
/// else a seeded sample.
fn scored_pairs(s: &Scenario, want: usize, rng: &mut ChaCha8Rng) -> Vec<(usize, usize)> {
    let t = &s.topology;
    let n = t.nodes.len();
    let same = |i: usize, j: usize| t.pool_of(i) == t.pool_of(j);
    if n * n.saturating_sub(1) / 2 <= want {
        return (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .filter(|&(i, j)| same(i, j))
            .collect();
    }
    let mut set = BTreeSet::new();
    let mut tries = 0;
    while set.len() < want && tries < want * 20 {
        tries += 1;
        let (i, j) = (rng.random_range(0..n), rng.random_range(0..n));
        if i != j && same(i, j) {
            set.insert((i.min(j), i.max(j)));
        }
    }
    set.into_iter().collect()
}

impl Engine<'_> {
    fn push(&mut self, at: Duration, ev: Ev) {
        self.push_at(Instant::from_duration(at), ev);
    }

    fn push_at(&mut self, at: Instant, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.s.topology.index(name)
    }

    /// Boots node `i` (again), and joins it to its pool.
    fn start(&mut self, i: usize) -> Result<(), SimError> {
        self.boot(i)?;
        self.join(i);
        self.settle(i);
        Ok(())
    }

    /// Makes every node running now know every other running node of its
    /// pool, alive, from one table per pool that they all share; the trace
    /// says so once per pool (`converged`, naming the members).
    fn preload(&mut self) -> Result<(), SimError> {
        let topo = &self.s.topology;
        let mut pools: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in (0..self.n).filter(|&i| self.slots[i].node.is_some()) {
            pools.entry(topo.pool_of(i)).or_default().push(i);
        }
        for members in pools.into_values() {
            let infos = members
                .iter()
                .filter_map(|&i| self.slots[i].node.as_ref())
                .map(|node| node.core().local_node())
                .collect();
            let known =
                KnownMembers::new(infos, self.now).map_err(|e| SimError::Setup(e.to_string()))?;
            let names: Vec<&str> = members.iter().map(|&i| self.names[i].as_str()).collect();
            self.trace.push(TraceEvent {
                t_us: self.now.as_duration().as_micros() as u64,
                node: "sim".into(),
                event: "converged".into(),
                member: None,
                incarnation: None,
                detail: Some(names.join(",")),
            });
            for &i in &members {
                if let Some(node) = self.slots[i].node.as_mut() {
                    node.preload(&known, self.now)
                        .map_err(|e| SimError::Setup(format!("{}: {e}", self.names[i])))?;
                }
                self.settle(i);
            }
        }
        Ok(())
    }

    /// Boots node `i` (again), knowing only itself.
    fn boot(&mut self, i: usize) -> Result<(), SimError> {
        let topo = &self.s.topology;
        let slot = &mut self.slots[i];
        slot.boot += u32::from(slot.node.is_some() || slot.status != NodeStatus::Waiting);
        let boot = slot.boot;
        let name = self.names[i].clone();
        let mut opts = GossipOptions::new(name.clone(), addr_of(i), self.s.gossip.clone());
        // As the agent: Consul keeps failed members for 72 hours.
        opts.reconnect_timeout = Duration::from_secs(72 * 3600);
        if self.shortcuts && !self.observers.has(i) {
            // Compression changes only the byte counts, and this node's
            // are never reported.
            opts.config.enable_compression = false;
        }
        let dc = &topo.datacenters[topo.nodes[i].dc].name;
        let node_tags = [("role", "node"), ("dc", dc.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        opts.meta = tags::encode(&node_tags).map_err(SimError::Setup)?;
        let seed = self.seed;
        let mut node = Node::new(
            opts,
            addr_of(i),
            |p| derive_seed(seed, &name, boot as u64, p),
            self.now,
        )
        .map_err(|e| SimError::Setup(format!("{name}: {e}")))?;
        if !self.s.codec {
            node.skip_codec();
        }
        let slot = &mut self.slots[i];
        slot.node = Some(node);
        slot.status = NodeStatus::Running;
        slot.armed = None;
        slot.joins.clear();
        slot.joined = false;
        Ok(())
    }

    fn join(&mut self, i: usize) {
        let targets: Vec<SocketAddr> = self
            .s
            .topology
            .join_targets(i)
            .iter()
            .filter_map(|t| self.index(t))
            .map(addr_of)
            .collect();
        let now = self.now;
        let slot = &mut self.slots[i];
        if let Some(node) = slot.node.as_mut() {
            if !targets.is_empty() {
                slot.joins = node.join(now, &targets).into_iter().collect();
            }
        }
    }

    /// Carries out what node `i` asked for, and arms its next timer.
    fn settle(&mut self, i: usize) {
        let mut left = false;
        while let Some(out) = self.slots[i].node.as_mut().and_then(Node::poll_output) {
            match out {
                Output::Packet { to, data } => {
                    let size = data.len();
                    self.send(i, to, Datagram::Bytes(data), size)
                }
                Output::Messages { to, msgs, size } => {
                    self.send(i, to, Datagram::Values(msgs), size)
                }
                Output::Stream(req) => self.open_stream(i, *req),
                Output::Event(ev) => self.observe(i, *ev),
                Output::PingComplete(_) | Output::User(_) => {}
                // The rest of this round (the leave's last transmission
                // among it) still goes out.
                Output::LeaveComplete => left = true,
            }
        }
        if left {
            self.stop(i, NodeStatus::Left);
            return;
        }
        let slot = &mut self.slots[i];
        // A timer already due (a suspicion that confirmations shortened
        // into the past) is due now.
        let Some(t) = slot.node.as_ref().and_then(Node::poll_timeout) else {
            return;
        };
        let t = t.max(self.now);
        if slot.armed.is_none_or(|a| t < a) {
            slot.armed = Some(t);
            let boot = slot.boot;
            self.push_at(
                t,
                Ev::Timer {
                    node: i as u32,
                    boot,
                },
            );
        }
    }

    fn stop(&mut self, i: usize, status: NodeStatus) {
        let slot = &mut self.slots[i];
        if let (NodeStatus::Left, Some(node)) = (status, slot.node.as_mut()) {
            node.left(self.now);
        }
        slot.node = None;
        slot.status = status;
        slot.armed = None;
        slot.paused = false;
        slot.held.clear();
    }

    /// Lets paused node `i` run again: what reached it meanwhile arrives
    /// now, its timers late. `auto`: its pause ran out (the trace says so).
    fn resume(&mut self, i: usize, auto: bool) {
        let slot = &mut self.slots[i];
        if !slot.paused {
            return;
        }
        slot.paused = false;
        let held = std::mem::take(&mut slot.held);
        for ev in held {
            if let Ev::Timer { boot, .. } = ev {
                if boot != self.slots[i].boot {
                    continue;
                }
                self.slots[i].armed = Some(self.now);
            }
            self.push_at(self.now, ev);
        }
        if auto {
            let action = Action::Resume(vec![self.names[i].clone()]);
            let at = self.now.as_duration();
            self.trace.push(action.trace_event(at));
            self.applied.push(TimedAction { at, action });
        }
    }

    fn observe(&mut self, i: usize, ev: cairn::gossip::MemberEvent) {
        let kind = ev.kind.as_str();
        let member = &ev.node.name;
        if self.observers.has(i) {
            self.trace.push(TraceEvent {
                t_us: ev.at.as_duration().as_micros() as u64,
                node: self.names[i].clone(),
                event: kind.into(),
                member: Some(member.clone()),
                incarnation: Some(ev.node.incarnation),
                detail: None,
            });
        }
        if let Some(ks) = self.spreads_of.get(member) {
            // The newest fact about the member is the one told.
            if let Some(&k) = ks.last() {
                if self.spreads[k].told_by(kind)
                    && self.spread_audience[k].has(i)
                    && self.spread_seen[k].insert(i)
                {
                    let d = self.now.as_duration() - self.spreads[k].at;
                    self.spreads[k].delays.push(d);
                }
            }
        }
        if kind == "failed" {
            if let Some(m) = self.index(member) {
                self.verdicts
                    .push((i as u32, m as u32, self.now.as_duration()));
            }
        }
    }

    /// A new fact (a leave, crash or join that took effect): its audience
    /// is the member's pool, running at the time.
    fn announce(&mut self, member: usize, kind: &'static str) {
        let topo = &self.s.topology;
        let audience = Bits::of(
            self.n,
            (0..self.n).filter(|&o| {
                o != member
                    && topo.pool_of(o) == topo.pool_of(member)
                    && self.slots[o].status == NodeStatus::Running
            }),
        );
        let count = (0..self.n).filter(|&o| audience.has(o)).count();
        self.spreads_of
            .entry(self.names[member].clone())
            .or_default()
            .push(self.spreads.len());
        self.spreads.push(Spread {
            member: self.names[member].clone(),
            kind,
            at: self.now.as_duration(),
            audience: count,
            delays: Vec::new(),
        });
        self.spread_audience.push(audience);
        self.spread_seen.push(Bits::new(self.n));
    }

    /// Failure verdicts no outage explains, judged as the
    /// `no_false_failures` check judges them.
    fn false_failures(&self) -> u64 {
        let outages = Outages::from_timeline(&self.names, &self.applied);
        let window = crate::checks::detection_window(self.s);
        self.verdicts
            .iter()
            .filter(|&&(o, m, t)| {
                let from = t.saturating_sub(window);
                !outages.any_between(&self.names[m as usize], from, t)
                    && !outages.any_between(&self.names[o as usize], from, t)
            })
            .count() as u64
    }

    fn send(&mut self, i: usize, to: SocketAddr, data: Datagram, size: usize) {
        let s = &mut self.slots[i].sent;
        s[0] += 1;
        s[1] += size as u64;
        let Some(j) = index_of(to, self.n) else {
            return;
        };
        let arrivals = self.net.datagram(self.now, i, j);
        if let Some(again) = arrivals.again {
            let copy = match &data {
                Datagram::Bytes(b) => Datagram::Bytes(b.clone()),
                Datagram::Values(m) => Datagram::Values(m.clone()),
            };
            let (to, from) = (j as u32, i as u32);
            self.push_at(
                again,
                Ev::Packet {
                    to,
                    from,
                    data: copy,
                },
            );
        }
        if let Some(at) = arrivals.first {
            let (to, from) = (j as u32, i as u32);
            self.push_at(at, Ev::Packet { to, from, data });
        }
    }

    /// Opens a stream exchange: a handshake (a round trip), then the
    /// request's bytes over the link. A path stalled either way, or bytes
    /// that would arrive after the deadline, fail it at the deadline.
    fn open_stream(&mut self, i: usize, req: StreamRequest) {
        self.slots[i].sent[2] += req.data.len() as u64;
        let boot = self.slots[i].boot;
        let now = self.now;
        let len = req.size;
        let arrive = index_of(req.to, self.n)
            .filter(|&j| self.net.can_connect(i, j))
            .and_then(|j| {
                let open = now + self.net.latency(i, j) + self.net.latency(j, i);
                let at = self.net.stream_bytes(open, i, j, len)?;
                (at <= req.deadline).then_some((j, at))
            });
        let Some((j, at)) = arrive else {
            let result = Err(format!("no answer from {} in time", req.to));
            self.stream_done(req.deadline.max(now), i as u32, boot, req.id, result);
            return;
        };
        self.push_at(
            at,
            Ev::StreamIn {
                to: j as u32,
                from: i as u32,
                from_boot: boot,
                req: Box::new(req),
            },
        );
    }

    /// Reports a stream's outcome to node `to` (boot `boot`) at `at`.
    fn stream_done(
        &mut self,
        at: Instant,
        to: u32,
        boot: u32,
        id: StreamId,
        result: Result<Option<StreamMessage>, String>,
    ) {
        self.push_at(
            at,
            Ev::StreamDone {
                to,
                boot,
                id,
                result: Box::new(result),
            },
        );
    }

    fn handle(&mut self, ev: Ev) -> Result<(), SimError> {
        if let Some(i) = ev.target().filter(|&i| self.slots[i].paused) {
            self.slots[i].held.push(ev);
            return Ok(());
        }
        match ev {
            Ev::Packet { to, from, data } => {
                let (to, from) = (to as usize, from as usize);
                if let Some(node) = self.slots[to].node.as_mut() {
                    match data {
                        Datagram::Bytes(b) => node.handle_packet(self.now, addr_of(from), &b),
                        Datagram::Values(m) => node.handle_messages(self.now, addr_of(from), m),
                    }
                    self.settle(to);
                }
            }
            Ev::StreamIn {
                to,
                from,
                from_boot,
                req,
            } => {
                let StreamRequest {
                    id,
                    data,
                    message,
                    deadline,
                    expect_reply,
                    ..
                } = *req;
                let (to, from) = (to as usize, from as usize);
                let now = self.now;
                let late = |t: Instant| t > deadline;
                let fail = Err::<Option<StreamMessage>, String>(format!(
                    "no answer from {} in time",
                    addr_of(to)
                ));
                if self.slots[to].node.is_none() {
                    // A crashed host never answers; one that is up with
                    // nothing listening refuses at once.
                    let (at, result) = if self.slots[to].status == NodeStatus::Crashed {
                        (deadline.max(now), fail)
                    } else {
                        let back = now + self.net.latency(to, from);
                        (back, Err(format!("{} refused the connection", addr_of(to))))
                    };
                    self.stream_done(at, from as u32, from_boot, id, result);
                    return Ok(());
                }
                let Some(node) = self.slots[to].node.as_mut() else {
                    return Ok(());
                };
                // The reply: a value when the codec is skipped, else bytes.
                let reply = match message {
                    Some(msg) => node.handle_stream_message(now, addr_of(from), msg).map(Ok),
                    None => match wire::decode_stream(&data) {
                        Ok(Some((msg, _))) => node.handle_stream(now, addr_of(from), msg).map(Err),
                        _ => None,
                    },
                };
                self.settle(to);
                let result = match (expect_reply, reply) {
                    (false, _) => Ok(None),
                    (true, None) => Err("the peer closed the stream without answering".into()),
                    (true, Some(Ok(msg))) => Ok(Some(msg)),
                    (true, Some(Err(bytes))) => {
                        self.slots[to].sent[2] += bytes.len() as u64;
                        match wire::decode_stream(&bytes) {
                            Ok(Some((msg, _))) => Ok(Some(msg)),
                            Ok(None) => Err("a truncated reply".into()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                };
                // The reply's bytes cross the link back, sized before
                // compression so that skipping the codec times them alike.
                let back = match &result {
                    Ok(Some(msg)) => self.net.stream_bytes(now, to, from, msg.encoded_len()),
                    _ if self.net.stalled(to, from) => None,
                    _ => Some(now + self.net.latency(to, from)),
                };
                let (at, result) = match back {
                    Some(back) if !late(back) => (back, result),
                    _ => (deadline.max(now), fail),
                };
                self.stream_done(at, from as u32, from_boot, id, result);
            }
            Ev::StreamDone {
                to,
                boot,
                id,
                result,
            } => {
                let i = to as usize;
                let slot = &mut self.slots[i];
                if slot.boot != boot {
                    return Ok(());
                }
                let Some(node) = slot.node.as_mut() else {
                    return Ok(());
                };
                let ok = node.handle_stream_result(self.now, id, *result).is_ok();
                if slot.joins.remove(&id) {
                    slot.joined |= ok;
                    if slot.joins.is_empty() && !slot.joined {
                        // As retry_join: try again in a second.
                        self.push_at(
                            self.now + Duration::from_secs(1),
                            Ev::Rejoin { node: to, boot },
                        );
                    }
                }
                self.settle(i);
            }
            Ev::Timer { node, boot } => {
                let i = node as usize;
                let slot = &mut self.slots[i];
                if slot.boot != boot || slot.armed != Some(self.now) {
                    return Ok(());
                }
                slot.armed = None;
                if let Some(n) = slot.node.as_mut() {
                    n.handle_timeout(self.now);
                    self.settle(i);
                }
            }
            Ev::LeaveDeadline { node, boot } => {
                let i = node as usize;
                if self.slots[i].boot == boot && self.slots[i].node.is_some() {
                    self.stop(i, NodeStatus::Left);
                }
            }
            Ev::Rejoin { node, boot } => {
                let i = node as usize;
                if self.slots[i].boot == boot && self.slots[i].node.is_some() {
                    self.join(i);
                    self.settle(i);
                }
            }
            Ev::Resume { node, boot } => {
                let i = node as usize;
                if self.slots[i].boot == boot {
                    self.resume(i, true);
                }
            }
            Ev::Action | Ev::Sample => {}
        }
        Ok(())
    }

    fn next_actions(&mut self) -> Result<(), SimError> {
        while let Some(a) = self.actions.get(self.next_action) {
            if Instant::from_duration(a.at) > self.now {
                self.push(a.at, Ev::Action);
                break;
            }
            self.next_action += 1;
            let action = match a
                .action
                .effective(|x| self.index(x).map(|i| self.slots[i].status))
            {
                // No disks here: the crash strikes at once, and is one.
                Action::CrashInFsync(set) => Action::Crash(set),
                other => other,
            };
            if action.is_noop() {
                continue;
            }
            self.trace.push(action.trace_event(self.now.as_duration()));
            self.apply(&action)?;
            if let Some((set, kind)) = action.fact() {
                let members: Vec<usize> = set.iter().filter_map(|x| self.index(x)).collect();
                for m in members {
                    self.announce(m, kind);
                }
            }
            self.applied.push(TimedAction { at: a.at, action });
        }
        Ok(())
    }

    fn apply(&mut self, action: &Action) -> Result<(), SimError> {
        let topo = &self.s.topology;
        if self.net.apply(action, |x| topo.index(x)) {
            return Ok(());
        }
        match action {
            // No disks here: nothing waits for an fsync.
            Action::Crash(set) | Action::CrashInFsync(set) => {
                for x in set {
                    if let Some(i) = self.index(x) {
                        self.stop(i, NodeStatus::Crashed);
                    }
                }
            }
            Action::Restart(set) | Action::Join(set) => {
                for x in set {
                    if let Some(i) = self.index(x) {
                        self.start(i)?;
                    }
                }
            }
            Action::Leave(set) => {
                let wait = self.s.gossip.probe_interval * 5 + Duration::from_secs(5);
                for x in set {
                    let Some(i) = self.index(x) else { continue };
                    let boot = self.slots[i].boot;
                    if let Some(node) = self.slots[i].node.as_mut() {
                        node.leave(self.now);
                        // As in the full engine: gone from the moment it
                        // decides to leave, though it runs until its notice
                        // has spread (or the deadline).
                        self.slots[i].status = NodeStatus::Left;
                        self.settle(i);
                        self.push_at(
                            self.now + wait,
                            Ev::LeaveDeadline {
                                node: i as u32,
                                boot,
                            },
                        );
                    }
                }
            }
            Action::Pause(set, for_) => {
                for x in set {
                    let Some(i) = self.index(x) else { continue };
                    let slot = &mut self.slots[i];
                    if slot.node.is_none() || slot.paused {
                        continue;
                    }
                    slot.paused = true;
                    let (node, boot) = (i as u32, slot.boot);
                    if let Some(d) = for_ {
                        self.push_at(self.now + *d, Ev::Resume { node, boot });
                    }
                }
            }
            Action::Resume(set) => {
                for x in set {
                    if let Some(i) = self.index(x) {
                        self.resume(i, false);
                    }
                }
            }
            // Gossip reads no wall clock: a skew changes nothing here; and
            // there are no servers for KV clients to talk to (a scenario
            // with servers does not reach this engine).
            Action::Skew(..)
            | Action::KvLoad(..)
            | Action::RegisterService(..)
            | Action::Intention(..)
            | Action::CaRotate(_)
            | Action::AclToken(..) => {}
            // A push/pull here is one exchange in flight, not a connection
            // that a reset could cut (the full engine models TCP), and the
            // gossip core has no fault points.
            Action::TcpReset(_) | Action::Buggify(..) => {}
            // No disks here.
            Action::Corrupt(_) | Action::FsyncError(_) | Action::DiskFull(..) => {}
            // Gossip's timers here run on the engine's one clock.
            Action::Drift(..) | Action::ClockJump(..) => {}
            // The network's (handled above).
            Action::Isolate(_)
            | Action::Partition(..)
            | Action::OneWay(..)
            | Action::Heal
            | Action::HealBetween(..)
            | Action::Clog(..)
            | Action::Loss(_)
            | Action::LinkLoss(..)
            | Action::Latency(..)
            | Action::Slow(..) => {}
        }
        Ok(())
    }

    /// Scores the pairs whose both nodes run with a coordinate.
    fn score(&mut self, pairs: &[(usize, usize)]) -> (Option<Accuracy>, Vec<PairError>) {
        // The pairs' true RTTs, drawn again only when latencies change.
        let epoch = self.net.latency_epoch();
        if self.true_rtt.0 != Some(epoch) || self.true_rtt.1.len() != pairs.len() {
            let rtt = |&(i, j): &(usize, usize)| self.net.true_rtt(i, j).as_secs_f64() * 1000.0;
            self.true_rtt = (Some(epoch), pairs.iter().map(rtt).collect());
        }
        let coord = |i: usize| self.slots[i].node.as_ref().and_then(Node::coordinate);
        let mut scored = Vec::with_capacity(pairs.len());
        for (&(i, j), &true_ms) in pairs.iter().zip(&self.true_rtt.1) {
            let (Some(a), Some(b)) = (coord(i), coord(j)) else {
                continue;
            };
            scored.push(PairError {
                a: i,
                b: j,
                true_ms,
                est_ms: a.distance_secs(b) * 1000.0,
            });
        }
        if scored.is_empty() {
            return (None, scored);
        }
        let mut rel: Vec<f64> = scored.iter().map(PairError::rel).collect();
        rel.sort_by(f64::total_cmp);
        let abs: f64 = scored.iter().map(|p| (p.est_ms - p.true_ms).abs()).sum();
        let acc = Accuracy {
            at: self.now.as_duration(),
            pairs: scored.len(),
            median: percentile(&rel, 0.5),
            p90: percentile(&rel, 0.9),
            p99: percentile(&rel, 0.99),
            mean_abs_ms: abs / scored.len() as f64,
        };
        (Some(acc), scored)
    }

    /// A row for each observed node.
    fn sample(&mut self, scored: &[PairError], out: &mut Vec<NodeSample>) {
        let which = &self.observers;
        let mut errs: Vec<Vec<f64>> = vec![Vec::new(); self.n];
        for p in scored {
            for x in [p.a, p.b] {
                if which.has(x) {
                    errs[x].push(p.rel());
                }
            }
        }
        for i in (0..self.n).filter(|&i| self.observers.has(i)) {
            let slot = &mut self.slots[i];
            let d = |k: usize| slot.sent[k] - slot.sampled[k];
            let (p, b, t) = (d(0), d(1), d(2));
            slot.sampled = slot.sent;
            let v = &mut errs[i];
            let stats = (!v.is_empty()).then(|| {
                v.sort_unstable_by(f64::total_cmp);
                (percentile(v, 0.5), percentile(v, 0.9))
            });
            out.push(NodeSample {
                at: self.now.as_duration(),
                node: i,
                status: slot.status,
                udp_packets: p,
                udp_bytes: b,
                tcp_bytes: t,
                coord_median: stats.map(|s| s.0),
                coord_p90: stats.map(|s| s.1),
            });
        }
    }
}
