//! Scenario files: a cluster, a timeline of faults, and checks on the result.
//!
//! Every key is documented in `scenarios/README.md`. Unknown keys are errors
//! that name the file, line and column, and list the keys allowed there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn::agent::config::parse_duration;
use cairn::gossip::Config as GossipConfig;
use serde::Deserialize;

use crate::cluster::{Action, ClusterSpec, PairRtts, TimedAction};
use crate::tomography::Matrix;

/// A parsed, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (used for the output directory).
    pub name: String,
    /// The cluster to simulate.
    pub cluster: ClusterSpec,
    /// Faults, in time order.
    pub actions: Vec<TimedAction>,
    /// Checks to evaluate on the trace.
    pub checks: Vec<Check>,
}

/// An assertion about a finished run.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// At the end, every running node sees every other running node alive.
    Converged,
    /// Every other running node declares `node` failed within `within` of
    /// the last fault that cut it off (crash or partition).
    FailedWithin {
        /// The node that should be detected.
        node: String,
        /// Detection deadline after the fault.
        within: Duration,
    },
    /// No node is declared failed unless it, or the node declaring it, was
    /// crashed, cut off or gone within the detection window before.
    NoFalseFailures,
    /// At the end, the coordinates predict the measured RTTs this well.
    CoordinateAccuracy {
        /// Largest acceptable median relative error.
        median_below: f64,
        /// Largest acceptable 90th-percentile relative error, if any.
        p90_below: Option<f64>,
    },
}

/// A problem with a scenario file, saying where and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    seed: u64,
    duration: String,
    tick: Option<String>,
    #[serde(default)]
    gossip: GossipSection,
    #[serde(default)]
    latency: LatencySection,
    datacenter: Vec<DatacenterSection>,
    #[serde(default)]
    event: Vec<EventSection>,
    #[serde(default)]
    check: Vec<CheckSection>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GossipSection {
    preset: Option<String>,
    disable_tcp_pings: Option<bool>,
    probe_interval: Option<String>,
    probe_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LatencySection {
    intra_dc: Option<String>,
    matrix: Option<String>,
    rows: Option<Vec<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatacenterSection {
    name: String,
    clients: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSection {
    at: String,
    action: String,
    #[serde(default)]
    targets: Vec<String>,
    rate: Option<f64>,
    offset: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckSection {
    kind: String,
    node: Option<String>,
    within: Option<String>,
    median_below: Option<f64>,
    p90_below: Option<f64>,
}

fn dur(what: &str, s: &str) -> Result<Duration, ScenarioError> {
    parse_duration(s).map_err(|e| ScenarioError(format!("{what}: {e}")))
}

/// Parses a signed duration like `"-250ms"` into milliseconds.
fn signed_ms(what: &str, s: &str) -> Result<i64, ScenarioError> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let ms = dur(what, body)?.as_millis() as i64;
    Ok(if neg { -ms } else { ms })
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError(format!("cannot read scenario {}: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse_in(&path.display().to_string(), &text, &base)
    }

    /// Parses and validates scenario text; `origin` names it in errors, and
    /// data files are found relative to the current directory.
    pub fn parse(origin: &str, text: &str) -> Result<Scenario, ScenarioError> {
        Self::parse_in(origin, text, Path::new("."))
    }

    /// Parses scenario text whose data files are relative to `base`.
    pub fn parse_in(origin: &str, text: &str, base: &Path) -> Result<Scenario, ScenarioError> {
        let f: File = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            ScenarioError(format!("{origin}{at}: {}", e.message()))
        })?;
        let ctx =
            |what: String| move |e: ScenarioError| ScenarioError(format!("{origin}: {what}: {e}"));

        let preset = f.gossip.preset.as_deref().unwrap_or("lan");
        let mut gossip = GossipConfig::preset(preset).ok_or_else(|| {
            ScenarioError(format!(
                "{origin}: gossip.preset {preset:?} is not one of lan, wan, local"
            ))
        })?;
        if let Some(v) = f.gossip.disable_tcp_pings {
            gossip.disable_tcp_pings = v;
        }
        if let Some(v) = &f.gossip.probe_interval {
            gossip.probe_interval =
                dur("gossip.probe_interval", v).map_err(ctx("gossip".into()))?;
        }
        if let Some(v) = &f.gossip.probe_timeout {
            gossip.probe_timeout = dur("gossip.probe_timeout", v).map_err(ctx("gossip".into()))?;
        }
        gossip
            .validate()
            .map_err(|e| ScenarioError(format!("{origin}: [gossip]: {e}")))?;
        if f.datacenter.len() != 1 {
            return Err(ScenarioError(format!(
                "{origin}: exactly one [[datacenter]] is supported so far (found {})",
                f.datacenter.len()
            )));
        }
        let dc = &f.datacenter[0];
        if dc.clients == 0 || dc.clients > 200 {
            return Err(ScenarioError(format!(
                "{origin}: datacenter {:?} needs between 1 and 200 clients (the full-stack engine serves tens of nodes)",
                dc.name
            )));
        }
        let nodes: Vec<String> = (0..dc.clients)
            .map(|i| format!("{}-{i}", dc.name))
            .collect();
        let duration = dur("duration", &f.duration).map_err(ctx("duration".into()))?;
        let tick = match &f.tick {
            Some(t) => dur("tick", t).map_err(ctx("tick".into()))?,
            None => Duration::from_millis(1),
        };
        if tick.is_zero() || tick > Duration::from_millis(100) {
            return Err(ScenarioError(format!(
                "{origin}: tick must be between 1us and 100ms"
            )));
        }
        let latency = match &f.latency.intra_dc {
            Some(l) => dur("latency.intra_dc", l).map_err(ctx("latency".into()))?,
            None => Duration::from_millis(1),
        };
        let rtts = match &f.latency.matrix {
            None if f.latency.rows.is_some() => {
                return Err(ScenarioError(format!(
                    "{origin}: latency.rows needs latency.matrix"
                )))
            }
            None => None,
            Some(file) => {
                let path: PathBuf = base.join(file);
                let m = Matrix::load(&path)
                    .map_err(|e| ScenarioError(format!("{origin}: latency.matrix: {e}")))?;
                let rows = match &f.latency.rows {
                    Some(r) if r.len() != nodes.len() => {
                        return Err(ScenarioError(format!(
                            "{origin}: latency.rows lists {} rows for {} nodes",
                            r.len(),
                            nodes.len()
                        )))
                    }
                    Some(r) => r.clone(),
                    None => PairRtts::first_complete_rows(&m, nodes.len())
                        .map_err(|e| ScenarioError(format!("{origin}: latency.matrix: {e}")))?,
                };
                let rtts = PairRtts::from_matrix(&m, &rows)
                    .map_err(|e| ScenarioError(format!("{origin}: latency.rows: {e}")))?;
                Some(Arc::new(rtts))
            }
        };

        let mut actions = Vec::new();
        for (i, e) in f.event.iter().enumerate() {
            let here = format!("event #{}", i + 1);
            let at = dur("at", &e.at).map_err(ctx(here.clone()))?;
            if at > duration {
                return Err(ScenarioError(format!(
                    "{origin}: {here} at {} is after the end of the run ({})",
                    e.at, f.duration
                )));
            }
            for t in &e.targets {
                if !nodes.contains(t) {
                    return Err(ScenarioError(format!(
                        "{origin}: {here} targets unknown node {t:?} (nodes are {}-0 .. {}-{})",
                        dc.name,
                        dc.name,
                        nodes.len() - 1
                    )));
                }
            }
            let need_targets = || {
                if e.targets.is_empty() {
                    Err(ScenarioError(format!(
                        "{origin}: {here} ({}) needs targets",
                        e.action
                    )))
                } else {
                    Ok(e.targets.clone())
                }
            };
            let action = match e.action.as_str() {
                "partition" => Action::Isolate(need_targets()?),
                "heal" => Action::Heal,
                "crash" => Action::Crash(need_targets()?),
                "restart" => Action::Restart(need_targets()?),
                "leave" => Action::Leave(need_targets()?),
                "loss" => {
                    let r = e.rate.ok_or_else(|| ScenarioError(format!("{origin}: {here} (loss) needs rate")))?;
                    if !(0.0..=1.0).contains(&r) {
                        return Err(ScenarioError(format!("{origin}: {here}: rate must be between 0 and 1")));
                    }
                    Action::Loss(r)
                }
                "skew" => {
                    let o = e
                        .offset
                        .as_deref()
                        .ok_or_else(|| ScenarioError(format!("{origin}: {here} (skew) needs offset, like \"-250ms\"")))?;
                    Action::Skew(need_targets()?, signed_ms("offset", o).map_err(ctx(here.clone()))?)
                }
                other => {
                    return Err(ScenarioError(format!(
                        "{origin}: {here}: unknown action {other:?} (known: partition, heal, crash, restart, leave, loss, skew)"
                    )))
                }
            };
            actions.push(TimedAction { at, action });
        }
        actions.sort_by_key(|a| a.at);

        let mut checks = Vec::new();
        for (i, c) in f.check.iter().enumerate() {
            let here = format!("check #{}", i + 1);
            checks.push(match c.kind.as_str() {
                "converged" => Check::Converged,
                "no_false_failures" => Check::NoFalseFailures,
                "failed_within" => {
                    let node = c
                        .node
                        .clone()
                        .filter(|n| nodes.contains(n))
                        .ok_or_else(|| ScenarioError(format!("{origin}: {here} needs node = one of the nodes")))?;
                    let within = c
                        .within
                        .as_deref()
                        .ok_or_else(|| ScenarioError(format!("{origin}: {here} needs within, like \"10s\"")))?;
                    Check::FailedWithin {
                        node,
                        within: dur("within", within).map_err(ctx(here.clone()))?,
                    }
                }
                                "coordinate_accuracy" => {
                    if rtts.is_none() {
                        return Err(ScenarioError(format!(
                            "{origin}: {here}: coordinate_accuracy needs latency.matrix to score against"
                        )));
                    }
                    let median_below = c.median_below.ok_or_else(|| {
                        ScenarioError(format!("{origin}: {here} needs median_below, like 0.2"))
                    })?;
                    Check::CoordinateAccuracy {
                        median_below,
                        p90_below: c.p90_below,
                    }
                }
                other => {
                    return Err(ScenarioError(format!(
                        "{origin}: {here}: unknown kind {other:?} (known: converged, failed_within, no_false_failures, coordinate_accuracy)"
                    )))
                }
            });
        }

        Ok(Scenario {
            name: f.name,
            cluster: ClusterSpec {
                nodes,
                seed: f.seed,
                gossip,
                tick,
                latency,
                rtts,
                duration,
            },
            actions,
            checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
seed = 3
duration = "60s"

[[datacenter]]
name = "dc1"
clients = 5

[[event]]
at = "10s"
action = "partition"
targets = ["dc1-4"]

[[event]]
at = "5s"
action = "skew"
targets = ["dc1-1"]
offset = "-250ms"

[[check]]
kind = "failed_within"
node = "dc1-4"
within = "20s"
"#;

    #[test]
    fn parses_and_orders_events() {
        let s = Scenario::parse("t.toml", GOOD).unwrap();
        assert_eq!(s.cluster.nodes.len(), 5);
        assert_eq!(
            s.actions[0].action,
            Action::Skew(vec!["dc1-1".into()], -250)
        );
        assert_eq!(s.actions[1].action, Action::Isolate(vec!["dc1-4".into()]));
        assert!(matches!(s.checks[0], Check::FailedWithin { .. }));
    }

    #[test]
    fn unknown_keys_point_at_the_line() {
        let bad = GOOD.replace("clients = 5", "clients = 5\nclinets = 2");
        let e = Scenario::parse("t.toml", &bad).unwrap_err().0;
        assert!(e.starts_with("t.toml:9:1:"), "{e}");
        assert!(e.contains("clinets") && e.contains("clients"), "{e}");
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        for (from, to, want) in [
            ("\"60s\"", "\"soon\"", "duration"),
            ("dc1-4\"]", "dc9-4\"]", "unknown node"),
            ("\"partition\"", "\"explode\"", "unknown action"),
            ("\"20s\"", "\"x\"", "check #1"),
        ] {
            let e = Scenario::parse("t.toml", &GOOD.replacen(from, to, 1))
                .unwrap_err()
                .0;
            assert!(e.contains(want), "{from} -> {to}: {e}");
        }
    }
}
