//! Evaluates a scenario's checks against the trace of its run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::cluster::{Accuracy, Action, RunOutput, TimedAction};
use crate::scenario::{Check, Scenario};
use crate::trace::Trace;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The check, as written.
    pub check: String,
    /// Whether it held.
    pub passed: bool,
    /// Evidence: what was measured, or what went wrong.
    pub detail: String,
}

/// When each node was unreachable: crashed, cut off, or gone after leaving.
#[derive(Debug, Default)]
struct Outages {
    spans: BTreeMap<String, Vec<(Duration, Option<Duration>)>>,
}

impl Outages {
    fn from_actions(actions: &[TimedAction]) -> Self {
        let mut o = Outages::default();
        let mut isolated: BTreeSet<String> = BTreeSet::new();
        for a in actions {
            match &a.action {
                Action::Crash(n) | Action::Leave(n) => n.iter().for_each(|x| o.open(x, a.at)),
                Action::Isolate(n) => {
                    for x in n {
                        o.open(x, a.at);
                        isolated.insert(x.clone());
                    }
                }
                Action::Restart(n) => n.iter().for_each(|x| o.close(x, a.at)),
                Action::Heal => {
                    for x in std::mem::take(&mut isolated) {
                        o.close(&x, a.at);
                    }
                }
                Action::Loss(_) | Action::Skew(..) => {}
            }
        }
        o
    }

    fn open(&mut self, node: &str, at: Duration) {
        let spans = self.spans.entry(node.to_owned()).or_default();
        if spans.last().is_none_or(|s| s.1.is_some()) {
            spans.push((at, None));
        }
    }

    fn close(&mut self, node: &str, at: Duration) {
        if let Some(last) = self.spans.get_mut(node).and_then(|s| s.last_mut()) {
            if last.1.is_none() {
                last.1 = Some(at);
            }
        }
    }

    /// Whether `node` was unreachable at any time in `[from, to]`.
    fn any_between(&self, node: &str, from: Duration, to: Duration) -> bool {
        self.spans.get(node).is_some_and(|s| {
            s.iter()
                .any(|(a, b)| *a <= to && b.is_none_or(|b| b >= from))
        })
    }

    /// Whether `node` is unreachable at the end of the run.
    fn down_at_end(&self, node: &str) -> bool {
        self.spans
            .get(node)
            .and_then(|s| s.last())
            .is_some_and(|s| s.1.is_none())
    }
}

/// Each observer's final view: member -> last membership event. A restart
/// starts an observer's view afresh.
fn final_views(trace: &Trace) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut views: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for e in &trace.events {
        if e.node == "sim" {
            if e.event == "restart" {
                for n in e.detail.as_deref().unwrap_or("").split(',') {
                    views.remove(n);
                }
            }
            continue;
        }
        if let Some(m) = &e.member {
            views
                .entry(e.node.clone())
                .or_default()
                .insert(m.clone(), e.event.clone());
        }
    }
    views
}

fn alive_word(event: &str) -> bool {
    matches!(
        event,
        "joined" | "alive" | "updated" | "refuted" | "suspect"
    )
}

/// Evaluates every check of `scenario` on the run's output.
pub fn evaluate(scenario: &Scenario, out: &RunOutput) -> Vec<CheckResult> {
    let trace = &out.trace;
    let outages = Outages::from_actions(&scenario.actions);
    let nodes = &scenario.cluster.nodes;
    let running: Vec<&String> = nodes.iter().filter(|n| !outages.down_at_end(n)).collect();
    scenario
        .checks
        .iter()
        .map(|c| match c {
            Check::Converged => converged(trace, &running),
            Check::FailedWithin { node, within } => {
                failed_within(scenario, trace, &running, node, *within)
            }
            Check::NoFalseFailures => no_false_failures(scenario, trace, &outages),
            Check::CoordinateAccuracy {
                median_below,
                p90_below,
            } => coordinate_accuracy(out.accuracy.last(), *median_below, *p90_below),
        })
        .collect()
}

fn coordinate_accuracy(
    last: Option<&Accuracy>,
    median_below: f64,
    p90_below: Option<f64>,
) -> CheckResult {
    let check = match p90_below {
        Some(p) => format!("coordinate_accuracy median<{median_below} p90<{p}"),
        None => format!("coordinate_accuracy median<{median_below}"),
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

fn converged(trace: &Trace, running: &[&String]) -> CheckResult {
    let views = final_views(trace);
    let mut missing = Vec::new();
    for a in running {
        for b in running.iter().filter(|b| *b != a) {
            let seen = views.get(*a).and_then(|v| v.get(*b)).map(String::as_str);
            if !seen.is_some_and(alive_word) {
                missing.push(format!("{a} sees {b} as {}", seen.unwrap_or("unknown")));
            }
        }
    }
    CheckResult {
        check: "converged".into(),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("all {} running nodes see each other alive", running.len())
        } else {
            format!(
                "{} views disagree, e.g. {}",
                missing.len(),
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    }
}

fn failed_within(
    scenario: &Scenario,
    trace: &Trace,
    running: &[&String],
    node: &str,
    within: Duration,
) -> CheckResult {
    let check = format!("failed_within node={node} within={within:?}");
    let fault = scenario
        .actions
        .iter()
        .filter(|a| matches!(&a.action, Action::Crash(n) | Action::Isolate(n) if n.iter().any(|x| x == node)))
        .map(|a| a.at)
        .next_back();
    let Some(fault) = fault else {
        return CheckResult {
            check,
            passed: false,
            detail: format!("no crash or partition of {node} in the timeline"),
        };
    };
    let mut slowest = Duration::ZERO;
    let mut late = Vec::new();
    for o in running.iter().filter(|o| o.as_str() != node) {
        let first = trace
            .observations("failed", node)
            .filter(|(obs, t)| obs == o && *t >= fault)
            .map(|(_, t)| t - fault)
            .min();
        match first {
            Some(d) if d <= within => slowest = slowest.max(d),
            Some(d) => late.push(format!("{o} after {:.3}s", d.as_secs_f64())),
            None => late.push(format!("{o} never")),
        }
    }
    CheckResult {
        check,
        passed: late.is_empty(),
        detail: if late.is_empty() {
            format!(
                "slowest of {} observers: {:.3}s after the fault",
                running.len().saturating_sub(1),
                slowest.as_secs_f64()
            )
        } else {
            format!("too slow: {}", late.join(", "))
        },
    }
}

fn no_false_failures(scenario: &Scenario, trace: &Trace, outages: &Outages) -> CheckResult {
    // A verdict is justified if either side was unreachable within the time
    // it can take to reach one: the longest suspicion plus a few probes.
    let g = &scenario.cluster.gossip;
    let window = g.suspicion_timeout(scenario.cluster.nodes.len())
        * g.suspicion_max_timeout_mult as u32
        + g.probe_interval * 3;
    let mut total = 0;
    let wrong: Vec<String> = trace
        .all("failed")
        .inspect(|_| total += 1)
        .filter(|(o, m, t)| {
            let from = t.saturating_sub(window);
            !outages.any_between(m, from, *t) && !outages.any_between(o, from, *t)
        })
        .map(|(o, m, t)| format!("{o} declared {m} failed at {:.3}s", t.as_secs_f64()))
        .collect();
    CheckResult {
        check: "no_false_failures".into(),
        passed: wrong.is_empty(),
        detail: if total == 0 {
            "no failure verdicts".into()
        } else if wrong.is_empty() {
            format!("{total} failure verdicts, all about or by unreachable nodes")
        } else {
            format!(
                "{} false: {}",
                wrong.len(),
                wrong.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            )
        },
    }
}
