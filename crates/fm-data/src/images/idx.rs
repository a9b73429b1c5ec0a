//! The IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

use std::path::{Path, PathBuf};

use super::{read_maybe_gz, ImageSet, Split};
use crate::{Error, Result};

/// An unsigned-byte IDX array: its dimensions and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Parses IDX bytes (`0x00 0x00 0x08 ndim`, big-endian `u32` dimensions, then `u8` data).
///
/// `path` only names the file in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let bad = |reason: String| Error::Format { path: path.to_path_buf(), reason };
    if bytes.len() < 4 {
        return Err(bad(format!("{} bytes is too short for an IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (the magic number must start with two zero bytes)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("IDX type 0x{:02x} is not supported (only unsigned bytes, 0x08)", bytes[2])));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err(bad("IDX header declares 0 dimensions".into()));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad(format!("truncated: the header needs {header} bytes, the file has {}", bytes.len())));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let count = count.ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let body = bytes.len() - header;
    if body != count {
        return Err(bad(format!(
            "{} data bytes for dimensions {dims:?}, which need {count}{}",
            body,
            if body < count { " (the file is truncated)" } else { "" }
        )));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Reads an IDX file, plain or gzip-compressed.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    parse_idx(&read_maybe_gz(path)?, path)
}

/// Finds `stem` in `dir` under the usual spellings: `train-images-idx3-ubyte`,
/// `train-images.idx3-ubyte`, each optionally with `.gz`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let names = [stem.to_string(), format!("{stem}.gz"), dotted.clone(), format!("{dotted}.gz")];
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| Error::Io {
        path: dir.join(stem),
        io: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {} in {} (also tried .gz and dotted names)", stem, dir.display()),
        ),
    })
}

/// Loads an MNIST-format split (MNIST, Fashion-MNIST) from the four IDX files in `dir`.
///
/// Images must be 3-D (`n × h × w`) and labels 1-D with the same `n`.
pub fn load_mnist_dir(dir: &Path, split: Split) -> Result<ImageSet> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let img_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lbl_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx(&img_path)?;
    let labels = read_idx(&lbl_path)?;
    let [n, h, w] = images.dims[..] else {
        return Err(Error::Format {
            path: img_path,
            reason: format!("images must have 3 dimensions (n, rows, cols), found {:?}", images.dims),
        });
    };
    if labels.dims != [n] {
        return Err(Error::Format {
            path: lbl_path,
            reason: format!("labels have dimensions {:?}; the images need [{n}]", labels.dims),
        });
    }
    let set = ImageSet {
        pixels: images.data,
        labels: Some(labels.data),
        n,
        channels: 1,
        height: h,
        width: w,
        levels: 256,
        source: img_path.display().to_string(),
    };
    set.validate()?;
    Ok(set)
}
