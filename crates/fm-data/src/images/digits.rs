//! scikit-learn's 8 × 8 digits: CSV (optionally gzip), 64 pixels in `0..=16` then the label.

use std::path::Path;

use super::{read_maybe_gz, ImageSet};
use crate::{Error, Result};

/// Parses the digits CSV text (no header; 65 integers per row); `path` only names it in errors.
pub fn parse_digits(text: &str, path: &Path) -> Result<ImageSet> {
    let bad = |line: usize, reason: String| Error::Format {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != 65 {
            return Err(bad(i + 1, format!("{} cells; expected 64 pixels and a label", cells.len())));
        }
        for (j, c) in cells.iter().enumerate() {
            let v: u8 =
                c.parse().map_err(|_| bad(i + 1, format!("cell {}: {c:?} is not an integer", j + 1)))?;
            let max = if j < 64 { 16 } else { 9 };
            if v > max {
                return Err(bad(i + 1, format!("cell {}: {v} is above {max}", j + 1)));
            }
            if j < 64 {
                pixels.push(v);
            } else {
                labels.push(v);
            }
        }
    }
    if labels.is_empty() {
        return Err(Error::NoDataRows { path: path.to_path_buf() });
    }
    let set = ImageSet {
        n: labels.len(),
        pixels,
        labels: Some(labels),
        channels: 1,
        height: 8,
        width: 8,
        levels: 17,
        source: path.display().to_string(),
    };
    set.validate()?;
    Ok(set)
}

/// Loads scikit-learn's `digits.csv.gz` (or an uncompressed copy): 1,797 images of 8 × 8 in 17 levels.
pub fn load_digits_csv(path: &Path) -> Result<ImageSet> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::Format { path: path.to_path_buf(), reason: "not UTF-8 text".into() })?;
    parse_digits(text, path)
}
