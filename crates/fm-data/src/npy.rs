//! NumPy `.npy` arrays of floats: the format `fm sample` writes its samples in
//! and `fm frechet` reads (as NumPy's `np.save` writes C-ordered arrays).
//!
//! ```
//! use fm_data::npy::{encode_f32, parse};
//! # fn main() -> fm_data::Result<()> {
//! let bytes = encode_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
//! let a = parse(&bytes, std::path::Path::new("samples.npy"))?;
//! assert_eq!(a.shape, vec![3, 2]);
//! assert_eq!(a.data[5], 6.0);
//! # Ok(())
//! # }
//! ```

use std::path::Path;

use crate::{Error, Result};

/// A float array read from a `.npy` file, as `f32`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
    /// The shape.
    pub shape: Vec<usize>,
}

/// Encodes a row-major `f32` array of `shape` as `.npy` bytes (format 1.0,
/// little endian, header padded to a multiple of 64 bytes as NumPy does).
///
/// `data.len()` should equal the product of `shape`; the encoder writes what it is given.
pub fn encode_f32(data: &[f32], shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
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

/// Reads the `.npy` file at `path` (`<f4`, `<f8`, `>f4` or `>f8`, C order,
/// format 1.0–3.0); errors name the file.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|io| Error::Io { path: path.to_path_buf(), io })?;
    parse(&bytes, path)
}

/// Parses the bytes of a `.npy` file (`path` names it in errors); never
/// panics on malformed input.
pub fn parse(bytes: &[u8], path: &Path) -> Result<NpyArray> {
    parse_inner(bytes).map_err(|reason| Error::Format {
        path: path.to_path_buf(),
        reason: format!("not a readable .npy array: {reason}"),
    })
}

fn parse_inner(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("missing the \\x93NUMPY magic bytes".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported format version {v}")),
    };
    let end = start.checked_add(header_len).ok_or("the header length overflows")?;
    let header = bytes.get(start..end).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let descr = dict_value(header, "descr").ok_or("no 'descr' in the header")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let (width, little) = match descr {
        "<f4" | "|f4" => (4, true),
        ">f4" => (4, false),
        "<f8" => (8, true),
        ">f8" => (8, false),
        other => return Err(format!("dtype {other} is not supported; save the array as float32 or float64")),
    };
    let fortran = dict_value(header, "fortran_order").ok_or("no 'fortran_order' in the header")?;
    if fortran.trim() != "False" {
        return Err("Fortran-ordered arrays are not supported; save a C-ordered array".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("no 'shape' in the header")?;
    let shape: Vec<usize> = shape_text
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape entry `{s}`")))
        .collect::<std::result::Result<_, _>>()?;
    let count = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).ok_or("the shape overflows")?;
    let body = &bytes[end..];
    let need = count.checked_mul(width).ok_or("the shape overflows")?;
    if body.len() != need {
        return Err(format!("shape {shape:?} needs {need} bytes of data, the file has {}", body.len()));
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

    fn p() -> &'static Path {
        Path::new("t.npy")
    }

    #[test]
    fn round_trips_and_aligns_the_header() -> Result<()> {
        let values = [1.0f32, -2.5, 3.0, 0.25, 5.0, 6.0];
        let b = encode_f32(&values, &[3, 2]);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        assert_eq!(b.len(), 10 + hl + 24);
        let a = parse(&b, p())?;
        assert_eq!(a.shape, vec![3, 2]);
        assert_eq!(a.data, values);
        let one = parse(&encode_f32(&[7.0], &[1]), p())?;
        assert_eq!(one.shape, vec![1]);
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
        let a = parse(&b, p())?;
        assert_eq!(a.shape, vec![1, 2, 2]);
        assert_eq!(a.data, vec![0.0, 1.0, 2.0, 3.0]);
        Ok(())
    }

    #[test]
    fn malformed_files_are_errors_naming_the_file() {
        let good = encode_f32(&[1.0, 2.0], &[1, 2]);
        for n in 0..good.len() {
            assert!(parse(&good[..n], p()).is_err(), "truncated to {n} bytes");
        }
        let mut ints = good.clone();
        if let Some(at) = ints.windows(3).position(|w| w == b"<f4") {
            ints[at + 1] = b'i';
        }
        let e = parse(&ints, p()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("<i4") && e.contains("t.npy"), "{e}");
        assert!(parse(b"not an npy file at all", p()).is_err());
    }
}
