//! Line charts: one or more panels side by side, each with named series and
//! optional log₁₀ axes.

use std::path::Path;

use anyhow::{bail, Result};
use plotters::prelude::*;

use super::{palette, prepare};

/// One named line of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart: its caption, axis labels and series. On a log axis, points
/// with a non-positive coordinate are left out.
#[derive(Debug, Clone)]
pub struct Panel {
    pub caption: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// A dashed vertical line at this x (e.g. a threshold), if any.
    pub marker_x: Option<f64>,
}

fn to_axis(v: f64, log: bool) -> Option<f64> {
    if !v.is_finite() {
        return None;
    }
    if log {
        (v > 0.0).then(|| v.log10())
    } else {
        Some(v)
    }
}

fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = 0.05 * (hi - lo).max(1e-9);
    lo - pad..hi + pad
}

fn tick(v: f64, log: bool) -> String {
    if log {
        // Two significant digits: the ticks are evenly spaced in log₁₀, not at round numbers.
        let x = 10f64.powf(v);
        let e = x.abs().log10().floor() as i32;
        if (-2..4).contains(&e) {
            let q = 10f64.powi(e - 1);
            format!("{:.*}", (1 - e).max(0) as usize, (x / q).round() * q)
        } else {
            format!("{x:.1e}")
        }
    } else {
        format!("{}", (v * 1e3).round() / 1e3)
    }
}

/// Draws `panels` side by side into a PNG at `path`.
pub fn line_figure(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    if panels.is_empty() {
        bail!("a figure needs at least one panel");
    }
    let err = prepare(path)?;
    let width = 640 * panels.len() as u32;
    let root = BitMapBackend::new(path, (width, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| err(&e))?;
    let areas = root.split_evenly((1, panels.len()));
    for (panel, area) in panels.iter().zip(&areas) {
        let pts: Vec<Vec<(f64, f64)>> = panel
            .series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter_map(|&(x, y)| Some((to_axis(x, panel.log_x)?, to_axis(y, panel.log_y)?)))
                    .collect()
            })
            .collect();
        let mut xr = range(pts.iter().flatten().map(|p| p.0));
        if let Some(m) = panel.marker_x.and_then(|m| to_axis(m, panel.log_x)) {
            xr = xr.start.min(m)..xr.end.max(m);
        }
        let yr = range(pts.iter().flatten().map(|p| p.1));
        let (y0, y1) = (yr.start, yr.end);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.caption, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(xr, yr)
            .map_err(|e| err(&e))?;
        let (lx, ly) = (panel.log_x, panel.log_y);
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .x_label_formatter(&|v| tick(*v, lx))
            .y_label_formatter(&|v| tick(*v, ly))
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
        if let Some(m) = panel.marker_x.and_then(|m| to_axis(m, lx)) {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(m, y0), (m, y1)],
                    6,
                    4,
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
        for (k, (s, p)) in panel.series.iter().zip(&pts).enumerate() {
            let color = palette(k);
            chart
                .draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            if p.len() <= 40 {
                chart
                    .draw_series(p.iter().map(|&q| Circle::new(q, 3, color.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        if panel.series.len() > 1 || panel.series.first().is_some_and(|s| !s.name.is_empty()) {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
