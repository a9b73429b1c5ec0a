//! Command-line dataset specifications (`moons`, `csv:PATH`, …).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::toy::Toy2d;

/// Which dataset to train or evaluate on.
///
/// Parsed from a string: a toy name (see [`Toy2d::NAMES`] and its aliases) or
/// `csv:PATH`, or an image dataset (`mnist:DIR`, `digits:FILE`, …). CSV columns are chosen separately with
/// [`DataSpec::with_columns`]. New kinds of datasets may be added later,
/// hence `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DataSpec {
    /// A 2D toy distribution (infinite data).
    Toy(Toy2d),
    /// An image dataset: `mnist:DIR`, `fashion-mnist:DIR`, `cifar10:DIR`,
    /// `digits:FILE` (scikit-learn's 8 × 8 digits) or `png:DIR`.
    Images {
        /// The file format.
        format: crate::images::ImageFormat,
        /// The directory or file.
        path: PathBuf,
    },
    /// Coupled pairs `(x₀, x₁)` for reflow: `pairs:FILE.npy`, an `(n, 2d)`
    /// array whose rows are `x₀` then `x₁` (as `fm reflow` writes them).
    Pairs {
        /// The `.npy` file.
        path: PathBuf,
    },
    /// A synthetic dataset on a manifold, in chart coordinates (degrees):
    /// `sphere-mixture`, `torus-mixture`, `sphere-clock`.
    Manifold(crate::manifold_toy::ManifoldToy),
    /// Numeric columns of a CSV file (see [`crate::csv::load_csv_columns`]).
    Csv {
        /// The file.
        path: PathBuf,
        /// The columns to load; empty means "the two numeric columns".
        columns: Vec<String>,
    },
}

impl DataSpec {
    /// The prefix of the CSV form, `csv:`.
    pub const CSV_PREFIX: &'static str = "csv:";
    /// The prefix of the coupled-pairs form, `pairs:`.
    pub const PAIRS_PREFIX: &'static str = "pairs:";

    /// Sets the CSV columns. Toy specifications have no columns and are
    /// returned unchanged (check [`DataSpec::is_csv`] to reject the option).
    pub fn with_columns(self, columns: Vec<String>) -> Self {
        match self {
            DataSpec::Csv { path, .. } => DataSpec::Csv { path, columns },
            other => other,
        }
    }

    /// Whether this is a CSV specification.
    pub fn is_csv(&self) -> bool {
        matches!(self, DataSpec::Csv { .. })
    }

    /// The toy, if this is a toy specification.
    pub fn toy(&self) -> Option<Toy2d> {
        match self {
            DataSpec::Toy(toy) => Some(*toy),
            _ => None,
        }
    }

    /// The data dimension when known without reading any file: 2 for toys,
    /// the number of columns for CSV with explicit columns, 2 for CSV with
    /// default columns.
    pub fn dim(&self) -> usize {
        match self {
            DataSpec::Toy(_) => Toy2d::DIM,
            DataSpec::Csv { columns, .. } if columns.is_empty() => 2,
            DataSpec::Csv { columns, .. } => columns.len(),
            DataSpec::Manifold(toy) => toy.columns().len(),
            // Known once the images (or pairs) are loaded.
            DataSpec::Images { .. } | DataSpec::Pairs { .. } => 0,
        }
    }
}

impl From<Toy2d> for DataSpec {
    fn from(toy: Toy2d) -> Self {
        DataSpec::Toy(toy)
    }
}

impl FromStr for DataSpec {
    type Err = Error;

    /// Parses `NAME` (a toy) or `csv:PATH` (no columns selected yet).
    fn from_str(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        if let Some(path) = trimmed.strip_prefix(Self::CSV_PREFIX) {
            if path.is_empty() {
                return Err(Error::UnknownDataSpec { spec: s.to_string() });
            }
            return Ok(DataSpec::Csv { path: PathBuf::from(path), columns: Vec::new() });
        }
        if let Some(path) = trimmed.strip_prefix(Self::PAIRS_PREFIX) {
            if path.is_empty() {
                return Err(Error::UnknownDataSpec { spec: s.to_string() });
            }
            return Ok(DataSpec::Pairs { path: PathBuf::from(path) });
        }
        if let Some((prefix, path)) = trimmed.split_once(':') {
            if let Ok(format) = prefix.parse::<crate::images::ImageFormat>() {
                if path.is_empty() {
                    return Err(Error::UnknownDataSpec { spec: s.to_string() });
                }
                return Ok(DataSpec::Images { format, path: PathBuf::from(path) });
            }
        }
        if let Ok(toy) = trimmed.parse::<crate::manifold_toy::ManifoldToy>() {
            return Ok(DataSpec::Manifold(toy));
        }
        trimmed
            .parse::<Toy2d>()
            .map(DataSpec::Toy)
            .map_err(|_| Error::UnknownDataSpec { spec: s.to_string() })
    }
}

impl fmt::Display for DataSpec {
    /// The toy's canonical name, or `csv:PATH` (columns are not shown), so
    /// that the output parses back with [`FromStr`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Toy(toy) => write!(f, "{toy}"),
            DataSpec::Manifold(toy) => write!(f, "{toy}"),
            DataSpec::Csv { path, .. } => write!(f, "{}{}", Self::CSV_PREFIX, path.display()),
            DataSpec::Images { format, path } => write!(f, "{format}:{}", path.display()),
            DataSpec::Pairs { path } => write!(f, "{}{}", Self::PAIRS_PREFIX, path.display()),
        }
    }
}
