//! The crate's error type.

use std::path::PathBuf;

/// Errors raised by fm-models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),

    /// An fm-core computation failed.
    #[error(transparent)]
    Core(#[from] fm_core::Error),

    /// Reading or writing a file failed.
    #[error("{}: {io}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        io: std::io::Error,
    },

    /// A checkpoint is missing, corrupt or does not fit the model.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A model configuration is invalid; the message names the field.
    #[error("invalid model configuration `{field}`: {reason}")]
    Config {
        /// The configuration field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// Optimiser settings or saved optimiser state are invalid.
    #[error("optimizer: {0}")]
    Optimizer(String),

    /// Tensor shapes do not fit the model.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// A layer cannot be inverted (no analytic inverse, or a numerical one failed).
    #[error("not invertible: {0}")]
    NotInvertible(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
