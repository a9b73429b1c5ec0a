//! Figures of the analyses: line charts (one or more panels) and heat maps, as PNG.

mod heatmap;
mod lines;

pub use heatmap::{heatmap_figure, Heatmap};
pub use lines::{line_figure, Panel, Series};

use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// Creates the parent directory of `path` and returns an error constructor naming the file.
fn prepare(path: &Path) -> Result<impl Fn(&dyn std::fmt::Display) -> anyhow::Error + '_> {
    crate::plot::ensure_font();
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    Ok(move |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display()))
}

/// A colour per series index (matplotlib's tab10).
fn palette(i: usize) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}
