//! Charts for results people look at: every chart is written as PNG and SVG.
//!
//! Text needs a TrueType font. It is read at run time from `$CAIRN_FONT` or
//! the usual system places (DejaVu Sans, which `.ci/run` installs), so no
//! font is shipped and no system font library is linked.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::chart::SeriesLabelPosition;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Why a chart was not drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(pub String);

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a font for chart text, once; fails with what to install.
fn ensure_font() -> Result<(), PlotError> {
    static FONT: OnceLock<Result<(), PlotError>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = std::env::var_os("CAIRN_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONT_PATHS.iter().map(PathBuf::from))
            .collect();
        for path in &candidates {
            let Ok(bytes) = std::fs::read(path) else { continue };
            // The font lives as long as the process; leaking it once is the
            // price of the font registry's 'static requirement.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
        Err(PlotError(
            "no TrueType font found for chart text: install fonts-dejavu-core, or set CAIRN_FONT to a .ttf file"
                .into(),
        ))
    })
    .clone()
}

/// Scale of an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Linear,
    /// Logarithmic (values must be positive).
    Log,
}

/// How to draw a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Connected line.
    Line,
    /// Step line (CDFs).
    Step,
    /// Dots (small and translucent: for many points).
    Points,
    /// Large markers (for a handful of points).
    Markers,
}

/// A named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
    /// How to draw it.
    pub style: Style,
}

/// A chart: title, axes and series.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title on top.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// X axis scale.
    pub x_scale: Scale,
    /// Y axis scale.
    pub y_scale: Scale,
    /// Data.
    pub series: Vec<Series>,
    /// Draw the line y = x (for estimated-against-true charts).
    pub diagonal: bool,
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

/// A tick label: at most three significant digits, no float noise.
fn tidy(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.0e}");
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn bounds(chart: &Chart, pick: impl Fn(&(f64, f64)) -> f64, scale: Scale) -> (f64, f64) {
    let vals = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(&pick))
        .filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0));
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (if scale == Scale::Log { 1e-3 } else { 0.0 }, 1.0);
    }
    match scale {
        Scale::Linear => {
            let pad = ((hi - lo) * 0.05).max(1e-9);
            (lo - pad, hi + pad)
        }
        Scale::Log => (lo / 1.3, hi * 1.3),
    }
}

/// `STEM.png` and `STEM.svg`: appended, not replaced, since stems like
/// `x.cdf` carry dots of their own.
fn files(stem: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(format!(".{ext}"));
        PathBuf::from(s)
    };
    (with("png"), with("svg"))
}

/// Writes `chart` to `STEM.png` and `STEM.svg`; returns both paths.
pub fn write(chart: &Chart, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    ensure_font()?;
    let (png, svg) = files(stem);
    let size = (960, 600);
    draw(chart, BitMapBackend::new(&png, size).into_drawing_area())?;
    draw(chart, SVGBackend::new(&svg, size).into_drawing_area())?;
    Ok(vec![png, svg])
}

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(format!("drawing failed: {e}"))
}

fn draw<DB: DrawingBackend>(chart: &Chart, root: DrawingArea<DB, Shift>) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(err)?;
    let (x0, x1) = bounds(chart, |p| p.0, chart.x_scale);
    let (y0, y1) = bounds(chart, |p| p.1, chart.y_scale);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72);
    // plotters types log and linear axes differently, hence four arms.
    match (chart.x_scale, chart.y_scale) {
        (Scale::Linear, Scale::Linear) => {
            let ctx = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
            finish(chart, ctx)
        }
        (Scale::Log, Scale::Linear) => {
            let ctx = builder
                .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(err)?;
            finish(chart, ctx)
        }
        (Scale::Linear, Scale::Log) => {
            let ctx = builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(err)?;
            finish(chart, ctx)
        }
        (Scale::Log, Scale::Log) => {
            let ctx = builder
                .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                .map_err(err)?;
            finish(chart, ctx)
        }
    }?;
    root.present().map_err(err)
}

fn finish<'a, DB, X, Y>(
    chart: &Chart,
    mut ctx: ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result<(), PlotError>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_label_formatter(&|v| tidy(*v))
        .y_label_formatter(&|v| tidy(*v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    if chart.diagonal {
        let (lo, hi) = (
            ctx.x_range().start.max(ctx.y_range().start),
            ctx.x_range().end.min(ctx.y_range().end),
        );
        ctx.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.5)))
            .map_err(err)?
            .label("estimate = truth");
    }
    for (i, s) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite());
        let anno = match s.style {
            Style::Line => ctx
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(err)?,
            Style::Step => {
                let mut stepped = Vec::new();
                let mut last: Option<(f64, f64)> = None;
                for (x, y) in pts {
                    if let Some((_, ly)) = last {
                        stepped.push((x, ly));
                    }
                    stepped.push((x, y));
                    last = Some((x, y));
                }
                ctx.draw_series(LineSeries::new(stepped, color.stroke_width(2)))
                    .map_err(err)?
            }
            Style::Points => ctx
                .draw_series(pts.map(|p| Circle::new(p, 1, color.mix(0.35).filled())))
                .map_err(err)?,
            Style::Markers => ctx
                .draw_series(pts.map(|p| Circle::new(p, 6, color.mix(0.8).filled())))
                .map_err(err)?,
        };
        anno.label(&s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], color.filled()));
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .position(chart.legend.clone())
        .draw()
        .map_err(err)
}

/// A square grid of values with row and column labels (for per-pair
/// scores), drawn with a colour scale and each value written in its cell.
#[derive(Debug, Clone)]
pub struct HeatMap {
    /// Title on top.
    pub title: String,
    /// Labels of rows and columns (the same list).
    pub labels: Vec<String>,
    /// `values[row][col]`; `None` cells stay blank.
    pub values: Vec<Vec<Option<f64>>>,
    /// What the values are.
    pub value_label: String,
}

/// Colour for `t` in 0..=1, from pale yellow (good) to dark red (bad).
fn heat(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t) as u8;
    RGBColor(lerp(255.0, 165.0), lerp(245.0, 15.0), lerp(200.0, 21.0))
}

/// Writes `map` to `STEM.png` and `STEM.svg`.
pub fn write_heatmap(map: &HeatMap, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    ensure_font()?;
    let (png, svg) = files(stem);
    let size = (900, 800);
    draw_heatmap(map, BitMapBackend::new(&png, size).into_drawing_area())?;
    draw_heatmap(map, SVGBackend::new(&svg, size).into_drawing_area())?;
    Ok(vec![png, svg])
}

fn draw_heatmap<DB: DrawingBackend>(
    map: &HeatMap,
    root: DrawingArea<DB, Shift>,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(err)?;
    let n = map.labels.len().max(1) as i32;
    let max = map
        .values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut ctx = ChartBuilder::on(&root)
        .caption(&map.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(120)
        // A segmented 0..k has k + 1 segments.
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
        .map_err(err)?;
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => map.labels.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    ctx.configure_mesh()
        .disable_mesh()
        .x_labels(map.labels.len())
        .y_labels(map.labels.len())
        .x_label_formatter(&label)
        .y_label_formatter(&label)
        .x_desc(&map.value_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (r, row) in map.values.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let Some(v) = v.filter(|v| v.is_finite()) else {
                continue;
            };
            let (x, y) = (c as i32, r as i32);
            ctx.draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                heat(v / max).filled(),
            )))
            .map_err(err)?;
            ctx.draw_series(std::iter::once(Text::new(
                tidy(v),
                (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                ("sans-serif", 14),
            )))
            .map_err(err)?;
        }
    }
    root.present().map_err(err)
}
