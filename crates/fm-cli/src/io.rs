//! Writing samples (`.npy`, `.csv`) and machine-readable output.

use std::path::Path;

use anyhow::{bail, Context, Result};
use fm_models::checkpoint::atomic_write;

/// Encodes a row-major `f32` matrix as a NumPy `.npy` (format 1.0, little endian).
pub fn npy_bytes(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    fm_data::npy::encode_f32(data, &[rows, cols])
}

/// Checks, before any work, that samples can be written to `path` (`flag` names
/// the option in the error): a known extension and a writable directory.
pub fn check_output(path: &Path, flag: &str) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
    if !matches!(ext.as_deref(), Some("npy" | "csv")) {
        bail!("{flag} {}: unknown extension; use .npy or .csv", path.display());
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let cannot = || format!("{flag} {}: cannot write to {}", path.display(), dir.display());
    std::fs::create_dir_all(dir).with_context(cannot)?;
    let probe = dir.join(format!(".fm-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(cannot)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Writes samples to `.npy` or `.csv`, chosen by the file's extension.
pub fn write_samples(path: &Path, data: &[f32], rows: usize, cols: usize, names: &[String]) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
    let bytes = match ext.as_deref() {
        Some("npy") => npy_bytes(data, rows, cols),
        Some("csv") => {
            let header: Vec<String> = if names.len() == cols {
                names.to_vec()
            } else {
                (0..cols).map(|i| format!("x{i}")).collect()
            };
            let mut s = header.join(",");
            s.push('\n');
            for row in data.chunks_exact(cols) {
                let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                s.push_str(&cells.join(","));
                s.push('\n');
            }
            s.into_bytes()
        }
        _ => bail!("--out {}: unknown extension; use .npy or .csv", path.display()),
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    atomic_write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
