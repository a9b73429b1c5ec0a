//! PNG figure of a 2-D density: a histogram of the data beside the model's density.

use std::ops::Range;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use crate::plot::ensure_font;

/// A colour on a viridis-like ramp for `v` in `[0, 1]`.
fn viridis(v: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [68.0, 1.0, 84.0]),
        (0.25, [59.0, 82.0, 139.0]),
        (0.5, [33.0, 145.0, 140.0]),
        (0.75, [94.0, 201.0, 98.0]),
        (1.0, [253.0, 231.0, 37.0]),
    ];
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    let k = STOPS.iter().position(|(s, _)| *s >= v).unwrap_or(STOPS.len() - 1).max(1);
    let ((s0, c0), (s1, c1)) = (STOPS[k - 1], STOPS[k]);
    let f = (v - s0) / (s1 - s0);
    let mix = |i: usize| (c0[i] + f * (c1[i] - c0[i])).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

/// A heat map of `values` (`g × g`, row `i` at `y = ys[i]`, column `j` at `x = xs[j]`).
pub(crate) fn heat_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    xr: &Range<f64>,
    yr: &Range<f64>,
    g: usize,
    values: &[f64],
    err: &dyn Fn(&dyn std::fmt::Display) -> anyhow::Error,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(40)
        .build_cartesian_2d(xr.clone(), yr.clone())
        .map_err(|e| err(&e))?;
    chart.configure_mesh().disable_mesh().label_style(("sans-serif", 13)).draw().map_err(|e| err(&e))?;
    let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-300);
    let (dx, dy) = ((xr.end - xr.start) / g as f64, (yr.end - yr.start) / g as f64);
    let cells = (0..g * g).map(|k| {
        let (i, j) = (k / g, k % g);
        let (x0, y0) = (xr.start + j as f64 * dx, yr.start + i as f64 * dy);
        Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], viridis(values[k] / max).filled())
    });
    chart.draw_series(cells).map_err(|e| err(&e))?;
    Ok(())
}

/// Draws the data's histogram and the model's density on the same `g × g` grid over `xr × yr`.
///
/// `density` holds the model density at the cell centres (row-major, `y` outer);
/// `data` is row-major `n × 2`.
pub fn density_figure(
    path: &Path,
    title: &str,
    xr: Range<f64>,
    yr: Range<f64>,
    g: usize,
    density: &[f64],
    data: &[f32],
) -> Result<()> {
    ensure_font();
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let mut hist = vec![0.0f64; g * g];
    let (dx, dy) = ((xr.end - xr.start) / g as f64, (yr.end - yr.start) / g as f64);
    for p in data.chunks_exact(2) {
        let (j, i) = (((p[0] as f64 - xr.start) / dx).floor(), ((p[1] as f64 - yr.start) / dy).floor());
        if (0.0..g as f64).contains(&j) && (0.0..g as f64).contains(&i) {
            hist[i as usize * g + j as usize] += 1.0;
        }
    }
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 2));
    heat_panel(&panels[0], &format!("data histogram ({} points)", data.len() / 2), &xr, &yr, g, &hist, &err)?;
    heat_panel(&panels[1], "model density", &xr, &yr, g, density, &err)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
