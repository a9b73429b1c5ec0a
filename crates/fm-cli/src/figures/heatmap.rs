//! Heat maps: one row per labelled dataset, one column per time, colour = value in [0, 1].

use std::path::Path;

use anyhow::{bail, Result};
use plotters::prelude::*;

use super::prepare;

/// Values `values[row][col]` in `[0, 1]` at column times `columns` (increasing).
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub rows: Vec<String>,
    pub columns: Vec<f64>,
    pub values: Vec<Vec<f64>>,
    pub x_label: String,
}

/// A viridis-like colour for `v ∈ [0, 1]` (piecewise linear through five anchors).
fn viridis(v: f64) -> RGBColor {
    const A: [(f64, f64, f64); 5] =
        [(68., 1., 84.), (59., 82., 139.), (33., 145., 140.), (94., 201., 98.), (253., 231., 37.)];
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    let x = v * 4.0;
    let k = (x.floor() as usize).min(3);
    let f = x - k as f64;
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(mix(A[k].0, A[k + 1].0), mix(A[k].1, A[k + 1].1), mix(A[k].2, A[k + 1].2))
}

/// Cell edges: midpoints between column times, extended by half a gap at both ends.
fn edges(c: &[f64]) -> Vec<f64> {
    if c.len() == 1 {
        return vec![c[0] - 0.5, c[0] + 0.5];
    }
    let mut e = vec![c[0] - 0.5 * (c[1] - c[0])];
    e.extend(c.windows(2).map(|w| 0.5 * (w[0] + w[1])));
    e.push(c[c.len() - 1] + 0.5 * (c[c.len() - 1] - c[c.len() - 2]));
    e
}

/// Draws the heat map with a colour bar into a PNG at `path`.
pub fn heatmap_figure(path: &Path, title: &str, h: &Heatmap) -> Result<()> {
    if h.rows.is_empty() || h.columns.is_empty() || h.values.len() != h.rows.len() {
        bail!("a heat map needs at least one row and one column");
    }
    if h.values.iter().any(|r| r.len() != h.columns.len()) {
        bail!("every heat-map row needs one value per column");
    }
    let err = prepare(path)?;
    let height = 160 + 46 * h.rows.len() as u32;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| err(&e))?;
    let (main, bar) = root.split_horizontally(880);
    let e = edges(&h.columns);
    let nrows = h.rows.len();
    let mut chart = ChartBuilder::on(&main)
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(90)
        .build_cartesian_2d(e[0]..e[e.len() - 1], 0.0..nrows as f64)
        .map_err(|e| err(&e))?;
    let labels = h.rows.clone();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(h.x_label.as_str())
        .y_labels(nrows * 2 + 1)
        .y_label_formatter(&|v| {
            // Label row centres (k + 0.5), top row first.
            let k = v - 0.5;
            if (k - k.round()).abs() < 1e-6 && k >= -1e-6 && (k.round() as usize) < labels.len() {
                labels[labels.len() - 1 - k.round() as usize].clone()
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|v| format!("{}", (v * 1e3).round() / 1e3))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))?;
    let cells = h.values.iter().enumerate().flat_map(|(r, row)| {
        let y = (nrows - 1 - r) as f64;
        let e = &e;
        row.iter()
            .enumerate()
            .map(move |(c, &v)| Rectangle::new([(e[c], y), (e[c + 1], y + 1.0)], viridis(v).filled()))
    });
    chart.draw_series(cells).map_err(|e| err(&e))?;
    // Colour bar from 0 (bottom) to 1 (top).
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(14)
        .margin_bottom(56)
        .margin_right(50)
        .y_label_area_size(0)
        .right_y_label_area_size(40)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(|e| err(&e))?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    cb.draw_series((0..100).map(|k| {
        let v = k as f64 / 100.0;
        Rectangle::new([(0.0, v), (1.0, v + 0.01)], viridis(v + 0.005).filled())
    }))
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
