//! Pictures of the pool under faults: the faults suite's sampler timelines, drawn.
//!
//! ```text
//! cargo run --release -p bench -- --plot-faults DIR
//! ```
//!
//! reads every `DIR/<scenario>.csv` the sampler wrote (`FAULTS_PLOTS=DIR cargo test -p
//! tests --test faults`; `bench/fault-plots.sh` runs both) and writes `DIR/<scenario>.svg`
//! and `.png`: connections (size, idle, in use, connecting) above, waiting tasks and the
//! longest current hold below, against time; each fault is a dashed line, numbered with
//! its label above the chart.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::plot::{FONT, err, font};

/// One scenario's trace, as the sampler wrote it.
struct Trace {
    /// `(ms, label)`.
    marks: Vec<(f64, String)>,
    /// `t_ms, size, idle, in_use, connecting, waiting, longest_held_ms`.
    rows: Vec<[f64; 7]>,
}

fn parse(text: &str) -> Result<Trace, String> {
    let mut trace = Trace {
        marks: Vec::new(),
        rows: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        if let Some(mark) = line.strip_prefix("# mark,") {
            let (ms, label) = mark
                .split_once(',')
                .ok_or_else(|| at("a mark needs ms,label"))?;
            let ms = ms.parse().map_err(|_| at("not a time in ms"))?;
            trace.marks.push((ms, label.to_owned()));
        } else if line.starts_with("t_ms") || line.is_empty() {
            continue;
        } else {
            let mut row = [0.0; 7];
            let mut fields = line.split(',');
            for v in &mut row {
                *v = fields
                    .next()
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| at("a sample needs 7 numbers"))?;
            }
            trace.rows.push(row);
        }
    }
    if trace.rows.is_empty() {
        return Err("no samples".to_owned());
    }
    Ok(trace)
}

/// The series of a panel: column, name, colour, line width.
type Columns = &'static [(usize, &'static str, RGBColor, u32)];

/// Size first and wide, so the lines drawn over it (in use, idle) leave it visible.
const CONNECTIONS: Columns = &[
    (1, "size", RGBColor(190, 190, 190), 7),
    (2, "idle", RGBColor(44, 160, 44), 2),
    (3, "in use", RGBColor(214, 39, 40), 2),
    (4, "connecting", RGBColor(31, 119, 180), 2),
];
const WAITING: Columns = &[(5, "waiting", RGBColor(255, 127, 14), 2)];
const HELD: Columns = &[(6, "longest held", RGBColor(148, 103, 189), 2)];

const MARK_COLOR: RGBColor = RGBColor(110, 110, 110);

/// The top of the y axis and how many labels it gets: whole numbers only.
fn y_axis(y_max: f64) -> (f64, usize) {
    if y_max <= 12.0 {
        let top = y_max.ceil() + 1.0;
        (top, top as usize + 1)
    } else {
        ((y_max * 1.1).ceil(), 8)
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    trace: &Trace,
    y_desc: &str,
    columns: Columns,
    t_end: f64,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let (chart_area, legend_area) = area.split_horizontally(area.dim_in_pixel().0 - 150);
    let y_max = trace
        .rows
        .iter()
        .flat_map(|r| columns.iter().map(move |c| r[c.0]))
        .fold(1.0_f64, f64::max);
    let (y_top, y_labels) = y_axis(y_max);
    let mut chart = ChartBuilder::on(&chart_area)
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_end, 0.0..y_top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .y_labels(y_labels)
        .label_style((FONT, 12))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (ms, _) in &trace.marks {
        let x = ms / 1e3;
        // A dashed vertical line: every other of 40 segments.
        let steps = 40;
        chart
            .draw_series((0..steps).step_by(2).map(|i| {
                let y0 = y_top * f64::from(i) / f64::from(steps);
                let y1 = y_top * f64::from(i + 1) / f64::from(steps);
                PathElement::new(vec![(x, y0), (x, y1)], MARK_COLOR.stroke_width(1))
            }))
            .map_err(err)?;
    }
    for &(column, _, c, width) in columns {
        let points: Vec<(f64, f64)> = trace.rows.iter().map(|r| (r[0] / 1e3, r[column])).collect();
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(width)))
            .map_err(err)?;
    }
    // The legend beside the chart, where no line runs.
    for (n, &(_, name, c, width)) in columns.iter().enumerate() {
        let y = 30 + 20 * n as i32;
        legend_area
            .draw(&PathElement::new(
                vec![(4, y), (26, y)],
                c.stroke_width(width.min(5)),
            ))
            .map_err(err)?;
        legend_area
            .draw(&Text::new(name, (32, y - 7), (FONT, 13)))
            .map_err(err)?;
    }
    Ok(())
}

/// The marks' labels, numbered above the top panel at their moment.
fn mark_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    trace: &Trace,
    t_end: f64,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    // Same horizontal layout as the panels: margin 10 + y labels 60, legend strip 150.
    let width = f64::from(area.dim_in_pixel().0) - 150.0 - 80.0;
    let style = (FONT, 12).into_font().color(&MARK_COLOR);
    let mut row_end = [f64::NEG_INFINITY; 2];
    for (n, (ms, label)) in trace.marks.iter().enumerate() {
        let x = 70.0 + width * (ms / 1e3) / t_end;
        let text = format!("{} {label}", n + 1);
        // Two rows: a label goes to the first row where it does not overlap, else to
        // the one that ends first.
        let w = 7.0 * text.chars().count() as f64;
        let row = row_end
            .iter()
            .position(|end| *end < x)
            .unwrap_or_else(|| usize::from(row_end[1] < row_end[0]));
        row_end[row] = x + w;
        area.draw(&Text::new(
            text,
            (x as i32, 4 + 16 * row as i32),
            style.clone(),
        ))
        .map_err(err)?;
    }
    Ok(())
}

fn figure<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    trace: &Trace,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 18)).map_err(err)?;
    let (marks, rest) = root.split_vertically(36);
    let h = rest.dim_in_pixel().1;
    let (top, rest) = rest.split_vertically(h * 2 / 4);
    let (middle, bottom) = rest.split_vertically(h / 4);
    let t_end = trace
        .rows
        .last()
        .map_or(0.0, |r| r[0])
        .max(trace.marks.iter().map(|m| m.0).fold(0.0, f64::max))
        .max(100.0)
        / 1e3;
    mark_labels(&marks, trace, t_end)?;
    panel(&top, trace, "connections", CONNECTIONS, t_end)?;
    panel(&middle, trace, "tasks waiting", WAITING, t_end)?;
    panel(&bottom, trace, "longest hold (ms)", HELD, t_end)?;
    root.present().map_err(err)
}

/// Draws every `*.csv` trace in `dir` next to itself; returns the files written.
pub(crate) fn plot_dir(dir: &Path) -> Result<Vec<String>, String> {
    font()?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".csv").map(str::to_owned))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!(
            "no sampler traces (*.csv) in {}: run the faults suite with FAULTS_PLOTS={} first (bench/fault-plots.sh does both)",
            dir.display(),
            dir.display()
        ));
    }
    let mut files = Vec::new();
    for name in names {
        let csv = dir.join(format!("{name}.csv"));
        let text = std::fs::read_to_string(&csv).map_err(|e| format!("{}: {e}", csv.display()))?;
        let trace = parse(&text).map_err(|e| format!("{}: {e}", csv.display()))?;
        let title = format!("{name}: the pool every 10 ms, faults marked");
        let size = (1100, 760);
        let svg = dir.join(format!("{name}.svg"));
        figure(
            SVGBackend::new(&svg, size).into_drawing_area(),
            &title,
            &trace,
        )?;
        let png = dir.join(format!("{name}.png"));
        figure(
            BitMapBackend::new(&png, size).into_drawing_area(),
            &title,
            &trace,
        )?;
        files.push(format!("{name}.svg"));
        files.push(format!("{name}.png"));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_marks_and_samples_and_refuses_a_short_row() {
        let t = parse("# mark,12.5,stop (fast, then start)\nt_ms,size,idle,in_use,connecting,waiting,longest_held_ms\n0.0,4,4,0,0,0,0.0\n10.1,4,1,3,0,7,3.5\n").unwrap();
        assert_eq!(t.marks, vec![(12.5, "stop (fast, then start)".to_owned())]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[1][5], 7.0);
        let e = parse("t_ms,size\n0.0,4,4\n").err().unwrap();
        assert!(e.contains("line 2") && e.contains("7 numbers"), "{e}");
        assert_eq!(parse("").err().unwrap(), "no samples");
    }
}
