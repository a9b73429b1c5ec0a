//! Loading numeric columns of a CSV file as a point cloud.
//!
//! The parser follows RFC 4180: fields are separated by commas, records by
//! `\n`, `\r\n` or `\r`; a field may be enclosed in double quotes, in which
//! case it may contain commas, line breaks and doubled quotes (`""` stands for
//! `"`). Leniencies: a UTF-8 byte-order mark is skipped, blank lines (anywhere,
//! including trailing ones) are ignored, whitespace before an opening quote is
//! dropped, rows may have more cells than the header, and numeric cells may be
//! surrounded by whitespace.

use std::fs;
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// A set of `n` points in `dim` dimensions read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct PointCloud {
    /// The coordinates, row-major: point `i` is `data[i*dim..(i+1)*dim]`.
    pub data: Vec<f64>,
    /// Number of points (rows).
    pub n: usize,
    /// Dimension of each point (number of selected columns).
    pub dim: usize,
    /// The names of the selected columns, in order.
    pub columns: Vec<String>,
    /// The file the points were read from.
    pub source: PathBuf,
}

impl PointCloud {
    /// The `i`-th point, or `None` if `i >= n`.
    pub fn row(&self, i: usize) -> Option<&[f64]> {
        if i >= self.n {
            return None;
        }
        self.data.get(i * self.dim..(i + 1) * self.dim)
    }

    /// The points as a `(n, dim)` tensor of the given dtype on `device`.
    pub fn to_tensor(&self, device: &Device, dtype: DType) -> Result<Tensor> {
        let t = Tensor::from_slice(&self.data, (self.n, self.dim), device)?;
        Ok(t.to_dtype(dtype)?)
    }

    /// The coordinates converted to `f32`, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
}

/// Reads `path` and extracts the named numeric `columns`
/// (see [`parse_csv_columns`] for the rules).
///
/// Errors name the file: a missing or unreadable file gives [`Error::Io`]
/// with the operating system's reason. Bytes that are not valid UTF-8 are
/// replaced (they can only matter in text columns, which are not loaded).
pub fn load_csv_columns(path: &Path, columns: &[String]) -> Result<PointCloud> {
    let bytes = fs::read(path).map_err(|io| Error::Io { path: path.to_path_buf(), io })?;
    let text = String::from_utf8_lossy(&bytes);
    parse_csv_columns(&text, path, columns)
}

/// Parses CSV `text` (whose first non-blank record is the header) and
/// extracts the named numeric `columns`; `source` is only used in error
/// messages and stored in the result.
///
/// Column names must match the header names exactly (after removing the
/// quotes). If `columns` is empty and the file has exactly two *numeric*
/// columns — columns with a non-empty header name (an unnamed column, such as
/// R's row-name column, is never picked) in which every data cell is a finite
/// number — those two are used; otherwise [`Error::ColumnsRequired`] asks for
/// an explicit choice.
///
/// This function never panics, whatever the input; every problem is reported
/// as an [`Error`] naming the file, and where relevant the line and column.
pub fn parse_csv_columns(text: &str, source: &Path, columns: &[String]) -> Result<PointCloud> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = parse_records(text, source)?.into_iter();
    let header = records.next().ok_or_else(|| Error::EmptyFile { path: source.to_path_buf() })?;
    let rows: Vec<Record> = records.collect();
    if rows.is_empty() {
        return Err(Error::NoDataRows { path: source.to_path_buf() });
    }
    let names = header.fields;

    let selected: Vec<(usize, String)> = if columns.is_empty() {
        let numeric: Vec<usize> = (0..names.len())
            .filter(|&j| !names[j].is_empty())
            .filter(|&j| {
                rows.iter().all(|r| {
                    r.fields
                        .get(j)
                        .and_then(|cell| cell.trim().parse::<f64>().ok())
                        .is_some_and(f64::is_finite)
                })
            })
            .collect();
        if numeric.len() != 2 {
            return Err(Error::ColumnsRequired {
                path: source.to_path_buf(),
                numeric: numeric.iter().map(|&j| names[j].clone()).collect(),
            });
        }
        numeric.iter().map(|&j| (j, names[j].clone())).collect()
    } else {
        columns
            .iter()
            .map(|want| {
                let mut hits = names.iter().enumerate().filter(|(_, n)| *n == want);
                match (hits.next(), hits.next()) {
                    (Some((j, _)), None) => Ok((j, want.clone())),
                    (Some(_), Some(_)) => {
                        Err(Error::AmbiguousColumn { path: source.to_path_buf(), column: want.clone() })
                    }
                    (None, _) => Err(Error::UnknownColumn {
                        path: source.to_path_buf(),
                        column: want.clone(),
                        available: names.clone(),
                    }),
                }
            })
            .collect::<Result<_>>()?
    };

    let dim = selected.len();
    let mut data = Vec::with_capacity(rows.len() * dim);
    for row in &rows {
        for (j, name) in &selected {
            let cell = row.fields.get(*j).ok_or_else(|| Error::ShortRow {
                path: source.to_path_buf(),
                line: row.line,
                found: row.fields.len(),
                column: name.clone(),
                needed: j + 1,
            })?;
            let value: f64 = cell.trim().parse().map_err(|_| Error::NonNumeric {
                path: source.to_path_buf(),
                line: row.line,
                column: name.clone(),
                text: cell.clone(),
            })?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    path: source.to_path_buf(),
                    line: row.line,
                    column: name.clone(),
                    text: cell.clone(),
                });
            }
            data.push(value);
        }
    }
    Ok(PointCloud {
        data,
        n: rows.len(),
        dim,
        columns: selected.into_iter().map(|(_, name)| name).collect(),
        source: source.to_path_buf(),
    })
}

/// One CSV record and the (1-based) line on which it starts.
struct Record {
    line: usize,
    fields: Vec<String>,
}

/// Splits `text` into records, skipping blank lines.
fn parse_records(text: &str, source: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false; // the current field started with a quote
    let mut in_quotes = false; // inside the quoted part of the field
    let mut line = 1usize;
    let mut record_line = 1usize;
    let mut quote_line = 1usize;
    let mut chars = text.chars().peekable();

    // Ends the current record (if it is not blank) and starts a new one.
    fn end_record(
        records: &mut Vec<Record>,
        fields: &mut Vec<String>,
        field: &mut String,
        quoted: &mut bool,
        record_line: usize,
    ) {
        let blank = fields.is_empty() && field.trim().is_empty() && !*quoted;
        fields.push(std::mem::take(field));
        if blank {
            fields.clear();
        } else {
            records.push(Record { line: record_line, fields: std::mem::take(fields) });
        }
        *quoted = false;
    }

    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                '\r' => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                        field.push('\r');
                        field.push('\n');
                    } else {
                        field.push(c);
                    }
                    line += 1;
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\n' | '\r' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                end_record(&mut records, &mut fields, &mut field, &mut quoted, record_line);
                line += 1;
                record_line = line;
            }
            '"' if !quoted && field.trim().is_empty() => {
                field.clear();
                quoted = true;
                in_quotes = true;
                quote_line = line;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(Error::UnterminatedQuote { path: source.to_path_buf(), line: quote_line });
    }
    if !fields.is_empty() || !field.is_empty() || quoted {
        end_record(&mut records, &mut fields, &mut field, &mut quoted, record_line);
    }
    Ok(records)
}
