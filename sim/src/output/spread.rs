//! How fast news spreads: for each leave, crash or join in a run, when each
//! member of the pool first heard of it. This is the broadcast convergence
//! curve (share of nodes that know a fact against time) that gossip
//! studies plot.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::action::TimedAction;
use crate::net::topology::Topology;
use crate::output::trace::Trace;
use crate::verdict::Outages;

/// One fact and how it spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    /// The member the fact is about.
    pub member: String,
    /// What happened to it: `left`, `failed` or `joined`.
    pub kind: &'static str,
    /// When it happened.
    pub at: Duration,
    /// Nodes that should hear of it (the member's pool, up at the time).
    pub audience: usize,
    /// How long after `at` each node that heard of it did, sorted.
    pub delays: Vec<Duration>,
}

/// Percentiles of one spread, for `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpreadSummary {
    /// `left dc1-3 at 30s`.
    pub fact: String,
    /// Nodes that should hear of it.
    pub audience: usize,
    /// Share that did.
    pub reached: f64,
    /// Seconds until half, 90 %, 99 % and 99.99 % of the audience knew
    /// (`None`: never got there).
    pub t50_s: Option<f64>,
    /// 90 %.
    pub t90_s: Option<f64>,
    /// 99 %.
    pub t99_s: Option<f64>,
    /// 99.99 %.
    pub t9999_s: Option<f64>,
}

impl Spread {
    /// Whether a membership event of kind `event` tells this fact.
    pub fn told_by(&self, event: &str) -> bool {
        match self.kind {
            "joined" => matches!(event, "joined" | "alive"),
            k => event == k,
        }
    }

    /// How long until `share` of the audience knew.
    pub fn time_to(&self, share: f64) -> Option<Duration> {
        let need = ((self.audience as f64) * share).ceil().max(1.0) as usize;
        self.delays.get(need.checked_sub(1)?).copied()
    }

    /// The percentiles.
    pub fn summary(&self) -> SpreadSummary {
        let s = |share| self.time_to(share).map(|d| d.as_secs_f64());
        SpreadSummary {
            fact: format!("{} {} at {:?}", self.kind, self.member, self.at),
            audience: self.audience,
            reached: if self.audience == 0 {
                0.0
            } else {
                self.delays.len() as f64 / self.audience as f64
            },
            t50_s: s(0.5),
            t90_s: s(0.9),
            t99_s: s(0.99),
            t9999_s: s(0.9999),
        }
    }
}

/// The facts a timeline creates, each with its audience (by name), before
/// anyone has heard of them.
pub fn facts(
    topo: &Topology,
    actions: &[TimedAction],
    outages: &Outages,
) -> Vec<(Spread, BTreeSet<String>)> {
    let mut out = Vec::new();
    for a in actions {
        let Some((set, kind)) = a.action.fact() else {
            continue;
        };
        for m in set {
            let Some(mi) = topo.index(m) else { continue };
            let audience: BTreeSet<String> = (0..topo.nodes.len())
                .filter(|&o| o != mi && topo.pool_of(o) == topo.pool_of(mi))
                .map(|o| topo.nodes[o].name.clone())
                .filter(|o| !outages.out_at(o, Some(a.at)))
                .collect();
            out.push((
                Spread {
                    member: m.clone(),
                    kind,
                    at: a.at,
                    audience: audience.len(),
                    delays: Vec::new(),
                },
                audience,
            ));
        }
    }
    out
}

/// Fills in the facts' delays from a full trace: each audience member's
/// first telling event between the fact and the next fact about the same
/// member.
pub fn from_trace(facts: Vec<(Spread, BTreeSet<String>)>, trace: &Trace) -> Vec<Spread> {
    let ends: Vec<Duration> = facts
        .iter()
        .map(|(f, _)| {
            facts
                .iter()
                .filter(|(g, _)| g.member == f.member && g.at > f.at)
                .map(|(g, _)| g.at)
                .min()
                .unwrap_or(Duration::MAX)
        })
        .collect();
    let mut out = Vec::with_capacity(facts.len());
    for ((mut f, audience), end) in facts.into_iter().zip(ends) {
        let mut seen = std::collections::BTreeSet::new();
        for e in &trace.events {
            let t = e.at();
            if t < f.at || t >= end || !audience.contains(&e.node) {
                continue;
            }
            if e.member.as_deref() == Some(f.member.as_str())
                && f.told_by(&e.event)
                && seen.insert(e.node.as_str())
            {
                f.delays.push(t - f.at);
            }
        }
        f.delays.sort();
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_count_the_whole_audience() {
        let s = Spread {
            member: "m".into(),
            kind: "left",
            at: Duration::from_secs(10),
            audience: 4,
            delays: vec![
                Duration::from_millis(100),
                Duration::from_millis(300),
                Duration::from_millis(700),
            ],
        };
        assert_eq!(s.time_to(0.5), Some(Duration::from_millis(300)));
        assert_eq!(s.time_to(0.75), Some(Duration::from_millis(700)));
        // One of four never heard: 99 % was never reached.
        assert_eq!(s.time_to(0.99), None);
        assert_eq!(s.summary().reached, 0.75);
    }
}
