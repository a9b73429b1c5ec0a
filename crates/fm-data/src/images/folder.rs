//! A folder of PNG images; sub-folders, if any, are the classes.

use std::path::{Path, PathBuf};

use super::ImageSet;
use crate::{Error, Result};

fn pngs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|io| Error::Io { path: dir.to_path_buf(), io })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    v.sort();
    Ok(v)
}

/// Loads every `*.png` of `dir` (sorted by name), or, if `dir` has sub-folders,
/// those of each sub-folder with the sub-folder's rank (sorted by name) as the label.
///
/// All images must have the same size; they are read as grayscale if every
/// one is grayscale, otherwise as RGB.
pub fn load_png_folder(dir: &Path) -> Result<ImageSet> {
    let rd = std::fs::read_dir(dir).map_err(|io| Error::Io { path: dir.to_path_buf(), io })?;
    let mut classes: Vec<PathBuf> =
        rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    classes.sort();
    let (files, labels): (Vec<PathBuf>, Option<Vec<u8>>) = if classes.is_empty() {
        (pngs_in(dir)?, None)
    } else {
        if classes.len() > 256 {
            return Err(Error::Format {
                path: dir.to_path_buf(),
                reason: format!("{} class folders; at most 256", classes.len()),
            });
        }
        let mut files = Vec::new();
        let mut labels = Vec::new();
        for (k, c) in classes.iter().enumerate() {
            for f in pngs_in(c)? {
                files.push(f);
                labels.push(k as u8);
            }
        }
        (files, Some(labels))
    };
    if files.is_empty() {
        return Err(Error::Format { path: dir.to_path_buf(), reason: "no .png files found".into() });
    }
    let mut decoded = Vec::with_capacity(files.len());
    for f in &files {
        let img = image::open(f)
            .map_err(|e| Error::Format { path: f.clone(), reason: format!("cannot decode the PNG ({e})") })?;
        decoded.push(img);
    }
    let (w, h) = (decoded[0].width() as usize, decoded[0].height() as usize);
    let gray = decoded.iter().all(|i| !i.color().has_color());
    let channels = if gray { 1 } else { 3 };
    let mut pixels = Vec::with_capacity(files.len() * channels * h * w);
    for (img, f) in decoded.iter().zip(&files) {
        if (img.width() as usize, img.height() as usize) != (w, h) {
            return Err(Error::Format {
                path: f.clone(),
                reason: format!("{}×{} pixels; the first image is {w}×{h}", img.width(), img.height()),
            });
        }
        if gray {
            pixels.extend_from_slice(img.to_luma8().as_raw());
        } else {
            // Interleaved RGB → planar (c, h, w).
            let rgb = img.to_rgb8();
            let raw = rgb.as_raw();
            for c in 0..3 {
                pixels.extend(raw.iter().skip(c).step_by(3));
            }
        }
    }
    let set = ImageSet {
        n: files.len(),
        pixels,
        labels,
        channels,
        height: h,
        width: w,
        levels: 256,
        source: dir.display().to_string(),
    };
    set.validate()?;
    Ok(set)
}
