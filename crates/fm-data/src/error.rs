//! The crate's error type.

use std::path::PathBuf;

/// Errors produced by `fm-data`.
///
/// Every variant that concerns a file names the file; CSV errors also name
/// the line (1-based, as an editor shows it) and, where relevant, the column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {}: {io}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        io: std::io::Error,
    },

    /// A file contains no header line (it is empty or only blank lines).
    #[error("{}: the file is empty (expected a header line)", .path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },

    /// A quoted CSV field was never closed.
    #[error("{}: line {line}: quoted field is never closed", .path.display())]
    UnterminatedQuote {
        /// The file.
        path: PathBuf,
        /// The line on which the quoted field starts.
        line: usize,
    },

    /// A requested column is not in the header.
    #[error(
        "{}: no column named {column:?}; available columns: {}",
        .path.display(),
        quoted_list(.available)
    )]
    UnknownColumn {
        /// The file.
        path: PathBuf,
        /// The requested column name.
        column: String,
        /// The column names found in the header.
        available: Vec<String>,
    },

    /// A requested column name occurs more than once in the header.
    #[error("{}: column name {column:?} occurs more than once in the header", .path.display())]
    AmbiguousColumn {
        /// The file.
        path: PathBuf,
        /// The ambiguous column name.
        column: String,
    },

    /// No columns were requested and the file does not have exactly two
    /// numeric columns to default to.
    #[error(
        "{}: found {} numeric column(s) ({}); choose the columns to use with --columns",
        .path.display(),
        .numeric.len(),
        quoted_list(.numeric)
    )]
    ColumnsRequired {
        /// The file.
        path: PathBuf,
        /// The (named) columns in which every cell is a finite number.
        numeric: Vec<String>,
    },

    /// A data row has fewer cells than needed to reach a requested column.
    #[error(
        "{}: line {line}: row has {found} cell(s) but column {column:?} is cell {}",
        .path.display(),
        .needed
    )]
    ShortRow {
        /// The file.
        path: PathBuf,
        /// The line on which the row starts.
        line: usize,
        /// Number of cells in the row.
        found: usize,
        /// The first requested column that is missing.
        column: String,
        /// The 1-based position of that column in the header.
        needed: usize,
    },

    /// A cell is not a number.
    #[error(
        "{}: line {line}: column {column:?}: {text:?} is not a number",
        .path.display()
    )]
    NonNumeric {
        /// The file.
        path: PathBuf,
        /// The line on which the row starts.
        line: usize,
        /// The column name.
        column: String,
        /// The cell's text.
        text: String,
    },

    /// A cell is NaN or infinite.
    #[error(
        "{}: line {line}: column {column:?}: {text:?} is not finite (NaN/Inf are not allowed)",
        .path.display()
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The line on which the row starts.
        line: usize,
        /// The column name.
        column: String,
        /// The cell's text.
        text: String,
    },

    /// The file has a header but no data rows.
    #[error("{}: no data rows after the header", .path.display())]
    NoDataRows {
        /// The file.
        path: PathBuf,
    },

    /// An unknown toy dataset name.
    #[error("unknown toy dataset {name:?}; valid names: {}", crate::toy::Toy2d::NAMES.join(", "))]
    UnknownToy {
        /// The name that was given.
        name: String,
    },

    /// An unparsable dataset specification.
    #[error(
        "unknown dataset {spec:?}; expected one of the toys ({}), csv:PATH, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, digits:FILE, png:DIR or pairs:FILE.npy",
        crate::toy::Toy2d::NAMES.join(", ")
    )]
    UnknownDataSpec {
        /// The specification that was given.
        spec: String,
    },

    /// A column of the data has zero (or non-finite) variance, so it cannot
    /// be standardized.
    #[error("cannot standardize: column {column} has standard deviation {std} (must be finite and > 0)")]
    ZeroVariance {
        /// The column name, or its 0-based index when there are no names.
        column: String,
        /// The standard deviation found.
        std: f64,
    },

    /// Not enough rows to estimate a statistic.
    #[error("need at least {needed} rows, got {got}")]
    TooFewRows {
        /// Rows required.
        needed: usize,
        /// Rows given.
        got: usize,
    },

    /// A binary or image file is truncated, corrupt or not in the expected format.
    #[error("{}: {reason}", .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what was expected.
        reason: String,
    },

    /// Data, shapes or dimensions do not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// An invalid parameter (e.g. a negative or non-finite noise level).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle::Error),

    /// An `hf://` address is malformed.
    #[error("invalid Hub address {address:?}: {reason}")]
    HubAddress {
        /// The address as given.
        address: String,
        /// What is wrong, and the expected form.
        reason: String,
    },

    /// Fetching a file from the Hugging Face Hub (or its cache) failed.
    #[error("hf://{repo}@{revision}/{file}: {reason}")]
    Hub {
        /// The repository, `OWNER/NAME`.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The file inside the repository.
        file: String,
        /// What went wrong.
        reason: String,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn quoted_list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}
