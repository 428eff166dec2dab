//! Replays an observation stream through one Vivaldi client per node and
//! measures, at checkpoints, how well the coordinates predict every pair of
//! the matrix — exactly as the Serf harness does, so the CSVs compare.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use cairn::coordinate::{Client, Config, Coordinate};

use super::matrix::Matrix;
use super::stream::Stream;

/// Accuracy at one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checkpoint {
    /// Rounds completed.
    pub round: u32,
    /// Median relative error over all pairs.
    pub median: f64,
    /// 90th percentile of the relative error.
    pub p90: f64,
    /// 99th percentile of the relative error.
    pub p99: f64,
    /// Mean absolute error, milliseconds.
    pub mean_abs_ms: f64,
}

/// The outcome of a replay.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Algorithm name.
    pub algorithm: String,
    /// One row per checkpoint.
    pub checkpoints: Vec<Checkpoint>,
    /// Observations applied.
    pub updates: u64,
    /// Observations refused (bad RTT).
    pub update_errors: u64,
    /// Coordinate resets.
    pub resets: u64,
    /// Final coordinates by node id.
    pub coords: Vec<Coordinate>,
    /// `(estimated, true)` RTT in ms for every pair, at the last checkpoint.
    pub final_pairs: Vec<(f64, f64)>,
}

pub use cairn::coordinate::percentile;

fn clients(m: &Matrix, cfg: &Config, seed: u64) -> Vec<Client<u32>> {
    (0..m.nodes)
        .map(|i| {
            // Infallible: the caller validated the configuration.
            Client::new(
                cfg.clone(),
                seed.wrapping_mul(0x9e37_79b9).wrapping_add(i as u64),
            )
            .unwrap_or_else(|e| panic!("invalid configuration: {e}"))
        })
        .collect()
}

/// Estimated RTT in ms as Serf's `DistanceTo` returns it (whole nanoseconds).
fn estimate_ms(a: &Coordinate, b: &Coordinate) -> f64 {
    (a.distance_secs(b) * 1e9).trunc() / 1e6
}

fn checkpoint(
    m: &Matrix,
    cs: &[Client<u32>],
    round: u32,
    rel: &mut Vec<f64>,
    keep: Option<&mut Vec<(f64, f64)>>,
) -> Checkpoint {
    let coords: Vec<&Coordinate> = cs.iter().map(Client::estimate).collect();
    rel.clear();
    let mut sum_abs = 0.0;
    let mut pairs = keep;
    if let Some(p) = pairs.as_deref_mut() {
        p.clear();
    }
    for p in &m.pairs {
        let est = estimate_ms(coords[p.a as usize], coords[p.b as usize]);
        let d = (est - p.rtt_ms).abs();
        sum_abs += d;
        rel.push(d / p.rtt_ms);
        if let Some(v) = pairs.as_deref_mut() {
            v.push((est, p.rtt_ms));
        }
    }
    let n = rel.len();
    rel.sort_by(f64::total_cmp);
    Checkpoint {
        round,
        median: percentile(rel, 0.5),
        p90: percentile(rel, 0.9),
        p99: percentile(rel, 0.99),
        mean_abs_ms: sum_abs / n as f64,
    }
}

fn apply(cs: &mut [Client<u32>], src: u32, dst: u32, rtt_ns: i64) -> bool {
    if rtt_ns < 0 {
        return false;
    }
    let other = cs[dst as usize].coordinate().clone();
    cs[src as usize]
        .update(&dst, &other, Duration::from_nanos(rtt_ns as u64))
        .is_ok()
}

/// Replays `stream` with checkpoints every `k` completed rounds (and at
/// round 0 and the last round).
pub fn replay(m: &Matrix, stream: &Stream, name: &str, cfg: &Config, k: u32, seed: u64) -> Replay {
    let k = k.max(1);
    let mut cs = clients(m, cfg, seed);
    let mut rel = Vec::with_capacity(m.pairs.len());
    let mut checkpoints = vec![checkpoint(m, &cs, 0, &mut rel, None)];
    let (mut completed, mut last) = (0u32, 0u32);
    let (mut updates, mut errors) = (0u64, 0u64);
    for o in &stream.observations {
        while completed < o.round {
            completed += 1;
            if completed % k == 0 {
                checkpoints.push(checkpoint(m, &cs, completed, &mut rel, None));
                last = completed;
            }
        }
        updates += 1;
        errors += !apply(&mut cs, o.src, o.dst, o.rtt_ns) as u64;
    }
    if let Some(o) = stream.observations.last() {
        completed = o.round.saturating_add(1);
    }
    let mut final_pairs = Vec::with_capacity(m.pairs.len());
    if completed != last {
        checkpoints.push(checkpoint(
            m,
            &cs,
            completed,
            &mut rel,
            Some(&mut final_pairs),
        ));
    } else {
        checkpoint(m, &cs, completed, &mut rel, Some(&mut final_pairs));
    }
    Replay {
        algorithm: name.to_owned(),
        checkpoints,
        updates,
        update_errors: errors,
        resets: cs.iter().map(|c| c.stats().resets).sum(),
        coords: cs.iter().map(|c| c.coordinate().clone()).collect(),
        final_pairs,
    }
}

/// Median nanoseconds per update over `reps` replays of the whole stream on
/// fresh clients (no checkpoints), measured as the harness measures Serf:
/// each update call alone is timed (clock overhead included); fetching the
/// peer's coordinate is not.
pub fn time_per_update(m: &Matrix, stream: &Stream, cfg: &Config, seed: u64, reps: usize) -> f64 {
    let mut runs: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let mut cs = clients(m, cfg, seed);
            let mut total = Duration::ZERO;
            let mut timed = 0usize;
            for o in &stream.observations {
                if o.rtt_ns < 0 {
                    continue;
                }
                timed += 1;
                let other = cs[o.dst as usize].coordinate().clone();
                let rtt = Duration::from_nanos(o.rtt_ns as u64);
                let t0 = Instant::now();
                let r = cs[o.src as usize].update(&o.dst, &other, rtt).is_ok();
                total += t0.elapsed();
                std::hint::black_box(r);
            }
            total.as_nanos() as f64 / timed.max(1) as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    percentile(&runs, 0.5)
}

/// The harness's CSV: provenance comments, then
/// `round,median_rel_err,p90_rel_err,p99_rel_err,mean_abs_err_ms`.
pub fn to_csv(
    r: &Replay,
    m: &Matrix,
    stream: &Stream,
    stream_name: &str,
    cfg: &Config,
    k: u32,
    ns_per_update: Option<f64>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# cairn-sim tomography v1 algorithm={}", r.algorithm);
    let _ = writeln!(out, "# config: {cfg:?}");
    let _ = writeln!(
        out,
        "# matrix={} matrix_sha256={} nodes={} pairs={} skipped_rows={}",
        m.name,
        m.sha256,
        m.nodes,
        m.pairs.len(),
        m.skipped
    );
    let _ = writeln!(
        out,
        "# obs={stream_name} obs_sha256={} observations={} k={}",
        stream.sha256,
        stream.observations.len(),
        k.max(1)
    );
    let _ = writeln!(
        out,
        "round,median_rel_err,p90_rel_err,p99_rel_err,mean_abs_err_ms"
    );
    for c in &r.checkpoints {
        let _ = writeln!(
            out,
            "{},{:.6},{:.6},{:.6},{:.6}",
            c.round, c.median, c.p90, c.p99, c.mean_abs_ms
        );
    }
    let last = r.checkpoints.last().map_or(0, |c| c.round);
    let _ = writeln!(
        out,
        "# rounds={last} updates={} update_errors={} resets={}",
        r.updates, r.update_errors, r.resets
    );
    if let Some(ns) = ns_per_update {
        let _ = writeln!(out, "# ns_per_update={ns:.1}");
    }
    out
}
