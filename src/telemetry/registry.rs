//! Counters and timing samples keyed by Consul's metric names
//! (`consul.raft.apply`, `consul.kvs.apply`, ...), cheap enough to bump on
//! every request: one short mutex hold, no allocation once a name exists.
//!
//! Consul's in-memory sink reports each metric per 10 s interval; cairn's
//! report from start-up, which is what a Prometheus scrape wants anyway
//! (running totals, with rates left to the scraper).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use openraft::{BasicNode, RaftMetrics, ServerState};

use crate::state::Command;

/// How many recent observations a sample keeps for its quantiles.
const RECENT: usize = 1024;

/// Everything observed of one metric: for a counter, the increments; for
/// a sample, the measurements (milliseconds, for timers).
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    /// How many increments or measurements.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The sum of their squares (for the standard deviation).
    sum_sq: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// The latest measurements, oldest first (samples only).
    recent: VecDeque<f64>,
}

impl Aggregate {
    /// A counter known only by its running total (the gossip layer's
    /// packet counts): one increment of that size.
    pub fn of_total(total: f64) -> Aggregate {
        let mut a = Aggregate::default();
        a.add(total, false);
        a
    }

    fn add(&mut self, v: f64, keep: bool) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if self.count == 0 || v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.sum += v;
        self.sum_sq += v * v;
        if keep {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(v);
        }
    }

    /// The mean (0 with nothing observed).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The sample standard deviation, as go-metrics computes it.
    pub fn stddev(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let var = (self.sum_sq - self.sum * self.sum / n) / (n - 1.0);
        var.max(0.0).sqrt()
    }

    /// The `q` quantile (0 to 1) of the recent measurements; NaN with none,
    /// as Prometheus' summaries report it.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.recent.is_empty() {
            return f64::NAN;
        }
        let mut sorted: Vec<f64> = self.recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = (q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }
}

/// What a [`Registry`] holds at one moment, in name order.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counters: name and increments.
    pub counters: Vec<(&'static str, Aggregate)>,
    /// Samples: name and measurements.
    pub samples: Vec<(&'static str, Aggregate)>,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<&'static str, Aggregate>,
    samples: BTreeMap<&'static str, Aggregate>,
    /// The Raft role last seen, to count changes of role.
    raft_state: Option<ServerState>,
}

/// Counters and samples by name; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Adds `by` to counter `name`.
    pub fn incr(&self, name: &'static str, by: f64) {
        self.with(|i| i.counters.entry(name).or_default().add(by, false));
    }

    /// Records one measurement of sample `name`.
    pub fn sample(&self, name: &'static str, value: f64) {
        self.with(|i| i.samples.entry(name).or_default().add(value, true));
    }

    /// Records a duration, in milliseconds as Consul's timers are.
    pub fn time(&self, name: &'static str, took: Duration) {
        self.sample(name, took.as_secs_f64() * 1000.0);
    }

    /// A copy of everything counted so far.
    pub fn snapshot(&self) -> Snapshot {
        self.with(|i| Snapshot {
            counters: i.counters.iter().map(|(k, v)| (*k, v.clone())).collect(),
            samples: i.samples.iter().map(|(k, v)| (*k, v.clone())).collect(),
        })
    }

    /// A write the leader committed and applied, `took` after it was
    /// proposed: `consul.raft.apply`, `consul.raft.commitTime`, and the
    /// timer of the endpoint the command belongs to (`consul.kvs.apply`,
    /// ...), if [`write_metric`] names one.
    pub fn applied(&self, endpoint: Option<&'static str>, took: Duration) {
        self.incr("consul.raft.apply", 1.0);
        self.time("consul.raft.commitTime", took);
        if let Some(name) = endpoint {
            self.time(name, took);
        }
    }

    /// What Raft's metrics say now: a change of role counts in
    /// `consul.raft.state.<role>`, and a leader samples how long since a
    /// quorum of followers last answered it (`consul.raft.leader.lastContact`).
    pub fn observe_raft(&self, m: &RaftMetrics<u64, BasicNode>) {
        let changed = self.with(|i| {
            let changed = i.raft_state != Some(m.state);
            i.raft_state = Some(m.state);
            changed
        });
        if changed {
            let role = match m.state {
                ServerState::Leader => Some("consul.raft.state.leader"),
                ServerState::Candidate => Some("consul.raft.state.candidate"),
                ServerState::Follower => Some("consul.raft.state.follower"),
                ServerState::Learner | ServerState::Shutdown => None,
            };
            if let Some(role) = role {
                self.incr(role, 1.0);
            }
        }
        if let (ServerState::Leader, Some(ms)) = (m.state, m.millis_since_quorum_ack) {
            self.sample("consul.raft.leader.lastContact", ms as f64);
        }
    }
}

/// The timer Consul keeps for the endpoint that writes `cmd` (its RPC
/// endpoint's `Apply`), if it keeps one.
pub fn write_metric(cmd: &Command) -> Option<&'static str> {
    Some(match cmd {
        Command::Kv { .. } => "consul.kvs.apply",
        Command::Txn(_) => "consul.txn.apply",
        Command::Register { .. } => "consul.catalog.register",
        Command::Deregister { .. } => "consul.catalog.deregister",
        Command::SessionCreate(_) | Command::SessionDestroy { .. } => "consul.session.apply",
        Command::IntentionSet(_) | Command::IntentionDelete { .. } => "consul.intention.apply",
        Command::QuerySet(_) | Command::QueryDelete { .. } => "consul.prepared-query.apply",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_count_sum_and_spread() {
        let r = Registry::default();
        r.incr("consul.rpc.request", 1.0);
        r.incr("consul.rpc.request", 1.0);
        for v in [4.0, 2.0, 6.0] {
            r.sample("consul.raft.commitTime", v);
        }
        let s = r.snapshot();
        let (name, c) = &s.counters[0];
        assert_eq!((*name, c.count, c.sum), ("consul.rpc.request", 2, 2.0));
        let (_, t) = &s.samples[0];
        assert_eq!((t.count, t.sum, t.min, t.max), (3, 12.0, 2.0, 6.0));
        assert_eq!(t.mean(), 4.0);
        assert_eq!(t.stddev(), 2.0);
        assert_eq!(t.quantile(0.5), 4.0);
        assert_eq!(t.quantile(0.99), 6.0);
        assert!(Aggregate::default().quantile(0.5).is_nan());
    }

    #[test]
    fn writes_count_under_their_endpoints_names() {
        let r = Registry::default();
        let kv = Command::Kv {
            op: crate::state::KvOp::Set,
            key: "k".into(),
            value: b"v".to_vec(),
            flags: 0,
        };
        r.applied(write_metric(&kv), Duration::from_millis(3));
        r.applied(
            write_metric(&Command::ReapTombstones { up_to: 1 }),
            Duration::ZERO,
        );
        let s = r.snapshot();
        let names: Vec<_> = s.samples.iter().map(|(n, a)| (*n, a.count)).collect();
        assert_eq!(
            names,
            [("consul.kvs.apply", 1), ("consul.raft.commitTime", 2)]
        );
        assert_eq!(s.counters[0].1.count, 2);
    }
}
