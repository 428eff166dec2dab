//! The network model both engines share: what happens to a datagram or to
//! a stream's bytes between two nodes, decided without I/O.
//!
//! - **Links.** Every pair has the model's one-way latency, loss rate and
//!   bandwidth (drawn from the topology, with the scenario's fixed
//!   `[[link]]` rules on top), changed while the run goes by `latency`,
//!   `loss` and `slow` events.
//! - **Datagrams** (UDP) are lost at the link's loss rate, dropped by a cut
//!   in their direction, duplicated and held back (reordered) at the
//!   model's rates, and otherwise arrive after the link's latency, the
//!   jitter drawn for them and both ends' slowness. They are small (at most
//!   a packet), so bandwidth does not delay them; and the protocol engine
//!   with the codec skipped knows them only by their size before
//!   compression, which must not change when they arrive.
//! - **Streams** (TCP) never lose bytes. Bytes queue on their directed link
//!   and take `len / bandwidth` to send, then the latency to arrive, in
//!   order. While their direction is cut or clogged they cannot cross; the
//!   engine retries, as TCP retransmits.
//! - **Cuts** (partitions) and **clogs** are directed rules over two sets of
//!   nodes: the newest rule covering a direction decides. A partition cuts
//!   both directions unless it is one-way.
//!
//! Randomness comes from one generator per sending node, seeded from the
//! run's seed and the node's name, so the draws for one node's traffic do
//! not depend on what other nodes send.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn::time::Instant;
use rand::Rng;

use crate::action::{Action, LatencyChange};
use crate::net::topology::{Dist, Links, Topology};
use crate::seed::{derive_seed, SplitMix};

/// A set of node indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// The empty set over `n` nodes.
    pub fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    /// The set of `idx` over `n` nodes.
    pub fn of(n: usize, idx: impl IntoIterator<Item = usize>) -> Self {
        let mut b = Bits::new(n);
        for i in idx {
            b.insert(i);
        }
        b
    }

    /// Adds `i`; whether it was new.
    pub fn insert(&mut self, i: usize) -> bool {
        let (w, m) = (i / 64, 1u64 << (i % 64));
        let fresh = self.0[w] & m == 0;
        self.0[w] |= m;
        fresh
    }

    /// Whether `i` is in the set.
    pub fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// A rule about the links from one set to another (and back, unless it is
/// one-way): the newest rule covering a direction decides.
#[derive(Debug, Clone)]
struct Rule<T> {
    from: Bits,
    to: Bits,
    one_way: bool,
    what: T,
}

impl<T: Copy> Rule<T> {
    fn covers(&self, from: usize, to: usize) -> bool {
        (self.from.has(from) && self.to.has(to))
            || (!self.one_way && self.from.has(to) && self.to.has(from))
    }

    /// What the newest rule covering `from -> to` says.
    fn latest(rules: &[Rule<T>], from: usize, to: usize) -> Option<T> {
        rules
            .iter()
            .rev()
            .find(|r| r.covers(from, to))
            .map(|r| r.what)
    }
}

/// One link as the model has it, before the run's events change it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One-way latency.
    pub one_way: Duration,
    /// Share of datagrams lost.
    pub loss: f64,
    /// Bytes per second (infinite: no limit).
    pub bandwidth: f64,
}

/// A fixed override of the model for the links between two sets.
#[derive(Debug, Clone)]
pub struct Override {
    /// One set.
    pub a: Bits,
    /// The other.
    pub b: Bits,
    /// One-way latency instead of the model's.
    pub latency: Option<Duration>,
    /// Loss rate instead of the model's.
    pub loss: Option<f64>,
    /// Bandwidth (bytes per second) instead of the model's.
    pub bandwidth: Option<f64>,
}

/// Where the model's links come from.
#[derive(Debug, Clone)]
enum Base {
    /// Every pair drawn already (the full engine's tens to hundreds of nodes).
    Table(Links),
    /// Drawn on demand, never holding all N² pairs (100,000 nodes).
    Drawn {
        topology: Topology,
        seed: u64,
        between: Vec<Vec<Duration>>,
        fixed: Vec<Override>,
    },
}

/// The datagram's fate: when each copy arrives (none: lost or cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Arrivals {
    /// The datagram.
    pub first: Option<Instant>,
    /// A duplicate of it.
    pub again: Option<Instant>,
}

/// The network between `n` nodes and what the run has done to it.
#[derive(Debug, Clone)]
pub struct Model {
    base: Base,
    n: usize,
    jitter: Dist,
    duplicate: f64,
    reorder: f64,
    cuts: Vec<Rule<bool>>,
    clogs: Vec<Rule<bool>>,
    loss_rules: Vec<Rule<Option<f64>>>,
    global_loss: Option<f64>,
    latency_rules: Vec<Rule<LatencyChange>>,
    /// Counts changes to latencies (`latency` rules), so that whoever
    /// keeps latencies it asked for knows when to ask again.
    latency_epoch: u64,
    slow: Vec<Duration>,
    /// When each directed link is done sending the stream bytes queued on
    /// it; entries whose time has passed are dropped now and then.
    busy: BTreeMap<(u32, u32), Instant>,
    busy_swept: usize,
    rngs: Vec<SplitMix>,
    lossy_sent: u64,
    lossy_dropped: u64,
}

impl Model {
    /// The model over links drawn already.
    pub fn from_table(topology: &Topology, links: Links, seed: u64) -> Model {
        Self::with_base(topology, Base::Table(links), seed)
    }

    /// The model drawing `topology`'s links on demand, with `fixed`
    /// overrides (the newest first to apply).
    pub fn drawn(topology: &Topology, seed: u64, fixed: Vec<Override>) -> Result<Model, String> {
        let between = topology.dc_latencies()?;
        let base = Base::Drawn {
            topology: topology.clone(),
            seed,
            between,
            fixed,
        };
        Ok(Self::with_base(topology, base, seed))
    }

    fn with_base(topology: &Topology, base: Base, seed: u64) -> Model {
        let n = topology.nodes.len();
        let rngs = topology
            .nodes
            .iter()
            .map(|x| SplitMix(derive_seed(seed, &x.name, 0, "network")))
            .collect();
        Model {
            base,
            n,
            jitter: topology.latency.jitter,
            duplicate: topology.latency.duplicate,
            reorder: topology.latency.reorder,
            cuts: Vec::new(),
            clogs: Vec::new(),
            loss_rules: Vec::new(),
            global_loss: None,
            latency_rules: Vec::new(),
            latency_epoch: 0,
            slow: vec![Duration::ZERO; n],
            busy: BTreeMap::new(),
            busy_swept: 0,
            rngs,
            lossy_sent: 0,
            lossy_dropped: 0,
        }
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The model's link between `i` and `j`, before any event.
    pub fn link(&self, i: usize, j: usize) -> Link {
        Link {
            one_way: self.base_one_way(i, j),
            loss: self.base_loss(i, j),
            bandwidth: self.base_bandwidth(i, j),
        }
    }

    /// The newest rule covering the pair that sets a field (`pick`).
    fn covering<T>(
        fixed: &[Override],
        i: usize,
        j: usize,
        pick: impl Fn(&Override) -> Option<T>,
    ) -> Option<T> {
        fixed
            .iter()
            .rev()
            .filter(|r| (r.a.has(i) && r.b.has(j)) || (r.a.has(j) && r.b.has(i)))
            .find_map(pick)
    }

    /// [`link`](Self::link)'s latency alone: a packet's path asks for its
    /// latency and its loss, and drawing a latency is the costly part.
    fn base_one_way(&self, i: usize, j: usize) -> Duration {
        match &self.base {
            Base::Table(t) => t.one_way[i][j],
            Base::Drawn {
                topology,
                seed,
                between,
                fixed,
            } => Self::covering(fixed, i, j, |r| r.latency)
                .unwrap_or_else(|| topology.link_one_way(*seed, between, i, j)),
        }
    }

    fn base_loss(&self, i: usize, j: usize) -> f64 {
        match &self.base {
            Base::Table(t) => t.loss[i][j],
            Base::Drawn {
                topology, fixed, ..
            } => Self::covering(fixed, i, j, |r| r.loss).unwrap_or(topology.latency.loss),
        }
    }

    fn base_bandwidth(&self, i: usize, j: usize) -> f64 {
        match &self.base {
            Base::Table(t) => t.bandwidth[i][j],
            Base::Drawn {
                topology, fixed, ..
            } => Self::covering(fixed, i, j, |r| r.bandwidth).unwrap_or(topology.latency.bandwidth),
        }
    }

    /// Changes to [`latency`](Self::latency)'s answers so far: while it
    /// stays, so do they.
    pub fn latency_epoch(&self) -> u64 {
        self.latency_epoch
    }

    /// The one-way latency from `i` to `j` now (the model's, changed by
    /// `latency` events): what coordinates are scored against.
    pub fn latency(&self, i: usize, j: usize) -> Duration {
        if i == j {
            return Duration::ZERO;
        }
        let model = self.base_one_way(i, j);
        match Rule::latest(&self.latency_rules, i, j) {
            None | Some(LatencyChange::Reset) => model,
            Some(LatencyChange::Set(d)) => d,
            Some(LatencyChange::Scale(f)) => model.mul_f64(f),
        }
        .max(Duration::from_micros(1))
    }

    /// The round trip between `i` and `j` that coordinates are scored
    /// against: the two one-way latencies now, and the jitter's mean each
    /// way. Processing time and slowness are not part of it
    /// (scenarios/README.md, "True RTT").
    pub fn true_rtt(&self, i: usize, j: usize) -> Duration {
        if i == j {
            return Duration::ZERO;
        }
        self.latency(i, j) + self.latency(j, i) + self.jitter.mean() * 2
    }

    /// The loss rate from `i` to `j` now.
    pub fn loss(&self, i: usize, j: usize) -> f64 {
        match Rule::latest(&self.loss_rules, i, j) {
            Some(Some(r)) => r,
            Some(None) => self.base_loss(i, j),
            None => self.global_loss.unwrap_or_else(|| self.base_loss(i, j)),
        }
    }

    /// Whether nothing from `from` reaches `to` (a partition).
    pub fn cut(&self, from: usize, to: usize) -> bool {
        from != to && Rule::latest(&self.cuts, from, to).unwrap_or(false)
    }

    /// Whether stream bytes from `from` to `to` are held up: cut or clogged.
    pub fn stalled(&self, from: usize, to: usize) -> bool {
        self.cut(from, to) || (from != to && Rule::latest(&self.clogs, from, to).unwrap_or(false))
    }

    /// Whether a TCP handshake between the two can complete now.
    pub fn can_connect(&self, from: usize, to: usize) -> bool {
        !self.stalled(from, to) && !self.stalled(to, from)
    }

    /// Datagrams sent over lossy links, and how many of those were lost.
    pub fn lossy(&self) -> (u64, u64) {
        (self.lossy_sent, self.lossy_dropped)
    }

    fn transmission(&self, i: usize, j: usize, len: usize) -> Duration {
        let bw = self.base_bandwidth(i, j);
        if i == j || !bw.is_finite() || bw <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(len as f64 / bw)
    }

    /// What becomes of a datagram sent now from `from` to `to`.
    pub fn datagram(&mut self, now: Instant, from: usize, to: usize) -> Arrivals {
        if self.cut(from, to) {
            return Arrivals::default();
        }
        let loss = if from == to { 0.0 } else { self.loss(from, to) };
        let latency = self.latency(from, to);
        let slow = if from == to {
            Duration::ZERO
        } else {
            self.slow[from] + self.slow[to]
        };
        let (jitter, duplicate, reorder) = (self.jitter, self.duplicate, self.reorder);
        let rng = &mut self.rngs[from];
        if loss > 0.0 {
            let dropped = rng.random_bool(loss.min(1.0));
            self.lossy_sent += 1;
            self.lossy_dropped += dropped as u64;
            if dropped {
                return Arrivals::default();
            }
        }
        let mut delay = latency + slow;
        if !jitter.is_zero() {
            delay += jitter.sample(rng);
        }
        // A reordered datagram is held back by up to another latency, so
        // what is sent after it may arrive first.
        if reorder > 0.0 && rng.random_bool(reorder.min(1.0)) {
            delay += latency.mul_f64(rng.random::<f64>());
        }
        let first = now + delay;
        let again = (duplicate > 0.0 && rng.random_bool(duplicate.min(1.0))).then(|| {
            let extra = if jitter.is_zero() {
                Duration::from_micros(1)
            } else {
                jitter.sample(rng).max(Duration::from_micros(1))
            };
            first + extra
        });
        Arrivals {
            first: Some(first),
            again,
        }
    }

    /// When `len` stream bytes handed over at `at` from `from` to `to` have
    /// all arrived: after those queued before them on the link, their
    /// transmission time and the latency. `None` while the direction is
    /// stalled (see [`stalled`](Self::stalled)): nothing is queued.
    pub fn stream_bytes(
        &mut self,
        at: Instant,
        from: usize,
        to: usize,
        len: usize,
    ) -> Option<Instant> {
        if self.stalled(from, to) {
            return None;
        }
        let send = self.transmission(from, to, len);
        let key = (from as u32, to as u32);
        let start = self.busy.get(&key).map_or(at, |&b| b.max(at));
        let done = start + send;
        if !send.is_zero() {
            if self.busy.len() >= 2 * self.busy_swept.max(64) {
                self.busy.retain(|_, b| *b > at);
                self.busy_swept = self.busy.len();
            }
            self.busy.insert(key, done);
        }
        Some(done + self.latency(from, to))
    }

    /// Carries out `action` if it is about the network (partitions, heals,
    /// clogs, loss, latency, slowness); `index` finds a node by name.
    /// Returns whether it was.
    pub fn apply(&mut self, action: &Action, index: impl Fn(&str) -> Option<usize>) -> bool {
        let n = self.n;
        let set = |names: &[String]| Bits::of(n, names.iter().filter_map(|x| index(x)));
        let rule = |a: &[String], b: &[String], one_way: bool| (set(a), set(b), one_way);
        match action {
            Action::Isolate(x) => {
                let from = set(x);
                let to = Bits::of(n, (0..n).filter(|&i| !from.has(i)));
                self.cuts.push(Rule {
                    from,
                    to,
                    one_way: false,
                    what: true,
                });
            }
            Action::Partition(a, b) | Action::OneWay(a, b) => {
                let (from, to, one_way) = rule(a, b, matches!(action, Action::OneWay(..)));
                self.cuts.push(Rule {
                    from,
                    to,
                    one_way,
                    what: true,
                });
            }
            Action::Heal => self.cuts.clear(),
            Action::HealBetween(a, b) => {
                let (from, to, one_way) = rule(a, b, false);
                self.cuts.push(Rule {
                    from,
                    to,
                    one_way,
                    what: false,
                });
            }
            Action::Clog(a, b, on) => {
                let (from, to, one_way) = rule(a, b, false);
                self.clogs.push(Rule {
                    from,
                    to,
                    one_way,
                    what: *on,
                });
            }
            Action::Loss(rate) => {
                self.global_loss = Some(*rate);
                self.loss_rules.clear();
            }
            Action::LinkLoss(a, b, rate) => {
                let (from, to, one_way) = rule(a, b, false);
                self.loss_rules.push(Rule {
                    from,
                    to,
                    one_way,
                    what: *rate,
                });
            }
            Action::Latency(a, b, change) => {
                let (from, to, one_way) = rule(a, b, false);
                self.latency_rules.push(Rule {
                    from,
                    to,
                    one_way,
                    what: *change,
                });
                self.latency_epoch += 1;
            }
            Action::Slow(x, d) => {
                for i in x.iter().filter_map(|x| index(x)) {
                    self.slow[i] = *d;
                }
            }
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::topology::{Datacenter, LatencyModel, Location, PoolScope};

    fn topo(n: usize, bandwidth: f64) -> Topology {
        let latency = LatencyModel {
            intra_dc: Dist::Const(Duration::from_millis(2)),
            bandwidth,
            ..LatencyModel::default()
        };
        Topology::new(
            vec![Datacenter {
                name: "dc1".into(),
                clients: n,
                servers: 0,
                location: Location::Unplaced,
            }],
            PoolScope::Datacenter,
            latency,
        )
    }

    fn names(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_duration(Duration::from_millis(ms))
    }

    fn idx(name: &str) -> Option<usize> {
        name.strip_prefix("dc1-")?.parse().ok()
    }

    #[test]
    fn the_true_rtt_is_both_latencies_and_the_jitters_mean_each_way() {
        let mut t = topo(3, f64::INFINITY);
        t.latency.jitter = Dist::Exponential {
            mean: Duration::from_micros(500),
        };
        let mut m = Model::drawn(&t, 1, Vec::new()).unwrap();
        assert_eq!(m.true_rtt(0, 1), Duration::from_millis(5));
        assert_eq!(m.true_rtt(1, 1), Duration::ZERO);
        // It follows latency changes; slowness is a fault, not part of it.
        let slower = Action::Latency(
            names(&["dc1-0"]),
            names(&["dc1-1"]),
            LatencyChange::Set(Duration::from_millis(10)),
        );
        m.apply(&slower, idx);
        assert_eq!(m.true_rtt(0, 1), Duration::from_millis(21));
    }

    #[test]
    fn stream_bytes_take_their_transmission_time_and_queue_in_order() {
        // 1 MB/s: 700 KB take 700 ms to send, then 2 ms to arrive.
        let mut m = Model::drawn(&topo(3, 1e6), 1, Vec::new()).unwrap();
        let t = m.stream_bytes(at(0), 0, 1, 700_000).unwrap();
        assert_eq!(t, at(702));
        // Bytes written just after wait for the link.
        assert_eq!(m.stream_bytes(at(1), 0, 1, 1_000).unwrap(), at(703));
        // The other direction and other links are free.
        assert_eq!(m.stream_bytes(at(1), 1, 0, 1_000).unwrap(), at(4));
        assert_eq!(m.stream_bytes(at(1), 0, 2, 1_000).unwrap(), at(4));
    }

    #[test]
    fn one_way_partitions_and_clogs_hold_one_direction() {
        let mut m = Model::drawn(&topo(3, f64::INFINITY), 1, Vec::new()).unwrap();
        m.apply(&Action::OneWay(names(&["dc1-0"]), names(&["dc1-1"])), idx);
        assert!(m.cut(0, 1) && !m.cut(1, 0));
        assert_eq!(m.datagram(at(0), 0, 1), Arrivals::default());
        assert_eq!(m.datagram(at(0), 1, 0).first, Some(at(2)));
        assert!(m.stream_bytes(at(0), 0, 1, 10).is_none());
        assert!(!m.can_connect(1, 0), "a handshake needs both ways");
        m.apply(&Action::Heal, idx);
        assert!(m.can_connect(1, 0));
        // A clog stalls streams (both ways), not datagrams.
        m.apply(
            &Action::Clog(names(&["dc1-0"]), names(&["dc1-2"]), true),
            idx,
        );
        assert!(m.stalled(0, 2) && m.stalled(2, 0) && !m.stalled(0, 1));
        assert!(m.datagram(at(0), 0, 2).first.is_some());
        m.apply(
            &Action::Clog(names(&["dc1-0"]), names(&["dc1-2"]), false),
            idx,
        );
        assert!(m.stream_bytes(at(0), 0, 2, 10).is_some());
    }

    #[test]
    fn a_tabled_model_and_a_drawn_one_agree() {
        let t = topo(5, 125e6);
        let table = Model::from_table(&t, t.realize(9).unwrap(), 9);
        let drawn = Model::drawn(&t, 9, Vec::new()).unwrap();
        for i in 0..5 {
            for j in 0..5 {
                if i != j {
                    assert_eq!(table.link(i, j), drawn.link(i, j));
                }
            }
        }
    }

    #[test]
    fn loss_duplication_and_reordering_follow_their_rates() {
        let mut t = topo(2, f64::INFINITY);
        t.latency.duplicate = 0.1;
        t.latency.reorder = 0.2;
        t.latency.loss = 0.3;
        let mut m = Model::drawn(&t, 3, Vec::new()).unwrap();
        let (mut lost, mut twice, mut late) = (0, 0, 0);
        for _ in 0..10_000 {
            let a = m.datagram(at(0), 0, 1);
            match a.first {
                None => lost += 1,
                Some(t) => {
                    late += (t > at(2)) as u32;
                    twice += a.again.is_some() as u32;
                }
            }
        }
        let near = |x: u32, want: f64| (x as f64 - want).abs() < want * 0.15;
        assert!(near(lost, 3000.0), "{lost}");
        assert!(near(twice, 700.0), "{twice}");
        assert!(near(late, 1400.0), "{late}");
        assert_eq!(m.lossy(), (10_000, lost as u64));
    }
}
