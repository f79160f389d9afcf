//! Plots with `plotters`: SVG, and PNG next to each.
//!
//! Text is laid out (both backends) and rasterised (PNG) with `ab_glyph` from a TrueType
//! font found on the system at run time, so the build needs no fontconfig or freetype.
//! Without a font no plot is drawn and the report says so.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::impls::Impl;
use crate::report::{Agg, dur, rate};
use crate::{GroupResult, POOLS, Scenario};

/// The family every plot writes in.
pub(crate) const FONT: &str = "sans-serif";

const FONT_FILES: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];

/// Registers a system TrueType font as `sans-serif`, once.
pub(crate) fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let from_fc = std::process::Command::new("fc-match")
            .args(["-f", "%{file}", "sans-serif:style=Regular"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|f| f.ends_with(".ttf"));
        let candidates = FONT_FILES
            .iter()
            .map(|s| (*s).to_owned())
            .chain(from_fc);
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(
            "no TrueType font found (install fonts-dejavu-core); the tables are complete without the plots"
                .to_owned(),
        )
    })
    .clone()
}

struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

enum YScale {
    Log(f64, f64),
    Linear(f64, f64),
}

struct Panel {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    x_range: (f64, f64),
    /// The task counts measured: the x axis labels.
    x_ticks: &'static [f64],
    y_scale: YScale,
    y_fmt: fn(f64) -> String,
    legend: SeriesLabelPosition,
    series: Vec<Series>,
}

fn color(imp: Impl) -> RGBColor {
    match imp {
        Impl::PoolCore(crate::impls::PcVariant::LaneOff) => RGBColor(255, 152, 150),
        Impl::PoolCore(_) => RGBColor(214, 39, 40),
        Impl::Deadpool => RGBColor(31, 119, 180),
        Impl::DeadpoolPrepared => RGBColor(148, 103, 189),
        Impl::Bb8Fast => RGBColor(44, 160, 44),
        Impl::Bb8Default => RGBColor(255, 127, 14),
        Impl::Limit => RGBColor(0, 0, 0),
        Impl::LimitPrepared => RGBColor(140, 140, 140),
        Impl::LimitPipelined => RGBColor(90, 90, 90),
    }
}

pub(crate) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn log_bounds(panel_series: &[Series]) -> (f64, f64) {
    let ys = panel_series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite() && *y > 0.0);
    let (lo, hi) = ys.fold((f64::INFINITY, 0.0_f64), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if lo.is_finite() && hi > 0.0 {
        (lo / 1.6, hi * 1.6)
    } else {
        (1.0, 10.0)
    }
}

macro_rules! draw_panel {
    ($area:expr, $p:expr, $yr:expr) => {{
        let p: &Panel = $p;
        let mut chart = ChartBuilder::on($area)
            .caption(&p.title, (FONT, 15))
            .margin(10)
            .x_label_area_size(38)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (p.x_range.0..p.x_range.1)
                    .log_scale()
                    .with_key_points(p.x_ticks.to_vec()),
                $yr,
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(p.x_desc)
            .y_desc(p.y_desc)
            .label_style((FONT, 12))
            .x_label_formatter(&|x| format!("{}", x.round()))
            .y_label_formatter(&|y| (p.y_fmt)(*y))
            .draw()
            .map_err(err)?;
        for s in &p.series {
            let c = s.color;
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(_, y)| y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, c.filled())),
                )
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(p.legend.clone())
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }};
}

fn figure<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
    cols: usize,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 20)).map_err(err)?;
    let rows = panels.len().div_ceil(cols);
    let areas = root.split_evenly((rows, cols));
    for (area, p) in areas.iter().zip(panels) {
        match p.y_scale {
            YScale::Log(lo, hi) => draw_panel!(area, p, (lo..hi).log_scale()),
            YScale::Linear(lo, hi) => draw_panel!(area, p, lo..hi),
        }
    }
    root.present().map_err(err)
}

/// Writes `name.svg` and `name.png` into `dir`.
fn write(
    dir: &Path,
    name: &str,
    title: &str,
    panels: &[Panel],
    cols: usize,
    files: &mut Vec<String>,
) -> Result<(), String> {
    let rows = panels.len().div_ceil(cols) as u32;
    let size = (560 * cols as u32, 400 * rows + 40);
    let svg = dir.join(format!("{name}.svg"));
    figure(
        SVGBackend::new(&svg, size).into_drawing_area(),
        title,
        panels,
        cols,
    )?;
    files.push(format!("{name}.svg"));
    let png = dir.join(format!("{name}.png"));
    figure(
        BitMapBackend::new(&png, size).into_drawing_area(),
        title,
        panels,
        cols,
    )?;
    files.push(format!("{name}.png"));
    Ok(())
}

fn series_of(
    results: &[GroupResult],
    keep: impl Fn(&GroupResult) -> bool,
    imps: &[Impl],
    y: impl Fn(&Agg) -> f64,
) -> Vec<Series> {
    imps.iter()
        .map(|&imp| Series {
            name: imp.name(),
            color: color(imp),
            points: results
                .iter()
                .filter(|g| keep(g))
                .filter_map(|g| g.agg(imp).map(|a| (g.spec.tasks as f64, y(&a))))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

fn rate_fmt(y: f64) -> String {
    rate(y)
}

fn dur_fmt(y: f64) -> String {
    dur(y)
}

fn plain_fmt(y: f64) -> String {
    if y >= 10.0 {
        format!("{y:.0}")
    } else {
        format!("{y:.2}")
    }
}

/// A fairness panel pair: scenario, title, x range, x ticks.
type FairnessCase = (Scenario, &'static str, (f64, f64), &'static [f64]);

const CHECKOUT_TICKS: [f64; 5] = [1.0, 16.0, 64.0, 256.0, 1024.0];
const SELECT_TICKS: [f64; 3] = [16.0, 64.0, 256.0];

/// Drawn in this order: pool-core last, on top.
const PEERS_AND_US: [Impl; 4] = [
    Impl::Deadpool,
    Impl::Bb8Fast,
    Impl::Bb8Default,
    Impl::POOL_CORE,
];

fn checkout_panels(results: &[GroupResult], scenario: Scenario, with_limit: bool) -> Vec<Panel> {
    let mut imps = PEERS_AND_US.to_vec();
    if with_limit {
        imps.insert(imps.len() - 1, Impl::Limit);
    }
    let mut panels = Vec::new();
    for threads in [1, 2] {
        for pool in POOLS {
            let series = series_of(
                results,
                |g| g.scenario == scenario && g.spec.threads == threads && g.spec.pool == pool,
                &imps,
                |a| a.throughput,
            );
            if series.is_empty() {
                continue;
            }
            let (lo, hi) = log_bounds(&series);
            panels.push(Panel {
                title: format!(
                    "{threads} thread{}, pool {pool}",
                    if threads == 1 { "" } else { "s" }
                ),
                x_desc: "tasks",
                y_desc: "checkouts/s",
                x_range: (0.8, 1300.0),
                x_ticks: &CHECKOUT_TICKS,
                y_scale: YScale::Log(lo, hi),
                y_fmt: rate_fmt,
                legend: SeriesLabelPosition::LowerLeft,
                series,
            });
        }
    }
    panels
}

fn select_panels(results: &[GroupResult]) -> Vec<Panel> {
    let mut imps = PEERS_AND_US.to_vec();
    let last = imps.len() - 1;
    imps.splice(
        last..last,
        [Impl::DeadpoolPrepared, Impl::Limit, Impl::LimitPrepared],
    );
    let mut panels = Vec::new();
    let keep =
        |pool: usize| move |g: &GroupResult| g.scenario == Scenario::Select1 && g.spec.pool == pool;
    for pool in POOLS {
        let series = series_of(results, keep(pool), &imps, |a| a.throughput);
        if series.is_empty() {
            continue;
        }
        let (lo, hi) = log_bounds(&series);
        panels.push(Panel {
            title: format!("throughput, pool {pool}"),
            x_desc: "tasks",
            y_desc: "queries/s",
            x_range: (12.0, 340.0),
            x_ticks: &SELECT_TICKS,
            y_scale: YScale::Log(lo, hi),
            y_fmt: rate_fmt,
            legend: SeriesLabelPosition::LowerRight,
            series,
        });
    }
    for pool in POOLS {
        let series = series_of(results, keep(pool), &imps, |a| a.p99_ns);
        if series.is_empty() {
            continue;
        }
        let (lo, hi) = log_bounds(&series);
        panels.push(Panel {
            title: format!("p99 latency (checkout + query + return), pool {pool}"),
            x_desc: "tasks",
            y_desc: "p99",
            x_range: (12.0, 340.0),
            x_ticks: &SELECT_TICKS,
            y_scale: YScale::Log(lo, hi),
            y_fmt: dur_fmt,
            legend: SeriesLabelPosition::UpperLeft,
            series,
        });
    }
    panels
}

fn fairness_panels(results: &[GroupResult]) -> Vec<Panel> {
    let imps = PEERS_AND_US;
    let mut panels = Vec::new();
    let cases: [FairnessCase; 2] = [
        (
            Scenario::CheckoutYield,
            "checkout + yield, 2 threads, pool 4",
            (0.8, 1300.0),
            &CHECKOUT_TICKS,
        ),
        (
            Scenario::Select1,
            "SELECT 1, 2 threads, pool 4",
            (12.0, 340.0),
            &SELECT_TICKS,
        ),
    ];
    for (scenario, what, x_range, x_ticks) in cases {
        let keep = move |g: &GroupResult| {
            g.scenario == scenario && g.spec.threads == 2 && g.spec.pool == 4
        };
        let series = series_of(results, keep, &imps, |a| a.jain);
        if !series.is_empty() {
            panels.push(Panel {
                title: format!("Jain's index, {what}"),
                x_desc: "tasks",
                y_desc: "Jain's index",
                x_range,
                x_ticks,
                y_scale: YScale::Linear(0.0, 1.05),
                y_fmt: plain_fmt,
                legend: SeriesLabelPosition::LowerLeft,
                series,
            });
        }
    }
    for (scenario, what, x_range, x_ticks) in cases {
        let keep = move |g: &GroupResult| {
            g.scenario == scenario && g.spec.threads == 2 && g.spec.pool == 4
        };
        let series = series_of(results, keep, &imps, |a| a.oldest_vs_little());
        if !series.is_empty() {
            let (lo, hi) = log_bounds(&series);
            panels.push(Panel {
                title: format!("oldest in flight ÷ Little's mean, {what}"),
                x_desc: "tasks",
                y_desc: "ratio",
                x_range,
                x_ticks,
                y_scale: YScale::Log(lo.min(0.5), hi.max(4.0)),
                y_fmt: plain_fmt,
                legend: SeriesLabelPosition::UpperLeft,
                series,
            });
        }
    }
    panels
}

const ONESHOT_TICKS: [f64; 4] = [16.0, 64.0, 256.0, 1024.0];

/// A measure a panel plots: its name, its axis, how to read it from a cell.
type Measure = (&'static str, &'static str, fn(&Agg) -> f64);
/// How a panel's axis labels its values.
type Fmt = fn(f64) -> String;
const MIXED_TICKS: [f64; 2] = [64.0, 256.0];

/// One-shot `SELECT 1`: throughput and p99 per pool size, the lane against the
/// checkout path, the peers and both raw limits.
fn oneshot_panels(results: &[GroupResult]) -> Vec<Panel> {
    // Drawn in this order: pool-core last, on top.
    let mut imps = crate::ONESHOT_IMPLS.to_vec();
    imps.rotate_left(1);
    let keep =
        |pool: usize| move |g: &GroupResult| g.scenario == Scenario::OneShot && g.spec.pool == pool;
    let mut panels = Vec::new();
    let metrics: [(Measure, Fmt); 2] = [
        (("throughput", "statements/s", |a| a.throughput), rate_fmt),
        (("p99 latency", "p99", |a| a.p99_ns), dur_fmt),
    ];
    for ((what, y_desc, y), y_fmt) in metrics {
        for pool in POOLS {
            let series = series_of(results, keep(pool), &imps, y);
            if series.is_empty() {
                continue;
            }
            let (lo, hi) = log_bounds(&series);
            panels.push(Panel {
                title: format!("{what}, pool {pool}"),
                x_desc: "tasks",
                y_desc,
                x_range: (12.0, 1300.0),
                x_ticks: &ONESHOT_TICKS,
                y_scale: YScale::Log(lo, hi),
                y_fmt,
                legend: SeriesLabelPosition::UpperLeft,
                series,
            });
        }
    }
    panels
}

/// The mixed cell (1 % `pg_sleep(0.05)`): the fast statements' p50 and p99.
fn mixed_panels(results: &[GroupResult]) -> Vec<Panel> {
    let mut imps = crate::MIXED_IMPLS.to_vec();
    imps.rotate_left(1);
    let keep = |g: &GroupResult| g.scenario == Scenario::Mixed;
    let metrics: [Measure; 2] = [
        ("fast statements' p50", "p50", |a| a.p50_ns),
        ("fast statements' p99", "p99", |a| a.p99_ns),
    ];
    metrics
        .into_iter()
        .filter_map(|(what, y_desc, y)| {
            let series = series_of(results, keep, &imps, y);
            if series.is_empty() {
                return None;
            }
            let (lo, hi) = log_bounds(&series);
            Some(Panel {
                title: format!("{what}, pool 4"),
                x_desc: "tasks",
                y_desc,
                x_range: (50.0, 330.0),
                x_ticks: &MIXED_TICKS,
                y_scale: YScale::Log(lo, hi),
                y_fmt: dur_fmt,
                legend: SeriesLabelPosition::UpperLeft,
                series,
            })
        })
        .collect()
}

/// Draws every figure into `dir`; returns the files written.
pub(crate) fn all(results: &[GroupResult], dir: &Path) -> Result<Vec<String>, String> {
    font()?;
    let mut files = Vec::new();
    let figures = [
        (
            "checkout",
            "Checkout + return, no query (higher is better; the bare-loop limit is off the scale)",
            checkout_panels(results, Scenario::Checkout, false),
        ),
        (
            "checkout_yield",
            "Checkout, yield_now, return (higher is better)",
            checkout_panels(results, Scenario::CheckoutYield, true),
        ),
        (
            "select1",
            "SELECT 1 per checkout, 2 threads",
            select_panels(results),
        ),
        (
            "fairness",
            "Fairness under oversubscription (Jain: higher is better; oldest ÷ Little: lower is better)",
            fairness_panels(results),
        ),
        (
            "oneshot",
            "One-shot SELECT 1 without a checkout of its own (the lane) and with one, 2 threads",
            oneshot_panels(results),
        ),
        (
            "mixed",
            "One-shots of which 1 % are pg_sleep(0.05): the fast ones' latency (lower is better)",
            mixed_panels(results),
        ),
    ];
    for (name, title, panels) in figures {
        if !panels.is_empty() {
            write(dir, name, title, &panels, 2, &mut files)?;
        }
    }
    Ok(files)
}
