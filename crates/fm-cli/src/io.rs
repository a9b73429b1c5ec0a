//! Writing samples (`.npy`, `.csv`) and machine-readable output.

use std::path::Path;

use anyhow::{bail, Context, Result};
use fm_models::checkpoint::atomic_write;

/// Encodes a row-major `f32` matrix as a NumPy `.npy` (format 1.0, little endian).
pub fn npy_bytes(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + dict + padding + '\n', a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let b = npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 2);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap_or("");
        assert!(header.contains("'shape': (3, 2)") && header.ends_with('\n'));
        assert_eq!(b.len(), 10 + hl + 24);
        assert_eq!(f32::from_le_bytes([b[10 + hl], b[11 + hl], b[12 + hl], b[13 + hl]]), 1.0);
    }
}
