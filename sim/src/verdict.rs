//! The floor the checks and the feature modules share: what a check says
//! ([`CheckResult`]), and when the timeline left each node unreachable
//! ([`Outages`]), which every liveness check excuses. Both engines, the
//! feature modules (services, mesh, federation) and `checks/` read these;
//! nothing here calls any of them, so the verdicts flow one way: up from
//! the features to the checks that gather them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::action::{starts_waiting, Action, TimedAction};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check, as written.
    pub check: String,
    /// Whether it held.
    pub passed: bool,
    /// Evidence: what was measured, or what went wrong.
    pub detail: String,
}

/// Time spans per node, open-ended while they last.
#[derive(Debug, Default)]
pub(crate) struct Spans(BTreeMap<String, Vec<(Duration, Option<Duration>)>>);

impl Spans {
    fn open(&mut self, node: &str, at: Duration) {
        let spans = self.0.entry(node.to_owned()).or_default();
        if spans.last().is_none_or(|s| s.1.is_some()) {
            spans.push((at, None));
        }
    }

    fn close(&mut self, node: &str, at: Duration) {
        if let Some(last) = self.0.get_mut(node).and_then(|s| s.last_mut()) {
            if last.1.is_none() {
                last.1 = Some(at);
            }
        }
    }

    pub(crate) fn any_between(&self, node: &str, from: Duration, to: Duration) -> bool {
        self.0.get(node).is_some_and(|s| {
            s.iter()
                .any(|(a, b)| *a <= to && b.is_none_or(|b| b >= from))
        })
    }

    fn down_at(&self, node: &str, t: Option<Duration>) -> bool {
        self.0.get(node).is_some_and(|s| {
            s.iter().any(|(a, b)| match t {
                None => b.is_none(),
                Some(t) => *a <= t && b.is_none_or(|b| b > t),
            })
        })
    }

    /// The span containing `at`, if any: `Some(end)`, where `end` is `None`
    /// when it lasts to the end of the run.
    fn containing(&self, node: &str, at: Duration) -> Option<Option<Duration>> {
        self.0
            .get(node)?
            .iter()
            .find(|(a, b)| *a <= at && b.is_none_or(|b| b > at))
            .map(|s| s.1)
    }
}

/// When each node was unreachable: down (not started yet, crashed, or gone
/// after leaving), cut off by a partition, or paused.
#[derive(Debug, Default)]
pub struct Outages {
    pub(crate) down: Spans,
    cut: Spans,
    /// Frozen by a pause: running, but answering nothing.
    paused: Spans,
}

/// Applies `action`'s cuts and heals to `cut`, the links cut so far as
/// (cut-off node, node it cannot reach) pairs. Links are cut and healed
/// pair by pair: an isolated node is cut off from everyone, but its peers
/// are not cut off themselves (only one direction is recorded), while
/// both sides of a partition are. Other actions change nothing here.
pub(crate) fn cut_links(cut: &mut BTreeSet<(String, String)>, names: &[String], action: &Action) {
    let pairs = |x: &[String], y: &[String]| -> Vec<(String, String)> {
        x.iter()
            .flat_map(|a| {
                y.iter()
                    .filter(move |b| *b != a)
                    .map(move |b| (a.clone(), b.clone()))
            })
            .collect()
    };
    match action {
        Action::Isolate(n) => {
            let rest: Vec<String> = names.iter().filter(|x| !n.contains(x)).cloned().collect();
            cut.extend(pairs(n, &rest));
        }
        // A one-way cut takes both sides' probes down with it (one loses
        // its pings, the other its acks): both are cut off.
        Action::Partition(x, y) | Action::OneWay(x, y) => {
            cut.extend(pairs(x, y));
            cut.extend(pairs(y, x));
        }
        Action::Heal => cut.clear(),
        Action::HealBetween(x, y) => {
            for p in pairs(x, y).into_iter().chain(pairs(y, x)) {
                cut.remove(&p);
            }
        }
        // A clog holds streams only; datagrams still cross.
        Action::Crash(_)
        | Action::Clog(..)
        | Action::Leave(_)
        | Action::Restart(_)
        | Action::Join(_)
        | Action::Loss(_)
        | Action::LinkLoss(..)
        | Action::Latency(..)
        | Action::Skew(..)
        | Action::Drift(..)
        | Action::ClockJump(..)
        | Action::Slow(..)
        | Action::Pause(..)
        | Action::Resume(_)
        // The crash itself joins the timeline when it strikes.
        | Action::CrashInFsync(_)
        | Action::Corrupt(_)
        | Action::FsyncError(_)
        | Action::DiskFull(..)
        | Action::TcpReset(_)
        | Action::Buggify(..)
        | Action::KvLoad(..)
        | Action::RegisterService(..)
        | Action::Intention(..)
        | Action::CaRotate(_)
        | Action::AclToken(..) => {}
    }
}

impl Outages {
    /// Reads the outages off a resolved timeline.
    pub fn from_timeline(names: &[String], actions: &[TimedAction]) -> Self {
        let mut o = Outages::default();
        // A node that waits for its join is absent until then.
        for n in names.iter().filter(|n| starts_waiting(n, actions)) {
            o.down.open(n, Duration::ZERO);
        }
        // A node is cut off while a link that an action cut it off by is
        // still cut (see `cut_links`).
        let cut_off = |cut: &BTreeSet<(String, String)>| -> BTreeSet<String> {
            cut.iter().map(|(x, _)| x.clone()).collect()
        };
        let mut cut: BTreeSet<(String, String)> = BTreeSet::new();
        for a in actions {
            let before = cut_off(&cut);
            match &a.action {
                Action::Crash(n) | Action::Leave(n) => n.iter().for_each(|x| {
                    o.paused.close(x, a.at);
                    o.down.open(x, a.at)
                }),
                Action::Restart(n) | Action::Join(n) => {
                    n.iter().for_each(|x| o.down.close(x, a.at))
                }
                Action::Pause(n, _) => n.iter().for_each(|x| o.paused.open(x, a.at)),
                Action::Resume(n) => n.iter().for_each(|x| o.paused.close(x, a.at)),
                other => cut_links(&mut cut, names, other),
            }
            let after = cut_off(&cut);
            after.difference(&before).for_each(|n| o.cut.open(n, a.at));
            before.difference(&after).for_each(|n| o.cut.close(n, a.at));
        }
        o
    }

    /// Whether `node` was down or cut off at any time in `[from, to]`.
    pub fn any_between(&self, node: &str, from: Duration, to: Duration) -> bool {
        [&self.down, &self.cut, &self.paused]
            .iter()
            .any(|s| s.any_between(node, from, to))
    }

    /// Whether `node` is down or cut off at `t` (`None`: at the end).
    pub fn out_at(&self, node: &str, t: Option<Duration>) -> bool {
        [&self.down, &self.cut, &self.paused]
            .iter()
            .any(|s| s.down_at(node, t))
    }

    /// When `node`'s outage that includes `at` ended (`None`: never).
    pub(crate) fn end_of(&self, node: &str, at: Duration) -> Option<Duration> {
        self.down
            .containing(node, at)
            .or_else(|| self.cut.containing(node, at))
            .or_else(|| self.paused.containing(node, at))
            .flatten()
    }
}
