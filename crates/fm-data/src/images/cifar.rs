//! The CIFAR-10 binary format: records of one label byte and 3 × 32 × 32 pixel bytes.

use std::path::Path;

use super::{read_maybe_gz, ImageSet, Split};
use crate::{Error, Result};

const SIDE: usize = 32;
const RECORD: usize = 1 + 3 * SIDE * SIDE;

/// Parses one CIFAR-10 binary batch (`path` only names it in errors).
pub fn parse_cifar10_batch(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    let n = parse_cifar_batch(bytes, path, &mut pixels, &mut labels)?;
    let set = ImageSet {
        pixels,
        labels: Some(labels),
        n,
        channels: 3,
        height: SIDE,
        width: SIDE,
        levels: 256,
        source: path.display().to_string(),
    };
    set.validate()?;
    Ok(set)
}

/// Parses the records of one CIFAR-10 binary batch file, appending to `pixels` and `labels`.
fn parse_cifar_batch(bytes: &[u8], path: &Path, pixels: &mut Vec<u8>, labels: &mut Vec<u8>) -> Result<usize> {
    let bad = |reason: String| Error::Format { path: path.to_path_buf(), reason };
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(bad(format!(
            "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated or not CIFAR-10 binary)",
            bytes.len()
        )));
    }
    for (k, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(bad(format!("record {k}: label {} is not a CIFAR-10 class (0..9)", rec[0])));
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok(bytes.len() / RECORD)
}

/// Loads CIFAR-10 from the directory of its binary version
/// (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`).
pub fn load_cifar10_dir(dir: &Path, split: Split) -> Result<ImageSet> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    let mut n = 0;
    for f in &files {
        let path = dir.join(f);
        n += parse_cifar_batch(&read_maybe_gz(&path)?, &path, &mut pixels, &mut labels)?;
    }
    let set = ImageSet {
        pixels,
        labels: Some(labels),
        n,
        channels: 3,
        height: SIDE,
        width: SIDE,
        levels: 256,
        source: dir.display().to_string(),
    };
    set.validate()?;
    Ok(set)
}
