//! Files a run leaves for people and tools to read.

use std::path::Path;

use plotters::chart::SeriesLabelPosition;

use crate::cluster::Accuracy;
use crate::plot::{self, Chart, Scale, Series, Style};

/// `rtt_accuracy.csv` and its chart: how well coordinates predicted the
/// measured RTTs, second by second.
pub fn write_accuracy(dir: &Path, name: &str, acc: &[Accuracy]) -> std::io::Result<()> {
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
    std::fs::write(dir.join("rtt_accuracy.csv"), csv)?;
    let line = |label: &str, f: fn(&Accuracy) -> f64| Series {
        name: label.into(),
        points: acc.iter().map(|a| (a.at.as_secs_f64(), f(a))).collect(),
        style: Style::Line,
    };
    let chart = Chart {
        title: format!("{name}: coordinate accuracy over virtual time"),
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
    if let Err(e) = plot::write(&chart, &dir.join("rtt_accuracy")) {
        eprintln!("warning: no accuracy chart: {e}");
    }
    Ok(())
}
