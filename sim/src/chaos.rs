//! Generated fault timelines, as TigerBeetle's VOPR draws them: a phase of
//! random faults, every one of which ends by itself, then a quiet phase in
//! which the cluster must make progress again.
//!
//! A [`Fault`] is a crash, a crash in the middle of an fsync, an isolated
//! node, a partition, a one-way cut, clogged TCP, a frozen process, lossy
//! or slow links, or a skewed clock, with its start, its window and whom it
//! hits: a node, or whoever leads a datacenter's Raft group at that moment
//! (the engine resolves that when the fault starts, and ends the fault on
//! the same server).
//!
//! [`timeline`] is a proptest [`Strategy`] over fault lists, so property
//! tests of one's own shrink a failing timeline the way proptest shrinks
//! anything: fewer faults, earlier and shorter ones, plainer kinds (see
//! `sim/examples/chaos_property.rs`). A scenario's `[chaos]` section
//! ([`Chaos`]) draws from the same strategy with a generator seeded by the
//! run's seed, so a seed replays its timeline exactly.

use std::ops::RangeInclusive;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::action::{Action, TimedAction};
use crate::scenario::select::{picked_placeholder, tagged_leader_placeholder};
use crate::seed::derive_seed;

/// The kinds of fault a timeline draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The node stops abruptly and restarts from its disk.
    Crash,
    /// A server loses power in its next fsync (unsynced writes lost, the
    /// last one torn) and restarts from what its disk kept.
    CrashInFsync,
    /// Every link of the node is cut, both ways.
    Isolate,
    /// The nodes split in two sides that cannot reach each other.
    Partition,
    /// What the node sends stops arriving, or it stops hearing the rest.
    OneWay,
    /// The node's TCP connections stall: bytes wait, datagrams still pass.
    Clog,
    /// The node's process freezes and resumes with its timers late.
    Pause,
    /// The node's links drop a share of datagrams.
    Loss,
    /// Everything the node sends or receives is late.
    Slow,
    /// The node's wall clock is off.
    Skew,
    /// Every TCP connection of the node resets at once (in-flight bytes
    /// lost); it reconnects as it needs to.
    TcpReset,
    /// The product's fault points fire on the node (see `cairn::buggify`).
    Buggify,
    /// The node's clock runs fast or slow.
    Drift,
    /// The node's monotonic clock leaps ahead.
    ClockJump,
    /// The node crashes, one bit of one Raft record on its disk rots while
    /// it is down, and it restarts to find the damage.
    Corrupt,
    /// The server's next fsync fails with an I/O error, losing what it was
    /// to make durable: the server stops, and its supervisor restarts it.
    FsyncError,
    /// The server's disk is full for the window: every write fails.
    DiskFull,
}

impl FaultKind {
    /// Every kind, plainest first (shrinking moves towards the front).
    pub const ALL: [FaultKind; 17] = [
        FaultKind::Crash,
        FaultKind::Isolate,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Clog,
        FaultKind::Loss,
        FaultKind::Slow,
        FaultKind::Skew,
        FaultKind::TcpReset,
        FaultKind::ClockJump,
        FaultKind::Drift,
        FaultKind::Buggify,
        FaultKind::CrashInFsync,
        FaultKind::Corrupt,
        FaultKind::FsyncError,
        FaultKind::DiskFull,
    ];

    /// The name in `[chaos] kinds`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::CrashInFsync => "crash_in_fsync",
            FaultKind::Isolate => "isolate",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one_way",
            FaultKind::Clog => "clog",
            FaultKind::Pause => "pause",
            FaultKind::Loss => "loss",
            FaultKind::Slow => "slow",
            FaultKind::Skew => "skew",
            FaultKind::TcpReset => "tcp_reset",
            FaultKind::Buggify => "buggify",
            FaultKind::Drift => "drift",
            FaultKind::ClockJump => "clock_jump",
            FaultKind::Corrupt => "corrupt",
            FaultKind::FsyncError => "fsync_error",
            FaultKind::DiskFull => "disk_full",
        }
    }

    /// Reads a name of [`FaultKind::name`].
    pub fn parse(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {s:?} (kinds: {})", all.join(", "))
            })
    }
}

/// Whom a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This node of [`Space::nodes`].
    Node(usize),
    /// Whoever leads this datacenter of [`Space::leaders`] when the fault
    /// starts.
    Leader(usize),
}

/// One generated fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// When it starts, from the start of the fault phase.
    pub at: Duration,
    /// How long it lasts (cut short where the fault phase ends).
    pub window: Duration,
    /// What it does.
    pub kind: FaultKind,
    /// Whom it hits.
    pub target: Target,
    /// Which other nodes share the target's side of a partition (bit `i`
    /// for node `i` of [`Space::nodes`], modulo 63), and which way a
    /// one-way cut or a skew goes (bit 63).
    pub side: u64,
    /// How hard it hits, from 0 to 1: the loss rate, the slowness, the
    /// size of the skew.
    pub strength: f64,
}

/// What a timeline is drawn from.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    /// The nodes faults may hit, by name.
    pub nodes: Vec<String>,
    /// Every node of the cluster: the rest of the world a one-node fault
    /// cuts the node from.
    pub everyone: Vec<String>,
    /// Datacenters whose Raft leader faults may pick.
    pub leaders: Vec<String>,
    /// The kinds drawn from, equally likely.
    pub kinds: Vec<FaultKind>,
    /// The share of faults that pick a leader rather than a node (when
    /// there are leaders to pick).
    pub leader_share: f64,
    /// How long the fault phase lasts; every fault ends within it.
    pub span: Duration,
    /// The shortest and longest window a fault lasts.
    pub windows: (Duration, Duration),
}

impl Space {
    /// A space over `nodes` (of a cluster of `everyone`) with every kind,
    /// no leader picks, and windows from 200 ms to 5 s within `span`.
    pub fn new(nodes: &[&str], everyone: &[&str], span: Duration) -> Space {
        let own = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Space {
            nodes: own(nodes),
            everyone: own(everyone),
            leaders: Vec::new(),
            kinds: FaultKind::ALL.to_vec(),
            leader_share: 0.0,
            span,
            windows: (Duration::from_millis(200), Duration::from_secs(5)),
        }
    }

    /// Checks that the space can draw a fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("no nodes for faults to hit".into());
        }
        if self.kinds.is_empty() {
            return Err("no fault kinds to draw from".into());
        }
        if self.span < Duration::from_millis(1) {
            return Err("the fault phase is shorter than a millisecond".into());
        }
        let (lo, hi) = self.windows;
        if lo.is_zero() || lo > hi {
            return Err(format!(
                "fault windows run from a shortest to a longest, more than zero: not {lo:?} to {hi:?}"
            ));
        }
        if !(0.0..=1.0).contains(&self.leader_share) {
            return Err(format!(
                "the leader share is from 0 to 1, not {}",
                self.leader_share
            ));
        }
        Ok(())
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// One fault drawn from `space` (whose [`Space::validate`] passed).
pub fn fault(space: &Space) -> BoxedStrategy<Fault> {
    let nodes = space.nodes.len().max(1);
    let node = (0..nodes).prop_map(Target::Node);
    let leader_weight = (space.leader_share * 1000.0).round() as u32;
    let target: BoxedStrategy<Target> = if space.leaders.is_empty() || leader_weight == 0 {
        node.boxed()
    } else {
        prop_oneof![
            1000u32.saturating_sub(leader_weight).max(1) => node,
            leader_weight => (0..space.leaders.len()).prop_map(Target::Leader),
        ]
        .boxed()
    };
    let (lo, hi) = (ms(space.windows.0).max(1), ms(space.windows.1).max(1));
    (
        0..ms(space.span).max(1),
        lo..=hi.max(lo),
        proptest::sample::select(space.kinds.clone()),
        target,
        any::<u64>(),
        0u32..=100,
    )
        .prop_map(|(at, window, kind, target, side, strength)| Fault {
            at: Duration::from_millis(at),
            window: Duration::from_millis(window),
            kind,
            target,
            side,
            strength: f64::from(strength) / 100.0,
        })
        .boxed()
}

/// Timelines of `count` faults drawn from `space`, in no particular order
/// ([`actions`] orders them). Shrinking drops faults, moves them earlier,
/// shortens them and makes them plainer.
pub fn timeline(space: &Space, count: RangeInclusive<usize>) -> BoxedStrategy<Vec<Fault>> {
    proptest::collection::vec(fault(space), count).boxed()
}

/// The timeline's actions from `from` (when the fault phase starts), in
/// time order: each fault's start and, unless it ends by itself, its end.
/// Fault `i` that picks a leader remembers it under tag `i`.
pub fn actions(space: &Space, from: Duration, faults: &[Fault]) -> Vec<TimedAction> {
    let mut out: Vec<TimedAction> = faults
        .iter()
        .enumerate()
        .flat_map(|(i, f)| fault_actions(space, from, i, f))
        .collect();
    // Stable: at one instant, faults keep the order they were drawn in.
    out.sort_by_key(|a| a.at);
    out
}

/// Fault `i`'s start and end.
pub fn fault_actions(space: &Space, from: Duration, i: usize, f: &Fault) -> Vec<TimedAction> {
    let start = from + f.at.min(space.span);
    let end = (start + f.window).min(from + space.span).max(start);
    let (hit, same) = match f.target {
        Target::Node(k) => {
            let n = vec![space.nodes[k % space.nodes.len()].clone()];
            (n.clone(), n)
        }
        Target::Leader(d) => (
            vec![tagged_leader_placeholder(
                &space.leaders[d % space.leaders.len()],
                i,
            )],
            vec![picked_placeholder(i)],
        ),
    };
    let all = space.everyone.clone();
    let flip = f.side >> 63 == 1;
    let (begin, finish) = match f.kind {
        FaultKind::Crash => (Action::Crash(hit), Some(Action::Restart(same))),
        FaultKind::CrashInFsync => (Action::CrashInFsync(hit), Some(Action::Restart(same))),
        FaultKind::Corrupt => {
            // The rot comes with the crash, at the same instant.
            let crash = TimedAction {
                at: start,
                action: Action::Crash(hit),
            };
            let rot = TimedAction {
                at: start,
                action: Action::Corrupt(same.clone()),
            };
            let restart = TimedAction {
                at: end,
                action: Action::Restart(same),
            };
            return vec![crash, rot, restart];
        }
        FaultKind::Isolate => (Action::Isolate(hit), Some(Action::HealBetween(same, all))),
        FaultKind::Partition => {
            let (a, b) = sides(space, f);
            (
                Action::Partition(a.clone(), b.clone()),
                Some(Action::HealBetween(a, b)),
            )
        }
        FaultKind::OneWay if flip => (
            Action::OneWay(all.clone(), hit),
            Some(Action::HealBetween(same, all)),
        ),
        FaultKind::OneWay => (
            Action::OneWay(hit, all.clone()),
            Some(Action::HealBetween(same, all)),
        ),
        FaultKind::Clog => (
            Action::Clog(hit, all.clone(), true),
            Some(Action::Clog(same, all, false)),
        ),
        FaultKind::Pause => (Action::Pause(hit, Some(end - start)), None),
        FaultKind::TcpReset => (Action::TcpReset(hit), None),
        FaultKind::FsyncError => (Action::FsyncError(hit), None),
        FaultKind::DiskFull => (
            Action::DiskFull(hit, true),
            Some(Action::DiskFull(same, false)),
        ),
        FaultKind::ClockJump => {
            let by = Duration::from_millis(100 + (4900.0 * f.strength) as u64);
            (Action::ClockJump(hit, by), None)
        }
        FaultKind::Drift => {
            // Up to half again as fast, or a third slower.
            let fast = 1.0 + (5.0 + 45.0 * f.strength).round() / 100.0;
            (
                Action::Drift(hit, if flip { 1.0 / fast } else { fast }),
                Some(Action::Drift(same, 1.0)),
            )
        }
        FaultKind::Buggify => (
            Action::Buggify(hit, true),
            Some(Action::Buggify(same, false)),
        ),
        FaultKind::Loss => {
            let rate = (10.0 + 60.0 * f.strength).round() / 100.0;
            (
                Action::LinkLoss(hit, all.clone(), Some(rate)),
                Some(Action::LinkLoss(same, all, None)),
            )
        }
        FaultKind::Slow => {
            let late = Duration::from_millis(20 + (480.0 * f.strength) as u64);
            (
                Action::Slow(hit, late),
                Some(Action::Slow(same, Duration::ZERO)),
            )
        }
        FaultKind::Skew => {
            let by = 50 + (1950.0 * f.strength) as i64;
            (
                Action::Skew(hit, if flip { -by } else { by }),
                Some(Action::Skew(same, 0)),
            )
        }
    };
    let mut v = vec![TimedAction {
        at: start,
        action: begin,
    }];
    v.extend(finish.map(|action| TimedAction { at: end, action }));
    v
}

/// A partition's two sides: the target (when it is a node) with the nodes
/// its side bits pick, and everyone else.
fn sides(space: &Space, f: &Fault) -> (Vec<String>, Vec<String>) {
    let mut a: Vec<String> = space
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| f.side >> (i % 63) & 1 == 1)
        .map(|(_, n)| n.clone())
        .collect();
    if let Target::Node(k) = f.target {
        let n = &space.nodes[k % space.nodes.len()];
        if !a.contains(n) {
            a.push(n.clone());
        }
    }
    let mut b: Vec<String> = space
        .everyone
        .iter()
        .filter(|n| !a.contains(n))
        .cloned()
        .collect();
    if b.is_empty() {
        // Everyone on one side is no partition: cut the last one off.
        b.extend(a.pop());
    }
    (a, b)
}

/// A scenario's `[chaos]` section: the faults a run draws from its seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    /// When the fault phase starts; it lasts [`Space::span`], and the run
    /// is quiet from then on.
    pub from: Duration,
    /// How many faults the phase holds.
    pub faults: usize,
    /// What they are drawn from.
    pub space: Space,
    /// These faults for every seed instead of a draw (a property test's
    /// generated timeline; see [`Chaos::given`]).
    pub given: Option<Vec<Fault>>,
}

impl Chaos {
    /// Faults from `space`, starting at `from`, that every run takes as
    /// they are: what a property test puts in a scenario to run the
    /// timeline [`timeline`] generated.
    pub fn given(from: Duration, space: Space, faults: Vec<Fault>) -> Chaos {
        Chaos {
            from,
            faults: faults.len(),
            space,
            given: Some(faults),
        }
    }

    /// When the quiet phase starts.
    pub fn quiet_from(&self) -> Duration {
        self.from + self.space.span
    }

    /// The faults of a run with `seed`.
    pub fn draw(&self, seed: u64) -> Result<Vec<Fault>, String> {
        if let Some(given) = &self.given {
            return Ok(given.clone());
        }
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&derive_seed(seed, "", 0, "chaos").to_le_bytes());
        let config = Config {
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        timeline(&self.space, self.faults..=self.faults)
            .new_tree(&mut runner)
            .map(|t| t.current())
            .map_err(|e| format!("cannot draw a fault timeline: {e}"))
    }

    /// The actions of a run with `seed`, in time order.
    pub fn timeline(&self, seed: u64) -> Result<Vec<TimedAction>, String> {
        Ok(actions(&self.space, self.from, &self.draw(seed)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chaos() -> Chaos {
        let names = ["dc1-server-0", "dc1-server-1", "dc1-server-2", "dc1-0"];
        let mut space = Space::new(&names, &names, Duration::from_secs(30));
        space.leaders = vec!["dc1".into()];
        space.leader_share = 0.3;
        Chaos {
            from: Duration::from_secs(5),
            faults: 20,
            space,
            given: None,
        }
    }

    #[test]
    fn a_seed_draws_the_same_timeline_and_another_seed_another() {
        let c = chaos();
        assert_eq!(c.timeline(7).unwrap(), c.timeline(7).unwrap());
        assert_ne!(c.timeline(7).unwrap(), c.timeline(8).unwrap());
        assert_eq!(c.draw(7).unwrap().len(), 20);
    }

    #[test]
    fn every_fault_ends_within_the_fault_phase() {
        let c = chaos();
        for seed in 0..50 {
            let faults = c.draw(seed).unwrap();
            let t = actions(&c.space, c.from, &faults);
            assert!(t.windows(2).all(|w| w[0].at <= w[1].at));
            for a in &t {
                assert!(a.at >= c.from && a.at <= c.quiet_from(), "{a:?}");
                if let Action::Pause(_, Some(d)) = &a.action {
                    assert!(a.at + *d <= c.quiet_from());
                }
            }
            // A pause ends by itself and a reset is over at once: one
            // action each; every other fault has a start and an end.
            let single = |a: &Action| {
                matches!(
                    a,
                    Action::Pause(..)
                        | Action::TcpReset(_)
                        | Action::ClockJump(..)
                        | Action::Corrupt(_)
                        | Action::FsyncError(_)
                )
            };
            let ends = t.iter().filter(|a| !single(&a.action)).count();
            let singles = faults
                .iter()
                .filter(|f| {
                    matches!(
                        f.kind,
                        FaultKind::Pause
                            | FaultKind::TcpReset
                            | FaultKind::ClockJump
                            | FaultKind::FsyncError
                    )
                })
                .count();
            assert_eq!(ends, 2 * (faults.len() - singles));
        }
    }

    #[test]
    fn a_leader_pick_is_ended_on_the_server_it_picked() {
        let c = chaos();
        let faults = (0..200)
            .flat_map(|s| c.draw(s).unwrap())
            .filter(|f| matches!(f.target, Target::Leader(_)) && f.kind == FaultKind::Crash)
            .take(1)
            .collect::<Vec<_>>();
        assert_eq!(faults.len(), 1, "some seed crashes the leader");
        let t = fault_actions(&c.space, c.from, 3, &faults[0]);
        assert_eq!(t[0].action, Action::Crash(vec!["@leader:dc1#3".into()]));
        assert_eq!(t[1].action, Action::Restart(vec!["@picked:3".into()]));
    }

    #[test]
    fn a_partition_has_two_nonempty_sides_that_do_not_meet() {
        let c = chaos();
        for side in [0, u64::MAX, 0b1010, 1 << 63] {
            let f = Fault {
                at: Duration::ZERO,
                window: Duration::from_secs(1),
                kind: FaultKind::Partition,
                target: Target::Node(1),
                side,
                strength: 0.5,
            };
            let (a, b) = sides(&c.space, &f);
            assert!(!a.is_empty() && !b.is_empty());
            assert!(a.iter().all(|x| !b.contains(x)));
            assert_eq!(a.len() + b.len(), c.space.everyone.len());
        }
    }

    #[test]
    fn kinds_read_back_their_names_and_unknown_ones_are_named() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.name()), Ok(k));
        }
        assert!(FaultKind::parse("meteor")
            .unwrap_err()
            .contains("crash_in_fsync"));
    }
}
