//! What a run leaves behind. [`trace`] records every event as the run goes
//! and hashes it; [`spread`] and [`metrics`] read the trace into curves
//! and per-second rows; [`plot`] draws charts; this module writes them
//! all out.
//!
//! The files a run leaves for people and tools to read: `trace.jsonl`,
//! `metrics.csv`, `rtt_accuracy.csv`, `rtt_pairs.csv`, `summary.json`, a copy of the
//! scenario (for replay), and charts; with federated datacenters also
//! `wan_rtt_pairs.csv` and `wan_rtt.csv` (estimated against true RTT
//! percentiles per datacenter pair).

pub mod metrics;
pub mod plot;
pub mod spread;
pub mod trace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::chart::SeriesLabelPosition;
use serde::{Deserialize, Serialize};

use crate::checks::detections;
use crate::engine::full::federation::{self, dc_pair_percentiles, DcPairRtt};
use crate::output::spread::{Spread, SpreadSummary};
use crate::report::Report;
use crate::scenario::Scenario;
use crate::tomography::{percentile, Accuracy, PairError};
use crate::verdict::{CheckResult, Outages};
use plot::{Chart, HeatMap, Scale, Series, Style};

/// `summary.json`: what ran, its fingerprint, and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Seed of this run.
    pub seed: u64,
    /// Which engine ran it.
    pub engine: String,
    /// Whether packets went through the real codec (false: `--no-codec`,
    /// messages passed as values; byte counts are then the datagrams'
    /// encoded sizes without compression or the 5-byte checksum header,
    /// and streams are not counted).
    #[serde(default = "codec_default")]
    pub codec: bool,
    /// Nodes in the run.
    pub nodes: usize,
    /// Datacenters in the run.
    pub datacenters: usize,
    /// SHA-256 of `trace.jsonl`.
    pub trace_hash: String,
    /// Lines in `trace.jsonl`.
    pub trace_events: usize,
    /// Virtual time simulated, seconds.
    pub virtual_time_s: f64,
    /// Wall-clock time, seconds.
    pub wall_time_s: f64,
    /// Virtual seconds per wall second.
    pub speed: f64,
    /// Simulation steps.
    pub steps: u64,
    /// Simulation step, milliseconds.
    pub tick_ms: f64,
    /// UDP datagrams sent over lossy links.
    pub lossy_udp_packets: u64,
    /// Of those, lost.
    pub lossy_udp_dropped: u64,
    /// How often each of the product's fault points fired (`buggify`
    /// events and chaos faults turn them on), for those that did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fault_points: BTreeMap<String, u64>,
    /// Coordinate accuracy at the end: median, p90, p99 relative error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_accuracy: Option<[f64; 3]>,
    /// WAN coordinate accuracy at the end (server pairs of different
    /// datacenters): median, p90, p99 relative error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan_rtt_accuracy: Option<[f64; 3]>,
    /// Per datacenter pair: the p50/p90/p99 RTT the WAN coordinates
    /// estimate against the model's (as in `wan_rtt.csv`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wan_rtt: Vec<DcPairRtt>,
    /// Whether the run was repeated and its traces compared.
    pub determinism_checked: bool,
    /// How each leave, crash and join spread: time until 50 %, 90 %,
    /// 99 % and 99.99 % of the pool knew.
    #[serde(default)]
    pub spread: Vec<SpreadSummary>,
    /// Failure verdicts about healthy nodes, counted over every node
    /// (protocol engine; the full engine judges its whole trace instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_failures: Option<u64>,
    /// Each check's outcome.
    pub checks: Vec<CheckResult>,
    /// Whether every check held (and the traces matched, if compared).
    pub passed: bool,
    /// The scenario file, as given.
    #[serde(default)]
    pub scenario_file: Option<String>,
    /// The directory data files of the scenario are relative to.
    #[serde(default)]
    pub scenario_dir: Option<String>,
    /// SHA-256 of the latency matrix, if the scenario uses one.
    #[serde(default)]
    pub matrix_sha256: Option<String>,
}

fn codec_default() -> bool {
    true
}

impl Summary {
    /// The summary of `report`, a run of `s`.
    pub fn new(s: &Scenario, r: &Report, determinism_checked: bool, deterministic: bool) -> Self {
        let out = &r.output;
        let source_dir = s.source.as_ref().and_then(|src| {
            let dir = src.path.parent().unwrap_or(Path::new("."));
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize().ok().map(|p| p.display().to_string())
        });
        Summary {
            scenario: s.name.clone(),
            seed: r.seed,
            engine: r.engine.as_str().into(),
            codec: s.codec,
            nodes: s.topology.nodes.len(),
            datacenters: s.topology.datacenters.len(),
            trace_hash: r.trace_hash(),
            trace_events: out.trace.events.len(),
            virtual_time_s: out.virtual_time.as_secs_f64(),
            wall_time_s: r.wall.as_secs_f64(),
            speed: r.speed(),
            steps: out.steps,
            // The protocol engine's time is continuous.
            tick_ms: if s.engine == crate::scenario::Engine::Full {
                crate::net::fabric::TIMER_RESOLUTION.as_secs_f64() * 1000.0
            } else {
                0.0
            },
            lossy_udp_packets: out.lossy_packets.0,
            lossy_udp_dropped: out.lossy_packets.1,
            fault_points: out.fault_points.clone(),
            rtt_accuracy: out.accuracy.last().map(|a| [a.median, a.p90, a.p99]),
            wan_rtt_accuracy: out.wan_accuracy.last().map(|a| [a.median, a.p90, a.p99]),
            wan_rtt: dc_pair_percentiles(&s.topology, &out.wan_pairs),
            determinism_checked,
            spread: out.spreads.iter().map(Spread::summary).collect(),
            false_failures: out.false_failures,
            checks: r.checks.clone(),
            passed: r.passed() && deterministic,
            scenario_file: s.source.as_ref().map(|src| src.path.display().to_string()),
            scenario_dir: source_dir,
            matrix_sha256: s
                .topology
                .latency
                .matrix
                .as_ref()
                .map(|m| m.matrix.sha256.clone()),
        }
    }
}

/// Writes every file of a run into `dir` (created if needed); chart
/// failures (no font, say) are warnings, not errors.
pub fn write_run(dir: &Path, s: &Scenario, r: &Report, summary: &Summary) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let out = &r.output;
    std::fs::write(dir.join("trace.jsonl"), out.trace.to_jsonl())?;
    let rows = metrics::rows(&out.trace, &out.samples, &s.topology);
    std::fs::write(dir.join("metrics.csv"), metrics::to_csv(&rows, &s.topology))?;
    write_accuracy(dir, "rtt_accuracy", &s.name, &out.accuracy)?;
    std::fs::write(dir.join("rtt_pairs.csv"), pairs_csv(s, &out.final_pairs))?;
    if !out.wan_pairs.is_empty() {
        std::fs::write(dir.join("wan_rtt_pairs.csv"), pairs_csv(s, &out.wan_pairs))?;
        let rows = dc_pair_percentiles(&s.topology, &out.wan_pairs);
        std::fs::write(dir.join("wan_rtt.csv"), federation::to_csv(&rows))?;
        write_accuracy(dir, "wan_rtt_accuracy", &s.name, &out.wan_accuracy)?;
    }
    std::fs::write(dir.join("spread.csv"), spread_csv(&out.spreads))?;
    if let Some(src) = &s.source {
        std::fs::write(dir.join("scenario.toml"), &src.text)?;
    }
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summary).map_err(std::io::Error::other)? + "\n",
    )?;
    // A failed linearizability check is drawn: its witness, per client.
    if r.checks
        .iter()
        .any(|c| !c.passed && c.check == "linearizable")
    {
        use crate::checks::linearizability::{check, Failure};
        if let Err(Failure::Violation(v)) = check(&out.history) {
            std::fs::write(
                dir.join("linearizability.svg"),
                crate::checks::linearizability::witness_svg(&v.witness()),
            )?;
        }
    }
    for (stem, result) in charts(dir, s, r, &rows) {
        if let Err(e) = result {
            eprintln!("warning: no {stem} chart: {e}");
        }
    }
    Ok(())
}

/// `rtt_pairs.csv`: every scored pair at the end, estimate against truth.
fn pairs_csv(s: &Scenario, pairs: &[PairError]) -> String {
    let mut csv = String::from("a,b,dc_a,dc_b,true_rtt_ms,est_rtt_ms,rel_err\n");
    let t = &s.topology;
    for p in pairs {
        let (a, b) = (&t.nodes[p.a], &t.nodes[p.b]);
        csv += &format!(
            "{},{},{},{},{:.4},{:.4},{:.6}\n",
            a.name,
            b.name,
            t.datacenters[a.dc].name,
            t.datacenters[b.dc].name,
            p.true_ms,
            p.est_ms,
            p.rel()
        );
    }
    csv
}

/// `spread.csv`: for each fact, every node that heard of it and when.
fn spread_csv(spreads: &[Spread]) -> String {
    let mut csv = String::from("fact,kind,member,at_s,audience,delay_s,share\n");
    for (k, f) in spreads.iter().enumerate() {
        for (i, d) in f.delays.iter().enumerate() {
            csv += &format!(
                "{k},{},{},{:.3},{},{:.6},{:.6}\n",
                f.kind,
                f.member,
                f.at.as_secs_f64(),
                f.audience,
                d.as_secs_f64(),
                (i + 1) as f64 / f.audience.max(1) as f64
            );
        }
    }
    csv
}

type Drawn = Result<Vec<PathBuf>, plot::PlotError>;

/// Most series one chart shows (its palette repeats after that).
const PALETTE_SIZE: usize = 6;

/// A CDF as step points: each value against the share at or below it.
fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.into_iter()
        .enumerate()
        .map(|(i, x)| (x, (i + 1) as f64 / n))
        .collect()
}

fn charts(
    dir: &Path,
    s: &Scenario,
    r: &Report,
    rows: &[metrics::MetricsRow],
) -> Vec<(&'static str, Drawn)> {
    let mut drawn = Vec::new();
    let out = &r.output;
    let title = |what: &str| format!("{} (seed {}): {what}", s.name, r.seed);

    // Membership: what the average running node sees, second by second.
    let mut by_t: std::collections::BTreeMap<u64, [f64; 5]> = Default::default();
    for row in rows {
        if let Some(m) = row.members {
            let e = by_t.entry(row.sample.at.as_secs()).or_default();
            e[0] += (m.alive - m.suspect) as f64;
            e[1] += m.suspect as f64;
            e[2] += m.failed as f64;
            e[3] += m.left as f64;
            e[4] += 1.0;
        }
    }
    let line = |name: &str, k: usize| Series {
        name: name.into(),
        points: by_t.iter().map(|(t, e)| (*t as f64, e[k] / e[4])).collect(),
        style: Style::Line,
    };
    let chart = Chart {
        title: title("membership seen by the average running node"),
        x_label: "virtual time (s)".into(),
        y_label: "members".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        diagonal: false,
        legend: SeriesLabelPosition::MiddleRight,
        series: vec![
            line("alive", 0),
            line("suspect", 1),
            line("failed", 2),
            line("left", 3),
        ],
    };
    drawn.push(("membership", plot::write(&chart, &dir.join("membership"))));

    // Failure detection: how long observers took to declare a cut-off node failed.
    let outages = Outages::from_timeline(&s.names(), &r.timeline);
    let delays: Vec<f64> = detections(&s.topology, &r.timeline, &outages, &out.trace)
        .iter()
        .flat_map(|d| d.observers.iter().filter_map(|o| o.1))
        .map(|d| d.as_secs_f64())
        .collect();
    if !delays.is_empty() {
        let chart = Chart {
            title: title("failure-detection latency"),
            x_label: "time from fault to failed verdict (s)".into(),
            y_label: "share of verdicts".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            diagonal: false,
            legend: SeriesLabelPosition::LowerRight,
            series: vec![Series {
                name: format!("{} verdicts", delays.len()),
                points: cdf(delays),
                style: Style::Step,
            }],
        };
        drawn.push((
            "failure-detection",
            plot::write(&chart, &dir.join("failure_detection")),
        ));
    }

    // How news spread: share of the pool that knew, against time since.
    let series: Vec<Series> = out
        .spreads
        .iter()
        .filter(|f| !f.delays.is_empty())
        .take(PALETTE_SIZE)
        .map(|f| Series {
            name: format!("{} {} at {:.0}s", f.kind, f.member, f.at.as_secs_f64()),
            points: f
                .delays
                .iter()
                .enumerate()
                .map(|(i, d)| (d.as_secs_f64(), (i + 1) as f64 / f.audience.max(1) as f64))
                .collect(),
            style: Style::Step,
        })
        .collect();
    if !series.is_empty() {
        let chart = Chart {
            title: title("how news spread"),
            x_label: "time since the event (s)".into(),
            y_label: "share of the pool that knew".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            diagonal: false,
            legend: SeriesLabelPosition::LowerRight,
            series,
        };
        drawn.push(("spread", plot::write(&chart, &dir.join("spread"))));
    }

    // RTT estimates at the end: CDF of the error, and per datacenter pair.
    if !out.final_pairs.is_empty() {
        let rel: Vec<f64> = out.final_pairs.iter().map(|p| p.rel()).collect();
        let chart = Chart {
            title: title("RTT estimate error at the end"),
            x_label: "relative error of estimated RTT".into(),
            y_label: "share of node pairs".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            diagonal: false,
            legend: SeriesLabelPosition::LowerRight,
            series: vec![Series {
                name: format!("{} pairs", rel.len()),
                points: cdf(rel),
                style: Style::Step,
            }],
        };
        drawn.push(("error CDF", plot::write(&chart, &dir.join("rtt_error_cdf"))));
        let dcs = &s.topology.datacenters;
        if dcs.len() > 1 {
            // Inside a datacenter its LAN pool's coordinates; across
            // datacenters the WAN pool's, when they federate (or a global
            // LAN pool's).
            let mut cells = vec![vec![Vec::new(); dcs.len()]; dcs.len()];
            for p in out.final_pairs.iter().chain(&out.wan_pairs) {
                let (a, b) = (s.topology.nodes[p.a].dc, s.topology.nodes[p.b].dc);
                cells[a][b].push(p.rel());
                if a != b {
                    cells[b][a].push(p.rel());
                }
            }
            let values = cells
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|mut v| {
                            (!v.is_empty()).then(|| {
                                v.sort_by(f64::total_cmp);
                                percentile(&v, 0.5)
                            })
                        })
                        .collect()
                })
                .collect();
            let map = HeatMap {
                title: title("median RTT error per datacenter pair"),
                labels: dcs.iter().map(|d| d.name.clone()).collect(),
                values,
                value_label: "median relative error of estimated RTT".into(),
            };
            drawn.push((
                "heat map",
                plot::write_heatmap(&map, &dir.join("rtt_error_heatmap")),
            ));
        }
    }

    // Between datacenters: the p50, p90 and p99 RTT the WAN coordinates
    // estimate against the true ones, one colour per datacenter pair.
    let rows = dc_pair_percentiles(&s.topology, &out.wan_pairs);
    if !rows.is_empty() {
        let series = rows
            .iter()
            .take(PALETTE_SIZE)
            .map(|r| Series {
                name: format!("{} - {} (p50, p90, p99)", r.a, r.b),
                points: (0..3).map(|k| (r.true_ms[k], r.est_ms[k])).collect(),
                style: Style::Markers,
            })
            .collect();
        let chart = Chart {
            title: title("RTT between datacenters, WAN estimate against truth"),
            x_label: "true RTT percentile over server pairs (ms)".into(),
            y_label: "estimated (ms)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            diagonal: true,
            legend: SeriesLabelPosition::UpperLeft,
            series,
        };
        drawn.push(("WAN RTT", plot::write(&chart, &dir.join("wan_rtt"))));
    }
    drawn
}

/// `STEM.csv` and its chart: how well coordinates predicted the model's
/// RTTs, second by second (`rtt_accuracy` for the LAN pools,
/// `wan_rtt_accuracy` for the WAN pool).
pub fn write_accuracy(dir: &Path, stem: &str, name: &str, acc: &[Accuracy]) -> std::io::Result<()> {
    let mut csv =
        String::from("t_s,pairs,median_rel_err,p90_rel_err,p99_rel_err,mean_abs_err_ms\n");
    for a in acc {
        csv += &format!(
            "{:.3},{},{:.6},{:.6},{:.6},{:.6}\n",
            a.at.as_secs_f64(),
            a.pairs,
            a.median,
            a.p90,
            a.p99,
            a.mean_abs_ms
        );
    }
    std::fs::write(dir.join(format!("{stem}.csv")), csv)?;
    if acc.is_empty() {
        return Ok(());
    }
    let line = |label: &str, f: fn(&Accuracy) -> f64| Series {
        name: label.into(),
        points: acc.iter().map(|a| (a.at.as_secs_f64(), f(a))).collect(),
        style: Style::Line,
    };
    let chart = Chart {
        title: format!(
            "{name}: {} coordinate accuracy over virtual time",
            if stem.starts_with("wan") {
                "WAN"
            } else {
                "LAN"
            }
        ),
        x_label: "virtual time (s)".into(),
        y_label: "relative error of estimated RTT".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Log,
        diagonal: false,
        legend: SeriesLabelPosition::UpperRight,
        series: vec![
            line("median", |a| a.median),
            line("p90", |a| a.p90),
            line("p99", |a| a.p99),
        ],
    };
    if let Err(e) = plot::write(&chart, &dir.join(stem)) {
        eprintln!("warning: no accuracy chart: {e}");
    }
    Ok(())
}
