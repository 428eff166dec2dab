//! One matrix over many observation streams: how far the result of one
//! stream can be trusted. The summary gives, per algorithm, the final
//! median, p90 and p99 relative error as a mean over seeds with a 95 %
//! interval; the distance buckets show where the errors are, signed, so an
//! algorithm that overestimates short links shows as such rather than as
//! "error".

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::chart::SeriesLabelPosition;

use super::replay::{percentile, Replay};
use crate::output::plot::{self, Chart, PlotError, Scale, Series, Style};

/// One algorithm's final accuracy on one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedScore {
    /// Seed of the stream.
    pub seed: u64,
    /// Algorithm name.
    pub algorithm: String,
    /// Final median relative error.
    pub median: f64,
    /// Final 90th percentile.
    pub p90: f64,
    /// Final 99th percentile.
    pub p99: f64,
}

impl SeedScore {
    /// The last checkpoint of `r`; `None` when it has none.
    pub fn of(seed: u64, r: &Replay) -> Option<Self> {
        let last = r.checkpoints.last()?;
        Some(SeedScore {
            seed,
            algorithm: r.algorithm.clone(),
            median: last.median,
            p90: last.p90,
            p99: last.p99,
        })
    }
}

/// A mean over seeds and its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Mean over seeds.
    pub mean: f64,
    /// Half-width of the 95 % interval (Student's t); NaN with one seed.
    pub half: f64,
}

impl Interval {
    /// The mean of `xs` and its 95 % interval.
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        if n == 0 {
            return Interval {
                mean: f64::NAN,
                half: f64::NAN,
            };
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Interval {
                mean,
                half: f64::NAN,
            };
        }
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Interval {
            mean,
            half: t975(n - 1) * (var / n as f64).sqrt(),
        }
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.half.is_nan() {
            write!(f, "{:.4}", self.mean)
        } else {
            write!(f, "{:.4} ± {:.4}", self.mean, self.half)
        }
    }
}

/// Student's t at 97.5 % for `df` degrees of freedom (two-sided 95 %).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        31..=60 => 2.00,
        61..=120 => 1.98,
        _ => 1.96,
    }
}

/// One algorithm's row of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Algorithm name.
    pub algorithm: String,
    /// Seeds scored.
    pub seeds: usize,
    /// Final median relative error over seeds.
    pub median: Interval,
    /// Final p90 over seeds.
    pub p90: Interval,
    /// Final p99 over seeds.
    pub p99: Interval,
}

/// Each name once, in the order it first appears.
fn in_order<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// One row per algorithm, in the order they first appear in `scores`.
pub fn summarize(scores: &[SeedScore]) -> Vec<SummaryRow> {
    in_order(scores.iter().map(|s| s.algorithm.as_str()))
        .into_iter()
        .map(|name| {
            let mine: Vec<&SeedScore> = scores.iter().filter(|s| s.algorithm == name).collect();
            let col = |f: fn(&SeedScore) -> f64| mine.iter().map(|s| f(s)).collect::<Vec<_>>();
            SummaryRow {
                algorithm: name.to_string(),
                seeds: mine.len(),
                median: Interval::of(&col(|s| s.median)),
                p90: Interval::of(&col(|s| s.p90)),
                p99: Interval::of(&col(|s| s.p99)),
            }
        })
        .collect()
}

/// The summary as CSV: `algorithm,seeds,median,median_ci95,p90,p90_ci95,p99,p99_ci95`
/// (the `_ci95` columns are half-widths, empty with one seed).
pub fn summary_csv(rows: &[SummaryRow]) -> String {
    let mut out = String::from("algorithm,seeds,median,median_ci95,p90,p90_ci95,p99,p99_ci95\n");
    let cell = |i: Interval| {
        if i.half.is_nan() {
            format!("{:.6},", i.mean)
        } else {
            format!("{:.6},{:.6}", i.mean, i.half)
        }
    };
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            r.algorithm,
            r.seeds,
            cell(r.median),
            cell(r.p90),
            cell(r.p99)
        );
    }
    out
}

/// Ranges of true RTT the errors are split by, in ms: `[lo, hi)`.
pub const BUCKETS: [(f64, f64, &str); 4] = [
    (0.0, 10.0, "under 10 ms"),
    (10.0, 50.0, "10-50 ms"),
    (50.0, 200.0, "50-200 ms"),
    (200.0, f64::INFINITY, "200 ms and over"),
];

/// Signed errors of one algorithm in one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketStat {
    /// Algorithm name.
    pub algorithm: String,
    /// Index into [`BUCKETS`].
    pub bucket: usize,
    /// Pairs in it (over every seed).
    pub pairs: usize,
    /// 10th, 50th and 90th percentile of (estimate - true) / true.
    pub signed_rel: [f64; 3],
    /// Median of estimate - true, ms.
    pub median_signed_ms: f64,
}

/// Signed errors per bucket of `(estimated, true)` pairs; empty buckets
/// are left out.
pub fn buckets(algorithm: &str, pairs: &[(f64, f64)]) -> Vec<BucketStat> {
    let mut out = Vec::new();
    for (b, &(lo, hi, _)) in BUCKETS.iter().enumerate() {
        let inside: Vec<(f64, f64)> = pairs
            .iter()
            .copied()
            .filter(|&(_, t)| t >= lo && t < hi && t > 0.0)
            .collect();
        if inside.is_empty() {
            continue;
        }
        let mut rel: Vec<f64> = inside.iter().map(|(e, t)| (e - t) / t).collect();
        let mut ms: Vec<f64> = inside.iter().map(|(e, t)| e - t).collect();
        rel.sort_by(f64::total_cmp);
        ms.sort_by(f64::total_cmp);
        out.push(BucketStat {
            algorithm: algorithm.to_string(),
            bucket: b,
            pairs: inside.len(),
            signed_rel: [
                percentile(&rel, 0.1),
                percentile(&rel, 0.5),
                percentile(&rel, 0.9),
            ],
            median_signed_ms: percentile(&ms, 0.5),
        });
    }
    out
}

/// The buckets as CSV.
pub fn buckets_csv(stats: &[BucketStat]) -> String {
    let mut out = String::from(
        "algorithm,bucket,pairs,p10_signed_rel,median_signed_rel,p90_signed_rel,median_signed_ms\n",
    );
    for s in stats {
        let _ = writeln!(
            out,
            "{},{},{},{:.6},{:.6},{:.6},{:.4}",
            s.algorithm,
            BUCKETS[s.bucket].2,
            s.pairs,
            s.signed_rel[0],
            s.signed_rel[1],
            s.signed_rel[2],
            s.median_signed_ms
        );
    }
    out
}

/// Draws `STEM.buckets` (PNG and SVG): per algorithm, the median signed
/// relative error in each bucket (a line) and its 10th and 90th
/// percentiles (markers), at the bucket's middle on a log axis of true RTT.
pub fn write_bucket_chart(
    dir: &Path,
    stem: &str,
    stats: &[BucketStat],
) -> Result<Vec<PathBuf>, PlotError> {
    // The geometric middle of each bucket (the last is open: 400 ms).
    let middle = |b: usize| match BUCKETS[b] {
        (lo, hi, _) if hi.is_finite() => (lo.max(1.0) * hi).sqrt(),
        (lo, _, _) => lo * 2.0,
    };
    let names = in_order(stats.iter().map(|s| s.algorithm.as_str()));
    let mut series = Vec::new();
    for name in names {
        let mine: Vec<&BucketStat> = stats.iter().filter(|s| s.algorithm == name).collect();
        let at = |k: usize| -> Vec<(f64, f64)> {
            mine.iter()
                .map(|s| (middle(s.bucket), s.signed_rel[k]))
                .collect()
        };
        series.push(Series {
            name: format!("{name} median"),
            points: at(1),
            style: Style::Line,
        });
        series.push(Series {
            name: format!("{name} p10 and p90"),
            points: at(0).into_iter().chain(at(2)).collect(),
            style: Style::Markers,
        });
    }
    let chart = Chart {
        title: format!(
            "{stem}: signed error by true RTT ({})",
            BUCKETS.map(|b| b.2).join(", ")
        ),
        x_label: "true RTT (ms), bucket middle".into(),
        y_label: "(estimate - true) / true".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Linear,
        diagonal: false,
        legend: SeriesLabelPosition::UpperRight,
        series,
    };
    plot::write(&chart, &dir.join(format!("{stem}.buckets")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_narrows_with_agreement_and_is_absent_for_one_seed() {
        let one = Interval::of(&[0.2]);
        assert_eq!(one.mean, 0.2);
        assert!(one.half.is_nan());
        let tight = Interval::of(&[0.20, 0.21, 0.19, 0.20]);
        let loose = Interval::of(&[0.10, 0.30, 0.15, 0.25]);
        assert!((tight.mean - 0.2).abs() < 1e-12);
        assert!(tight.half < loose.half);
        // Two seeds 0.1 apart: sd 0.0707, se 0.05, t 12.706.
        let two = Interval::of(&[0.1, 0.2]);
        assert!((two.half - 12.706 * 0.05).abs() < 1e-9, "{}", two.half);
    }

    #[test]
    fn summary_rows_follow_the_algorithms_and_average_their_seeds() {
        let s = |seed, algorithm: &str, m| SeedScore {
            seed,
            algorithm: algorithm.into(),
            median: m,
            p90: 2.0 * m,
            p99: 3.0 * m,
        };
        let rows = summarize(&[
            s(1, "default", 0.1),
            s(1, "serf", 0.2),
            s(2, "default", 0.3),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].algorithm.as_str(), rows[0].seeds), ("default", 2));
        assert!((rows[0].p90.mean - 0.4).abs() < 1e-12);
        assert_eq!(rows[1].seeds, 1);
        let csv = summary_csv(&rows);
        assert!(
            csv.lines().nth(2).unwrap().starts_with("serf,1,0.200000,,"),
            "{csv}"
        );
    }

    #[test]
    fn buckets_split_by_true_rtt_and_keep_the_sign() {
        // Short links overestimated by half, long ones underestimated by a tenth.
        let pairs = [(3.0, 2.0), (7.5, 5.0), (90.0, 100.0), (450.0, 500.0)];
        let b = buckets("x", &pairs);
        assert_eq!(b.iter().map(|s| s.bucket).collect::<Vec<_>>(), [0, 2, 3]);
        assert!((b[0].signed_rel[1] - 0.5).abs() < 1e-12);
        assert!((b[1].signed_rel[1] + 0.1).abs() < 1e-12);
        assert_eq!(b[0].pairs, 2);
        assert!(buckets_csv(&b).contains("x,200 ms and over,1,"));
    }
}
