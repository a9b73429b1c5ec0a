//! PNG figures: data against samples, and sampling trajectories.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

static FONT: Once = Once::new();

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" (no system fonts needed).
pub(crate) fn ensure_font() {
    FONT.call_once(|| {
        // The font is compiled in; registering it cannot fail for valid bytes.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A square-ish window around the reference points: their range plus 15 % on each side.
fn window(points: &[f32]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points.chunks_exact(2) {
        let (x, y) = (p[0] as f64, p[1] as f64);
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return (-3.0..3.0, -3.0..3.0);
    }
    let (mx, my) = (0.15 * (x1 - x0).max(1e-6), 0.15 * (y1 - y0).max(1e-6));
    (x0 - mx..x1 + mx, y0 - my..y1 + my)
}

/// The data window widened to hold the central 96 % of the source points on each axis,
/// so trajectories show where they start without a few far outliers squeezing the view.
fn trajectory_window(
    data: (std::ops::Range<f64>, std::ops::Range<f64>),
    sources: &[f32],
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let quantiles = |axis: usize| {
        let mut v: Vec<f64> =
            sources.chunks_exact(2).map(|p| p[axis] as f64).filter(|v| v.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.02), at(0.98)))
    };
    let widen = |r: std::ops::Range<f64>, q: Option<(f64, f64)>| match q {
        Some((lo, hi)) => r.start.min(lo)..r.end.max(hi),
        None => r,
    };
    (widen(data.0, quantiles(0)), widen(data.1, quantiles(1)))
}

/// Draws three panels — data, samples, trajectories — into a PNG.
///
/// `data` and `samples` are row-major `n × 2`; `trajectories` holds the state
/// of every sample at each grid time (each `n × 2`), of which up to 200 paths
/// are drawn; without trajectories (a discrete model's chain jumps) the
/// figure has the first two panels only.
pub fn samples_figure(
    path: &Path,
    title: &str,
    data: &[f32],
    samples: &[f32],
    trajectories: &[Vec<f32>],
) -> Result<()> {
    if !data.len().is_multiple_of(2) || !samples.len().is_multiple_of(2) {
        bail!("the plot needs 2-D points");
    }
    ensure_font();
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let (xr, yr) = window(data);
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let panel_count = if trajectories.is_empty() { 2 } else { 3 };
    let root = BitMapBackend::new(path, (500 * panel_count, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, panel_count as usize));
    let data_color = RGBColor(31, 119, 180);
    let sample_color = RGBColor(214, 39, 40);
    let captions = ["data", "samples", "trajectories (black: t = 0 noise, red: t = 1)"];
    let (txr, tyr) = trajectory_window((xr.clone(), yr.clone()), trajectories.first().map_or(&[], |v| v));
    for (k, panel) in panels.iter().enumerate() {
        let (px, py) = if k == 2 { (txr.clone(), tyr.clone()) } else { (xr.clone(), yr.clone()) };
        let mut chart = ChartBuilder::on(panel)
            .caption(captions[k], ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d(px, py)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        let dots = |pts: &[f32], color: RGBColor, alpha: f64| {
            pts.chunks_exact(2)
                .map(move |p| Circle::new((p[0] as f64, p[1] as f64), 1, color.mix(alpha).filled()))
                .collect::<Vec<_>>()
        };
        match k {
            0 => {
                chart.draw_series(dots(data, data_color, 0.6)).map_err(|e| err(&e))?;
            }
            1 => {
                chart.draw_series(dots(samples, sample_color, 0.6)).map_err(|e| err(&e))?;
            }
            _ => {
                let n = samples.len() / 2;
                let shown = n.min(200);
                for i in 0..shown {
                    let line: Vec<(f64, f64)> = trajectories
                        .iter()
                        .filter_map(|s| s.get(2 * i..2 * i + 2).map(|p| (p[0] as f64, p[1] as f64)))
                        .collect();
                    chart
                        .draw_series(LineSeries::new(line, RGBColor(120, 120, 120).mix(0.35)))
                        .map_err(|e| err(&e))?;
                }
                if let Some(first) = trajectories.first() {
                    chart
                        .draw_series(dots(&first[..2 * shown.min(first.len() / 2)], RGBColor(0, 0, 0), 0.5))
                        .map_err(|e| err(&e))?;
                }
                chart.draw_series(dots(&samples[..2 * shown], sample_color, 0.9)).map_err(|e| err(&e))?;
            }
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
