//! `chart.svg`: deliveries/s of the throughput scenarios and p99 latency of the latency
//! scenarios, as bars grouped by scenario, one colour per server.

use crate::report::{num, thousands, Results, Stats};
use crate::scenarios::{Kind, Scenario, Server};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::path::Path;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 560;

fn colour(server: Server) -> RGBColor {
    match server {
        Server::Ours => RGBColor(0x1f, 0x77, 0xb4),
        Server::Tungstenite => RGBColor(0xff, 0x7f, 0x0e),
        Server::Node => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

/// A tick label: whole numbers without decimals (the log axis ticks at powers of ten).
fn axis_number(y: f64) -> String {
    if y >= 1.0 && (y - y.round()).abs() < 1e-6 {
        thousands(y)
    } else {
        num(y)
    }
}

/// An x axis of `n` groups centred on 0, 1, ..., n-1, with one tick per group.
struct Groups(usize);

impl Ranged for Groups {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let r = self.range();
        let frac = (value - r.start) / (r.end - r.start);
        limit.0 + (frac * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        (0..self.0).map(|i| i as f64).collect()
    }

    fn range(&self) -> Range<f64> {
        -0.5..self.0 as f64 - 0.5
    }
}

/// One panel's data: for each scenario, one value per server (missing when no run worked).
struct Panel<'a> {
    title: &'a str,
    y_desc: &'a str,
    groups: Vec<&'static str>,
    values: Vec<Vec<Option<f64>>>,
}

/// Writes the chart to `path`.
pub fn write(
    path: &Path,
    results: &Results,
    scenarios: &[Scenario],
    servers: &[Server],
) -> Result<(), String> {
    let panel = |kind: Kind, title, y_desc, f: fn(&Stats) -> Option<f64>| {
        let chosen: Vec<&Scenario> = scenarios.iter().filter(|s| s.kind == kind).collect();
        Panel {
            title,
            y_desc,
            groups: chosen.iter().map(|s| s.name).collect(),
            values: chosen
                .iter()
                .map(|s| {
                    servers
                        .iter()
                        .map(|sv| f(&Stats::of(&results.runs, s.name, sv.name())))
                        .collect()
                })
                .collect(),
        }
    };
    let throughput = panel(
        Kind::Throughput,
        "Throughput (closed loop): higher is better",
        "deliveries per second (log scale)",
        |s| s.deliveries_per_s,
    );
    let latency = panel(
        Kind::Latency,
        "p99 latency at a fixed rate: lower is better",
        "p99 latency, ms (log scale)",
        |s| s.p99_ms,
    );

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| format!("chart: {e}");
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "chat-server (ours) vs tokio-tungstenite vs Node ws: medians of {} round(s){}",
        results.meta.rounds,
        if results.meta.quick {
            ", QUICK MODE"
        } else {
            ""
        }
    );
    let root = root
        .titled(&title, ("sans-serif", 22).into_font())
        .map_err(err)?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    draw_panel(&left, &throughput, servers).map_err(err)?;
    draw_panel(&right, &latency, servers).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    servers: &[Server],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let all: Vec<f64> = panel
        .values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| *v > 0.0)
        .collect();
    if all.is_empty() {
        let style = TextStyle::from(("sans-serif", 16).into_font())
            .pos(Pos::new(HPos::Center, VPos::Center));
        let (w, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            format!("{}: no data", panel.title),
            (w as i32 / 2, h as i32 / 2),
            style,
        ))?;
        return Ok(());
    }
    // Log axis from a third of the smallest bar; the tallest bar (and its label) ends at
    // 70% of the height so that the legend above it never covers a bar.
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min) / 3.0;
    let top = all.iter().copied().fold(0.0, f64::max) * 1.15;
    let hi = (lo.ln() + (top.ln() - lo.ln()) / 0.7).exp();
    let n = panel.groups.len();
    let groups = panel.groups.clone();

    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 18).into_font())
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(Groups(n), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("scenario")
        .y_desc(panel.y_desc)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < groups.len() {
                groups[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| axis_number(*y))
        .y_label_style(("sans-serif", 13).into_font())
        .x_label_style(("sans-serif", 14).into_font())
        .axis_desc_style(("sans-serif", 14).into_font())
        .draw()?;

    let slot = 0.8 / servers.len() as f64;
    for (k, &server) in servers.iter().enumerate() {
        let fill = colour(server);
        let bars: Vec<(f64, f64)> = panel
            .values
            .iter()
            .enumerate()
            .filter_map(|(g, vals)| Some((g as f64 - 0.4 + k as f64 * slot, vals[k]?)))
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, v)| {
                Rectangle::new(
                    [(x0 + slot * 0.05, lo), (x0 + slot * 0.95, v)],
                    fill.filled(),
                )
            }))?
            .label(server.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], fill.filled()));
        let label_style = TextStyle::from(("sans-serif", 12).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(
            bars.iter().map(|&(x0, v)| {
                Text::new(num(v), (x0 + slot / 2.0, v * 1.08), label_style.clone())
            }),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14).into_font())
        .draw()?;
    Ok(())
}
