//! Charts of a tomography evaluation: how the relative error is distributed
//! at the end, how it falls over rounds, and estimated against true RTTs.

use std::path::{Path, PathBuf};

use super::replay::Replay;
use plotters::chart::SeriesLabelPosition;

use crate::output::plot::{self, Chart, PlotError, Scale, Series, Style};

/// At most this many points per drawn series.
const MAX_POINTS: usize = 2000;

fn relative_errors(r: &Replay) -> Vec<f64> {
    let mut rel: Vec<f64> = r
        .final_pairs
        .iter()
        .map(|(est, truth)| (est - truth).abs() / truth)
        .collect();
    rel.sort_by(f64::total_cmp);
    rel
}

/// Writes `STEM.cdf`, `STEM.percentiles` and `STEM.scatter.ALGO` charts (PNG
/// and SVG) to `dir`; returns the files written.
pub fn write_charts(dir: &Path, stem: &str, replays: &[Replay]) -> Result<Vec<PathBuf>, PlotError> {
    let mut files = Vec::new();
    let cdf = Chart {
        title: format!("{stem}: relative error of all pairs at the last checkpoint"),
        x_label: "relative error |estimate - true| / true".into(),
        y_label: "fraction of pairs".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Linear,
        diagonal: false,
        legend: SeriesLabelPosition::UpperLeft,
        series: replays
            .iter()
            .map(|r| {
                let rel = relative_errors(r);
                let n = rel.len().max(1);
                let step = n.div_ceil(MAX_POINTS);
                let points = rel
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % step == 0 || *i + 1 == n)
                    // Below 1e-4 the differences are rounding, not accuracy.
                    .map(|(i, e)| (e.max(1e-4), (i + 1) as f64 / n as f64))
                    .collect();
                Series {
                    name: r.algorithm.clone(),
                    points,
                    style: Style::Step,
                }
            })
            .collect(),
    };
    files.extend(plot::write(&cdf, &dir.join(format!("{stem}.cdf")))?);

    let mut series = Vec::new();
    for r in replays {
        let pts = |f: fn(&super::Checkpoint) -> f64| {
            r.checkpoints
                .iter()
                .filter(|c| c.round > 0)
                .map(|c| (c.round as f64, f(c)))
                .collect::<Vec<_>>()
        };
        series.push(Series {
            name: format!("{} median", r.algorithm),
            points: pts(|c| c.median),
            style: Style::Line,
        });
        series.push(Series {
            name: format!("{} p90", r.algorithm),
            points: pts(|c| c.p90),
            style: Style::Line,
        });
    }
    let over_rounds = Chart {
        title: format!("{stem}: relative error over rounds"),
        x_label: "round (one measurement per node per round)".into(),
        y_label: "relative error".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Log,
        diagonal: false,
        legend: SeriesLabelPosition::UpperRight,
        series,
    };
    files.extend(plot::write(
        &over_rounds,
        &dir.join(format!("{stem}.percentiles")),
    )?);

    for r in replays {
        let n = r.final_pairs.len().max(1);
        let step = n.div_ceil(MAX_POINTS * 10);
        let points = r
            .final_pairs
            .iter()
            .step_by(step)
            .map(|(est, truth)| (*truth, est.max(1e-3)))
            .collect();
        let scatter = Chart {
            title: format!("{stem}: estimated against measured RTT ({})", r.algorithm),
            x_label: "measured RTT (ms)".into(),
            y_label: "estimated RTT (ms)".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            diagonal: true,
            legend: SeriesLabelPosition::UpperLeft,
            series: vec![Series {
                name: format!("{} ({} of {} pairs)", r.algorithm, n.div_ceil(step), n),
                points,
                style: Style::Points,
            }],
        };
        files.extend(plot::write(
            &scatter,
            &dir.join(format!("{stem}.scatter.{}", r.algorithm)),
        )?);
    }
    Ok(files)
}
