//! The checks: evaluates a scenario's checks against the trace of its run.
//!
//! [`evaluate`] turns each [`Check`] a scenario asks for into a
//! [`CheckResult`]. Membership checks
//! (convergence, failure detection, false failures) and coordinate
//! accuracy are judged here; Raft and KV checks in [`consensus`], over
//! the histories [`linearizability`] searches; the checks about a
//! feature's own trace events (services, DNS, prepared-query failover,
//! intentions) live beside the feature in [`engine::full`](crate::engine::full),
//! and are called from here. Checks read a finished run and change
//! nothing; the engines never call into them.

pub mod consensus;
pub mod linearizability;
pub mod locks;
pub mod serializability;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::action::{Action, TimedAction};
use crate::engine::RunOutput;
use crate::net::topology::Topology;
use crate::output::trace::{Trace, TraceEvent};
use crate::scenario::{Check, Scenario};
use crate::tomography::Accuracy;
use crate::verdict::{CheckResult, Outages};

/// Every observer's view of membership, built by feeding it the trace in
/// order: member -> the last membership event about it. A node that
/// restarts or joins starts its view afresh.
///
/// A run that starts converged (`converged` in the trace) gives each named
/// node a view of all of them alive: kept once per pool, with each view
/// holding only what it heard since, so 10,000 such views cost 10,000
/// names, not 10⁸.
#[derive(Debug, Default)]
pub struct Views<'t> {
    views: BTreeMap<&'t str, View<'t>>,
    /// Looked up, never iterated: a hash set's order does not matter.
    bases: Vec<HashSet<&'t str>>,
}

/// One observer's view, with its members counted by state as it changes
/// (recounting every second would cost N² per sample).
#[derive(Debug, Default)]
struct View<'t> {
    /// The converged start it began from, if any: those members are alive
    /// unless `members` says otherwise.
    base: Option<usize>,
    members: BTreeMap<&'t str, &'t str>,
    counts: Membership,
}

impl<'t> View<'t> {
    /// What this view last heard about `member`: its own news, else the
    /// converged start it began from.
    fn lookup(&self, bases: &[HashSet<&'t str>], member: &str) -> Option<&'t str> {
        self.members.get(member).copied().or_else(|| {
            self.base
                .filter(|&b| bases[b].contains(member))
                .map(|_| "alive")
        })
    }
}

/// Members an observer sees in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Membership {
    /// Alive (including suspected: they still count, as in Serf).
    pub alive: usize,
    /// Of those, suspected.
    pub suspect: usize,
    /// Declared failed.
    pub failed: usize,
    /// Left gracefully.
    pub left: usize,
}

impl Membership {
    fn count(&mut self, event: &str, add: bool) {
        let bump = |v: &mut usize| {
            if add {
                *v += 1
            } else {
                *v -= 1
            }
        };
        match event {
            "failed" => bump(&mut self.failed),
            "left" => bump(&mut self.left),
            e if alive_word(e) => {
                bump(&mut self.alive);
                if e == "suspect" {
                    bump(&mut self.suspect);
                }
            }
            _ => {}
        }
    }
}

impl<'t> Views<'t> {
    /// Applies one trace event.
    pub fn apply(&mut self, e: &'t TraceEvent) {
        if e.node == "sim" {
            let names = || e.detail.as_deref().unwrap_or("").split(',');
            if e.event == "restart" || e.event == "join" {
                for n in names() {
                    self.views.remove(n);
                }
            } else if e.event == "converged" {
                let base: HashSet<&str> = names().collect();
                let alive = base.len().saturating_sub(1);
                for n in &base {
                    let mut v = View {
                        base: Some(self.bases.len()),
                        ..View::default()
                    };
                    v.counts.alive = alive;
                    self.views.insert(n, v);
                }
                self.bases.push(base);
            }
        } else if let Some(m) = &e.member {
            let v = self.views.entry(e.node.as_str()).or_default();
            let old = v.lookup(&self.bases, m);
            v.members.insert(m.as_str(), e.event.as_str());
            // A node's view of itself is not membership.
            if *m != e.node {
                if let Some(old) = old {
                    v.counts.count(old, false);
                }
                v.counts.count(&e.event, true);
            }
        }
    }

    /// How many members `observer` sees in each state (itself excluded).
    pub fn counts(&self, observer: &str) -> Membership {
        self.views
            .get(observer)
            .map(|v| v.counts)
            .unwrap_or_default()
    }

    /// What `observer` last heard about `member`.
    pub fn get(&self, observer: &str, member: &str) -> Option<&'t str> {
        self.of(observer)(member)
    }

    /// What `observer` last heard about a member, for asking about many.
    pub fn of(&self, observer: &str) -> impl Fn(&str) -> Option<&'t str> + '_ {
        let v = self.views.get(observer);
        move |member| v?.lookup(&self.bases, member)
    }

    /// The views after every event up to `until` (the end if `None`).
    pub fn at(trace: &'t Trace, until: Option<Duration>) -> Self {
        let mut v = Views::default();
        for e in trace
            .events
            .iter()
            .take_while(|e| until.is_none_or(|u| e.at() <= u))
        {
            v.apply(e);
        }
        v
    }
}

/// Whether a membership event leaves the member counted as alive
/// (suspected counts, as in Serf).
pub fn alive_word(event: &str) -> bool {
    matches!(
        event,
        "joined" | "alive" | "updated" | "refuted" | "suspect"
    )
}

/// One node cut off by a fault, and how long each node it was cut off from
/// took to declare it failed (`None`: never did).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The node cut off.
    pub target: String,
    /// When the fault happened.
    pub fault_at: Duration,
    /// How long the node stayed cut off (`None`: to the end).
    pub lasted: Option<Duration>,
    /// Each observer and its detection delay.
    pub observers: Vec<(String, Option<Duration>)>,
}

/// Every crash, pause or partition in the timeline, per node it cut off, with who
/// detected it when. Observers are nodes of the same pool on the other side
/// that stayed up through the fault.
pub fn detections(
    topo: &Topology,
    actions: &[TimedAction],
    outages: &Outages,
    trace: &Trace,
) -> Vec<Detection> {
    let names = topo.names();
    // Every failure verdict, by member and observer, in time order: one
    // pass over the trace, not one per observer.
    let mut verdicts: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
    for (o, m, t) in trace.all("failed") {
        verdicts.entry((m, o)).or_default().push(t);
    }
    let mut out = Vec::new();
    for a in actions {
        let sides: Vec<(Vec<String>, Vec<String>)> = match &a.action {
            // A paused node answers nothing: as good as crashed to its
            // pool until it wakes.
            Action::Crash(set) | Action::Isolate(set) | Action::Pause(set, _) => set
                .iter()
                .map(|t| {
                    (
                        vec![t.clone()],
                        names.iter().filter(|n| !set.contains(n)).cloned().collect(),
                    )
                })
                .collect(),
            Action::Partition(x, y) => x
                .iter()
                .map(|t| (vec![t.clone()], y.clone()))
                .chain(y.iter().map(|t| (vec![t.clone()], x.clone())))
                .collect(),
            _ => continue,
        };
        // Who already holds a target failed when the fault strikes (say,
        // it was cut off before it crashed) has nothing left to declare.
        let before = Views::at(trace, Some(a.at));
        for (target, others) in sides {
            let target = &target[0];
            let Some(ti) = topo.index(target) else {
                continue;
            };
            let end = outages.end_of(target, a.at);
            let lasted = end.map(|e| e - a.at);
            let observers = others
                .iter()
                .filter(|o| *o != target)
                .filter(|o| {
                    topo.index(o)
                        .is_some_and(|oi| topo.pool_of(oi) == topo.pool_of(ti))
                })
                .filter(|o| !matches!(before.get(o, target), Some("failed" | "left")))
                // An observer that was itself down while the target was out
                // may have missed it.
                .filter(|o| {
                    !outages
                        .down
                        .any_between(o, a.at, end.unwrap_or(Duration::MAX))
                        && !matches!(&a.action, Action::Crash(s) if s.contains(o))
                })
                .map(|o| {
                    let first = verdicts
                        .get(&(target.as_str(), o.as_str()))
                        .and_then(|ts| ts.iter().find(|t| **t >= a.at))
                        .filter(|t| end.is_none_or(|e| **t <= e))
                        .map(|t| *t - a.at);
                    (o.clone(), first)
                })
                .collect();
            out.push(Detection {
                target: target.clone(),
                fault_at: a.at,
                lasted,
                observers,
            });
        }
    }
    out
}

/// Evaluates every check of `scenario` on a run of `timeline`.
pub fn evaluate(
    scenario: &Scenario,
    timeline: &[TimedAction],
    out: &RunOutput,
) -> Vec<CheckResult> {
    let trace = &out.trace;
    let names = scenario.names();
    let outages = Outages::from_timeline(&names, timeline);
    scenario
        .checks
        .iter()
        .map(|c| match c {
            Check::Converged { at } => converged(scenario, out, &outages, *at),
            Check::FailedWithin { targets, within } => {
                let mut d = detections(&scenario.topology, timeline, &outages, trace);
                if let Some(seen) = &out.observed {
                    for x in &mut d {
                        x.observers.retain(|(o, _)| seen.contains(o));
                    }
                }
                failed_within(&d, targets, *within)
            }
            Check::NoFalseFailures => no_false_failures(scenario, trace, &outages),
            Check::CoordinateAccuracy {
                median_below,
                p90_below,
            } => coordinate_accuracy(
                "coordinate_accuracy",
                out.accuracy.last(),
                *median_below,
                *p90_below,
            ),
            Check::WanCoordinateAccuracy {
                median_below,
                p90_below,
            } => coordinate_accuracy(
                "wan_coordinate_accuracy",
                out.wan_accuracy.last(),
                *median_below,
                *p90_below,
            ),
            Check::QueryFailover { service, within } => crate::engine::full::federation::failover(
                &scenario.topology,
                timeline,
                trace,
                out.virtual_time,
                service,
                *within,
            ),
            Check::LeaderWithin { within } => {
                consensus::leader_within(&scenario.topology, timeline, out, *within)
            }
            Check::RecoversWithin { within } => {
                consensus::recovers_within(&scenario.topology, timeline, out, *within)
            }
            Check::SingleLeader => consensus::single_leader(&scenario.topology, trace),
            Check::TermsDurable => consensus::terms_durable(trace),
            Check::Linearizable => consensus::linearizable(&out.history),
            Check::NoLostWrites => consensus::no_lost_writes(&out.history, &out.replicas),
            Check::LocksExclusive => locks::locks_exclusive(&out.holds),
            Check::StrictSerializable => consensus::strict_serializable(&out.txns),
            Check::ReplicasConverge => {
                consensus::replicas_converge(&scenario.topology, &out.replicas)
            }
            Check::AclTokensWork { within } => crate::engine::full::acl::tokens_work(
                &scenario.topology,
                timeline,
                &outages,
                trace,
                out.virtual_time,
                *within,
            ),
            Check::IntentionsEnforced { within } => {
                let default_allow = scenario.acl_default_allow.unwrap_or(true);
                crate::engine::full::mesh::enforced(timeline, trace, *within, default_allow)
            }
            Check::ServiceVisible { service, within } | Check::DnsResolves { service, within } => {
                let seen = match c {
                    Check::DnsResolves { .. } => crate::engine::full::services::Seen::Dns,
                    _ => crate::engine::full::services::Seen::Catalog,
                };
                crate::engine::full::services::visible(
                    &scenario.topology,
                    timeline,
                    &outages,
                    trace,
                    out.virtual_time,
                    service,
                    *within,
                    seen,
                )
            }
        })
        .collect()
}

fn coordinate_accuracy(
    kind: &str,
    last: Option<&Accuracy>,
    median_below: f64,
    p90_below: Option<f64>,
) -> CheckResult {
    let check = match p90_below {
        Some(p) => format!("{kind} median<{median_below} p90<{p}"),
        None => format!("{kind} median<{median_below}"),
    };
    let Some(a) = last else {
        return CheckResult {
            check,
            passed: false,
            detail: "no coordinates were scored".into(),
        };
    };
    let passed = a.median < median_below && p90_below.is_none_or(|p| a.p90 < p);
    CheckResult {
        check,
        passed,
        detail: format!(
            "at {:.0}s over {} pairs: median {:.3}, p90 {:.3}, p99 {:.3}, mean abs {:.2} ms",
            a.at.as_secs_f64(),
            a.pairs,
            a.median,
            a.p90,
            a.p99,
            a.mean_abs_ms
        ),
    }
}

fn examples(list: &[String]) -> String {
    list.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
}

fn converged(
    scenario: &Scenario,
    out: &RunOutput,
    outages: &Outages,
    at: Option<Duration>,
) -> CheckResult {
    let topo = &scenario.topology;
    let views = Views::at(&out.trace, at);
    let names = topo.names();
    let running: Vec<usize> = (0..names.len())
        .filter(|&i| !outages.out_at(&names[i], at))
        .collect();
    let mut missing = Vec::new();
    // With a sampled trace, only the sampled nodes' views are known.
    let observed = |a: &usize| out.observed.as_ref().is_none_or(|o| o.contains(&names[*a]));
    for a in running.iter().filter(|a| observed(a)) {
        let a = *a;
        let seen_by = views.of(&names[a]);
        for &b in running
            .iter()
            .filter(|&&b| b != a && topo.pool_of(b) == topo.pool_of(a))
        {
            let seen = seen_by(&names[b]);
            let (a, b) = (&names[a], &names[b]);
            if !seen.is_some_and(alive_word) {
                missing.push(format!("{a} sees {b} as {}", seen.unwrap_or("unknown")));
            }
        }
    }
    let when = at.map_or(String::new(), |t| format!(" at={t:?}"));
    CheckResult {
        check: format!("converged{when}"),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            match &out.observed {
                None => format!(
                    "all {} running nodes see every other node of their pool alive",
                    running.len()
                ),
                Some(_) => format!(
                    "all {} observed running nodes (of {}) see every other node of their pool alive",
                    running.iter().filter(|a| observed(a)).count(),
                    running.len()
                ),
            }
        } else {
            format!(
                "{} views disagree, e.g. {}",
                missing.len(),
                examples(&missing)
            )
        },
    }
}

fn failed_within(all: &[Detection], targets: &[String], within: Duration) -> CheckResult {
    let check = if targets.is_empty() {
        format!("failed_within within={within:?}")
    } else {
        format!(
            "failed_within targets={} within={within:?}",
            targets.join(",")
        )
    };
    let mut late = Vec::new();
    let mut slowest = Duration::ZERO;
    let (mut judged, mut skipped) = (0, 0);
    for t in targets {
        if !all.iter().any(|d| d.target == *t) {
            late.push(format!(
                "no crash, pause or partition of {t} in the timeline"
            ));
        }
    }
    for d in all
        .iter()
        .filter(|d| targets.is_empty() || targets.contains(&d.target))
    {
        // A node back before the deadline need not have been declared
        // failed, and one nobody could see (say, in another pool) cannot be.
        if d.lasted.is_some_and(|l| l < within) || d.observers.is_empty() {
            skipped += 1;
            continue;
        }
        judged += 1;
        for (o, first) in &d.observers {
            match first {
                Some(t) if *t <= within => slowest = slowest.max(*t),
                Some(t) => late.push(format!(
                    "{o} declared {} after {:.3}s",
                    d.target,
                    t.as_secs_f64()
                )),
                None => late.push(format!("{o} never declared {} failed", d.target)),
            }
        }
    }
    let passed = late.is_empty() && judged > 0;
    CheckResult {
        check,
        passed,
        detail: if judged == 0 && late.is_empty() {
            format!("no fault lasted {within:?} or longer with anyone to notice ({skipped} others)")
        } else if late.is_empty() {
            format!(
                "{judged} faults detected by every observer; slowest {:.3}s after the fault{}",
                slowest.as_secs_f64(),
                if skipped > 0 {
                    format!(" ({skipped} shorter or unobserved faults not judged)")
                } else {
                    String::new()
                }
            )
        } else {
            format!("{} misses: {}", late.len(), examples(&late))
        },
    }
}

/// How long before a failure verdict an outage still explains it: the
/// longest suspicion plus a few probes.
pub fn detection_window(scenario: &Scenario) -> Duration {
    let g = &scenario.gossip;
    g.suspicion_timeout(scenario.topology.nodes.len()) * g.suspicion_max_timeout_mult as u32
        + g.probe_interval * 3
}

fn no_false_failures(scenario: &Scenario, trace: &Trace, outages: &Outages) -> CheckResult {
    // A verdict is justified if either side was unreachable within the time
    // it can take to reach one, or if it relays a justified verdict about
    // the same incarnation: a node cut off declares the others dead, and
    // once it can talk again its word spreads (as memberlist's does) until
    // they refute it.
    let window = detection_window(scenario);
    let mut total = 0;
    // (member, incarnation) -> when a justified verdict about it was made.
    let mut justified: HashMap<(&str, Option<u32>), Duration> = HashMap::new();
    let mut wrong = Vec::new();
    for e in trace
        .events
        .iter()
        .filter(|e| e.event == "failed" && e.node != "sim")
    {
        let (Some(m), o, t) = (e.member.as_deref(), e.node.as_str(), e.at()) else {
            continue;
        };
        total += 1;
        let from = t.saturating_sub(window);
        let wave = (m, e.incarnation);
        let relayed = justified.get(&wave).is_some_and(|at| *at >= from);
        if relayed || outages.any_between(m, from, t) || outages.any_between(o, from, t) {
            justified.insert(wave, t);
        } else {
            wrong.push(format!(
                "{o} declared {m} failed at {:.3}s",
                t.as_secs_f64()
            ));
        }
    }
    CheckResult {
        check: "no_false_failures".into(),
        passed: wrong.is_empty(),
        detail: if total == 0 {
            "no failure verdicts".into()
        } else if wrong.is_empty() {
            format!("{total} failure verdicts, all about or by unreachable nodes")
        } else {
            format!("{} false: {}", wrong.len(), examples(&wrong))
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `action` at `s` seconds.
    pub(crate) fn at(s: u64, action: Action) -> TimedAction {
        TimedAction {
            at: Duration::from_secs(s),
            action,
        }
    }

    /// Owned names.
    pub(crate) fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_already_held_failed_need_not_be_declared_again() {
        let names = v(&["a", "b"]);
        let ev = |t: u64, node: &str, event: &str, member: &str| crate::output::trace::TraceEvent {
            t_us: t * 1_000_000,
            node: node.into(),
            event: event.into(),
            member: Some(member.into()),
            incarnation: Some(1),
            detail: None,
        };
        let timeline = [
            at(10, Action::Isolate(v(&["a"]))),
            at(20, Action::Crash(v(&["a"]))),
        ];
        let trace = Trace {
            events: vec![ev(0, "b", "joined", "a"), ev(15, "b", "failed", "a")],
        };
        let topo = Topology::lan("x", 2);
        let topo = Topology {
            nodes: topo
                .nodes
                .into_iter()
                .zip(&names)
                .map(|(mut n, name)| {
                    n.name = name.clone();
                    n
                })
                .collect(),
            ..topo
        };
        let o = Outages::from_timeline(&names, &timeline);
        let d = detections(&topo, &timeline, &o, &trace);
        // The isolation was detected at 15 s; the crash found b already
        // holding a failed, so b is no observer of it.
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0].observers,
            vec![("b".to_string(), Some(Duration::from_secs(5)))]
        );
        assert!(d[1].observers.is_empty());
    }

    #[test]
    fn a_cut_off_nodes_verdict_may_spread_but_others_may_not() {
        let ev = |ms: u64, node: &str, member: &str, inc: u32| crate::output::trace::TraceEvent {
            t_us: ms * 1000,
            node: node.into(),
            event: "failed".into(),
            member: Some(member.into()),
            incarnation: Some(inc),
            detail: None,
        };
        let s = crate::scenario::ScenarioBuilder::new("t", Duration::from_secs(60))
            .datacenter("dc1", 4)
            .build();
        let names = s.names();
        let o = Outages::from_timeline(&names, &[at(10, Action::Isolate(v(&["dc1-0"])))]);
        // dc1-0, cut off, declares dc1-1 dead; dc1-2 hears it from dc1-0.
        let relayed = Trace {
            events: vec![
                ev(30_000, "dc1-0", "dc1-1", 1),
                ev(30_001, "dc1-2", "dc1-1", 1),
            ],
        };
        assert!(no_false_failures(&s, &relayed, &o).passed);
        // A verdict about another incarnation, or with no cut-off origin,
        // is not excused by it.
        for bad in [
            ev(30_002, "dc1-3", "dc1-1", 2),
            ev(30_002, "dc1-3", "dc1-2", 1),
        ] {
            let mut t = relayed.clone();
            t.events.push(bad);
            let r = no_false_failures(&s, &t, &o);
            assert!(!r.passed && r.detail.starts_with("1 false"), "{}", r.detail);
        }
    }

    #[test]
    fn a_partial_heal_ends_only_the_outages_it_heals() {
        let names = v(&["a", "b", "c", "d"]);
        let o = Outages::from_timeline(
            &names,
            &[
                at(10, Action::Isolate(v(&["a"]))),
                at(20, Action::Isolate(v(&["b"]))),
                at(30, Action::HealBetween(v(&["a"]), names.clone())),
                at(40, Action::Crash(v(&["c"]))),
                at(50, Action::Restart(v(&["c"]))),
            ],
        );
        let t = |s| Some(Duration::from_secs(s));
        assert!(o.out_at("a", t(25)) && !o.out_at("a", t(35)));
        // b stays cut off: its links to c and d are still cut; they are not cut off.
        assert!(o.out_at("b", t(35)) && o.out_at("b", None));
        assert!(!o.out_at("d", t(35)) && !o.out_at("d", None));
        assert!(o.out_at("c", t(45)) && !o.out_at("c", t(55)));
        assert_eq!(
            o.end_of("a", Duration::from_secs(10)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(o.end_of("b", Duration::from_secs(20)), None);
    }
}
