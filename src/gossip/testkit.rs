//! A deterministic in-memory network for testing [`Swim`] cores: virtual
//! time, fixed latency, random loss, directional partitions, crashes and
//! restarts, and TCP streams answered by the peer's core.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::core::MemberTable;
use super::wire::{self, NodeStateKind, StreamMessage};
use super::{Config, LocalNode, MemberEvent, Output, PingComplete, StreamRequest, Swim};
use crate::time::Instant;

enum Ev {
    Wake,
    Packet {
        from: SocketAddr,
        data: Vec<u8>,
    },
    StreamIn {
        from: usize,
        req: StreamRequest,
    },
    StreamResult {
        id: u64,
        epoch: u64,
        result: Result<Option<StreamMessage>, String>,
    },
}

struct Slot {
    name: String,
    addr: SocketAddr,
    swim: Option<Swim>,
    epoch: u64,
}

/// Called with a node's index and core after each step that touches it.
pub type StepHook = Box<dyn FnMut(usize, &Swim)>;

/// A simulated cluster of cores.
pub struct Net {
    pub now: Instant,
    slots: Vec<Slot>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, (usize, Ev)>,
    seq: u64,
    rng: ChaCha8Rng,
    seed: u64,
    cfg: Config,
    pub latency: Duration,
    pub loss: f64,
    blocked: BTreeSet<(usize, usize)>,
    /// Every membership event, with the observing node's index.
    pub events: Vec<(usize, MemberEvent)>,
    /// Every completed direct probe, with the prober's index.
    pub pings: Vec<(usize, PingComplete)>,
    /// Nodes that reported `LeaveComplete`.
    pub leave_complete: Vec<usize>,
    /// Every application message received, with the receiver's index.
    pub users: Vec<(usize, Vec<u8>)>,
    /// Called after every step that touches node `i`.
    pub after_step: Option<StepHook>,
}

/// The gossip address of node `i`.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)),
        7946,
    )
}

impl Net {
    /// `n` nodes named `n0..`, all joining through `n0` at time zero.
    pub fn new(n: usize, cfg: Config, seed: u64) -> Net {
        let mut net = Net {
            now: Instant::ZERO,
            slots: Vec::new(),
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            cfg,
            latency: Duration::from_millis(1),
            loss: 0.0,
            blocked: BTreeSet::new(),
            events: Vec::new(),
            pings: Vec::new(),
            leave_complete: Vec::new(),
            users: Vec::new(),
            after_step: None,
        };
        net.boot(n);
        for i in 1..n {
            net.join(i, 0);
        }
        net
    }

    /// Starts `n` more nodes, each knowing only itself.
    fn boot(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.slots.len();
            self.slots.push(Slot {
                name: format!("n{i}"),
                addr: addr(i),
                swim: None,
                epoch: 0,
            });
            self.start(i);
        }
    }

    /// `n` nodes that start converged: each preloaded with one shared
    /// table of all of them, alive, and no join at all.
    pub fn converged(n: usize, cfg: Config, seed: u64) -> Net {
        let mut net = Net::new(0, cfg, seed);
        net.boot(n);
        let infos: Vec<_> = net
            .slots
            .iter()
            .filter_map(|s| s.swim.as_ref())
            .map(Swim::local_node)
            .collect();
        let table = MemberTable::new(infos, net.now).expect("distinct names");
        for i in 0..n {
            let now = net.now;
            net.with_swim(i, |s, _| s.preload(&table, now).expect("a fresh node"));
        }
        net
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    fn start(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.epoch += 1;
        let seed = self.seed ^ ((i as u64) << 32) ^ slot.epoch;
        let local = LocalNode {
            name: slot.name.clone(),
            addr: slot.addr,
            meta: Vec::new(),
        };
        slot.swim = Some(Swim::new(self.cfg.clone(), local, seed, self.now).expect("valid config"));
        self.drain(i);
    }

    /// Node `i` joins through node `via`.
    pub fn join(&mut self, i: usize, via: usize) {
        let to = self.slots[via].addr;
        if let Some(s) = self.slots[i].swim.as_mut() {
            s.join(self.now, &[to]);
        }
        self.drain(i);
    }

    /// Stops node `i` without a word.
    pub fn crash(&mut self, i: usize) {
        self.slots[i].swim = None;
    }

    /// Starts node `i` afresh and joins it through `via`.
    pub fn restart(&mut self, i: usize, via: usize) {
        self.start(i);
        self.join(i, via);
    }

    /// Node `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(s) = self.slots[i].swim.as_mut() {
            s.leave(now);
        }
        self.drain(i);
    }

    /// Cuts every link between `a` and the rest.
    pub fn isolate(&mut self, a: usize) {
        for j in 0..self.len() {
            if j != a {
                self.blocked.insert((a, j));
                self.blocked.insert((j, a));
            }
        }
    }

    /// Drops everything `from` sends to `to` (the reverse direction still works).
    pub fn isolate_one_way(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether node `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].swim.is_some()
    }

    /// Node `i`'s core.
    pub fn swim(&self, i: usize) -> Option<&Swim> {
        self.slots[i].swim.as_ref()
    }

    /// Mutable access to node `i`'s core, draining its outputs afterwards.
    pub fn with_swim(&mut self, i: usize, f: impl FnOnce(&mut Swim, Instant)) {
        let now = self.now;
        if let Some(s) = self.slots[i].swim.as_mut() {
            f(s, now);
        }
        self.drain(i);
    }

    /// Node `i`'s view: name -> (state, incarnation).
    pub fn view(&self, i: usize) -> BTreeMap<String, (NodeStateKind, u32)> {
        self.slots[i]
            .swim
            .as_ref()
            .map(|s| {
                s.nodes()
                    .map(|n| (n.name, (n.state, n.incarnation)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names node `i` considers alive or suspect.
    pub fn live_view(&self, i: usize) -> BTreeSet<String> {
        self.view(i)
            .into_iter()
            .filter(|(_, (s, _))| !s.is_dead_or_left())
            .map(|(n, _)| n)
            .collect()
    }

    fn push(&mut self, at: Instant, to: usize, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, (to, ev));
    }

    fn index_of(&self, a: SocketAddr) -> Option<usize> {
        self.slots.iter().position(|s| s.addr == a)
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        !self.blocked.contains(&(from, to))
    }

    /// Processes node `i`'s outputs and arms its next wake-up.
    fn drain(&mut self, i: usize) {
        while let Some(out) = self.slots[i].swim.as_mut().and_then(Swim::poll_output) {
            match out {
                Output::Packet { to, data } => {
                    let Some(j) = self.index_of(to) else { continue };
                    if !self.reachable(i, j) || (self.loss > 0.0 && self.rng.random_bool(self.loss))
                    {
                        continue;
                    }
                    let from = self.slots[i].addr;
                    self.push(self.now + self.latency, j, Ev::Packet { from, data });
                }
                Output::Stream(req) => match self.index_of(req.to) {
                    Some(j) if self.reachable(i, j) && self.reachable(j, i) => self.push(
                        self.now + self.latency,
                        j,
                        Ev::StreamIn { from: i, req: *req },
                    ),
                    _ => {
                        let epoch = self.slots[i].epoch;
                        let ev = Ev::StreamResult {
                            id: req.id,
                            epoch,
                            result: Err("timed out".into()),
                        };
                        self.push(req.deadline, i, ev);
                    }
                },
                Output::Event(e) => self.events.push((i, *e)),
                Output::PingComplete(p) => self.pings.push((i, p)),
                Output::LeaveComplete => self.leave_complete.push(i),
                Output::User(payload) => self.users.push((i, payload)),
                Output::Messages { .. } => unreachable!("the test network's cores keep the codec"),
            }
        }
        if let Some(t) = self.slots[i].swim.as_ref().and_then(Swim::poll_timeout) {
            self.push(t.max(self.now), i, Ev::Wake);
        }
        if let (Some(f), Some(s)) = (self.after_step.as_mut(), self.slots[i].swim.as_ref()) {
            f(i, s);
        }
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            let Some((i, ev)) = self.pending.remove(&seq) else {
                continue;
            };
            self.step(i, ev);
        }
        self.now = until;
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn step(&mut self, i: usize, ev: Ev) {
        let now = self.now;
        let epoch = self.slots[i].epoch;
        let addrs: Vec<SocketAddr> = self.slots.iter().map(|s| s.addr).collect();
        let Some(swim) = self.slots[i].swim.as_mut() else {
            // A crashed node refuses streams quickly.
            if let Ev::StreamIn { from, req } = ev {
                let e = self.slots[from].epoch;
                let result = Err("connection refused".into());
                self.push(
                    now + self.latency,
                    from,
                    Ev::StreamResult {
                        id: req.id,
                        epoch: e,
                        result,
                    },
                );
            }
            return;
        };
        match ev {
            Ev::Wake => {
                if swim.poll_timeout().is_some_and(|t| t <= now) {
                    swim.handle_timeout(now);
                } else {
                    return;
                }
            }
            Ev::Packet { from, data } => swim.handle_packet(now, from, &data),
            Ev::StreamIn { from, req } => {
                let from_addr = addrs[from];
                let reply = match wire::decode_stream(&req.data) {
                    Ok(Some((msg, _))) => swim.handle_stream(now, from_addr, msg),
                    _ => None,
                };
                let result = match reply {
                    Some(bytes) if req.expect_reply => match wire::decode_stream(&bytes) {
                        Ok(Some((m, _))) => Ok(Some(m)),
                        other => Err(format!("bad reply: {other:?}")),
                    },
                    _ => Ok(None),
                };
                let at = (now + self.latency).min(req.deadline);
                let e = self.slots[from].epoch;
                self.push(
                    at,
                    from,
                    Ev::StreamResult {
                        id: req.id,
                        epoch: e,
                        result,
                    },
                );
            }
            Ev::StreamResult {
                id,
                epoch: e,
                result,
            } => {
                if e == epoch {
                    let _ = swim.handle_stream_result(now, id, result);
                }
            }
        }
        self.drain(i);
    }
}
