//! PNG grids of images (samples of image models).

use std::path::Path;

use anyhow::{bail, Context, Result};

use fm_pipeline::ImageShape;

/// Writes a grid of `n` images (row-major `n × c·h·w` values in `[−1, 1]`) to a PNG,
/// `cols` images per row, each pixel scaled up by `zoom`.
pub fn image_grid(path: &Path, images: &[f32], shape: ImageShape, cols: usize, zoom: usize) -> Result<()> {
    let ImageShape { channels: c, height: h, width: w } = shape;
    let d = c * h * w;
    if d == 0 || !images.len().is_multiple_of(d) || !(c == 1 || c == 3) {
        bail!("cannot draw {} values as {c}×{h}×{w} images", images.len());
    }
    let n = images.len() / d;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let (pad, zoom) = (1, zoom.max(1));
    let (gw, gh) = (cols * (w * zoom + pad) + pad, rows * (h * zoom + pad) + pad);
    let mut img = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([255, 255, 255]));
    let to_u8 = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
    for k in 0..n {
        let (r, q) = (k / cols, k % cols);
        let x0 = pad + q * (w * zoom + pad);
        let y0 = pad + r * (h * zoom + pad);
        let im = &images[k * d..(k + 1) * d];
        for y in 0..h * zoom {
            for x in 0..w * zoom {
                let (sy, sx) = (y / zoom, x / zoom);
                let px = |ch: usize| to_u8(im[(ch * h + sy) * w + sx]);
                let rgb = if c == 1 { [px(0); 3] } else { [px(0), px(1), px(2)] };
                img.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb(rgb));
            }
        }
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    img.save(path).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a strip of `x_t` along the trajectory: one row per sample (the first
/// `rows`), `cols` columns at evenly spaced grid times from `t = 0` to `t = 1`.
/// `frames[k]` holds the `rows` images at grid time `k` (row-major, `[−1, 1]`).
pub fn trajectory_strip(
    path: &Path,
    frames: &[Vec<f32>],
    rows: usize,
    shape: ImageShape,
    cols: usize,
    zoom: usize,
) -> Result<()> {
    let d = shape.channels * shape.height * shape.width;
    if frames.len() < 2 || rows == 0 {
        bail!("no trajectory was recorded");
    }
    let cols = cols.clamp(2, frames.len());
    let last = frames.len() - 1;
    let picks: Vec<usize> = (0..cols).map(|j| (j * last + (cols - 1) / 2) / (cols - 1)).collect();
    let mut images = Vec::with_capacity(rows * cols * d);
    for r in 0..rows {
        for &k in &picks {
            let f = frames[k].get(r * d..(r + 1) * d).context("trajectory frame too short")?;
            images.extend_from_slice(f);
        }
    }
    image_grid(path, &images, shape, cols, zoom)
}
