//! Reading NumPy `.npy` arrays of `f32` or `f64` (as `fm sample` writes them,
//! and as NumPy's `np.save` does for C-ordered float arrays).

use std::path::Path;

use anyhow::{bail, Context, Result};

/// A float array read from a `.npy` file, as `f32`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
    /// The shape.
    pub shape: Vec<usize>,
}

/// Reads `path` (`<f4`, `<f8` or `>f4`/`>f8`, C order, format 1.0–3.0).
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_npy(&bytes).with_context(|| format!("{}: not a readable .npy array", path.display()))
}

/// Parses the bytes of a `.npy` file; never panics on malformed input.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("missing the \\x93NUMPY magic bytes");
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => bail!("unsupported format version {v}"),
    };
    let header = bytes.get(start..start + header_len).context("truncated header")?;
    let header = std::str::from_utf8(header).context("the header is not text")?;
    let descr = dict_value(header, "descr").context("no 'descr' in the header")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let (width, little) = match descr {
        "<f4" | "|f4" => (4, true),
        ">f4" => (4, false),
        "<f8" => (8, true),
        ">f8" => (8, false),
        other => bail!("dtype {other} is not supported; save the array as float32 or float64"),
    };
    let fortran = dict_value(header, "fortran_order").context("no 'fortran_order' in the header")?;
    if fortran.trim() != "False" {
        bail!("Fortran-ordered arrays are not supported; save a C-ordered array");
    }
    let shape_text = dict_value(header, "shape").context("no 'shape' in the header")?;
    let shape: Vec<usize> = shape_text
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().with_context(|| format!("bad shape entry `{s}`")))
        .collect::<Result<_>>()?;
    let count = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).context("the shape overflows")?;
    let body = &bytes[start + header_len..];
    let need = count.checked_mul(width).context("the shape overflows")?;
    if body.len() != need {
        bail!("shape {shape:?} needs {need} bytes of data, the file has {}", body.len());
    }
    let data = match (width, little) {
        (4, true) => body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        (4, false) => body.chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect(),
        (_, le) => body
            .chunks_exact(8)
            .map(|c| {
                let a = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                (if le { f64::from_le_bytes(a) } else { f64::from_be_bytes(a) }) as f32
            })
            .collect(),
    };
    Ok(NpyArray { data, shape })
}

/// The text of `'key': VALUE` in a Python dict literal, up to the next
/// top-level comma (a tuple's commas are inside its parentheses).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::npy_bytes;

    #[test]
    fn reads_what_fm_sample_writes() -> Result<()> {
        let values = [1.0f32, -2.5, 3.0, 0.25, 5.0, 6.0];
        let a = parse_npy(&npy_bytes(&values, 3, 2))?;
        assert_eq!(a.shape, vec![3, 2]);
        assert_eq!(a.data, values);
        Ok(())
    }

    #[test]
    fn reads_numpy_f8_and_higher_ranks() -> Result<()> {
        // np.save of np.arange(4, dtype=np.float64).reshape(1, 2, 2), format 1.0.
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2, 2), }";
        let mut header = dict.to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for v in [0.0f64, 1.0, 2.0, 3.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let a = parse_npy(&b)?;
        assert_eq!(a.shape, vec![1, 2, 2]);
        assert_eq!(a.data, vec![0.0, 1.0, 2.0, 3.0]);
        Ok(())
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let good = npy_bytes(&[1.0, 2.0], 1, 2);
        for n in 0..good.len() {
            assert!(parse_npy(&good[..n]).is_err(), "truncated to {n} bytes");
        }
        let mut ints = good.clone();
        if let Some(at) = ints.windows(3).position(|w| w == b"<f4") {
            ints[at + 1] = b'i';
        }
        let e = parse_npy(&ints).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("<i4"), "{e}");
        assert!(parse_npy(b"not an npy file at all").is_err());
    }
}
