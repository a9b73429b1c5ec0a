//! The crate's error type.

/// Errors raised by fm-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),

    /// The ODE solver failed.
    #[error(transparent)]
    Solver(#[from] fm_solvers::Error),

    /// An argument is out of its valid range; the message names it.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// Tensor or point-set shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// A matrix that must be symmetric positive definite is not.
    #[error("matrix is not symmetric positive definite: {0}")]
    NotPositiveDefinite(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name, reason: reason.into() }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
