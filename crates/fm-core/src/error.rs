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

    /// An iterative computation stopped before it converged: the result it
    /// had would be inaccurate, so none is returned.
    #[error(
        "{what} did not converge in {iterations} sweeps: off-diagonal norm {off_diagonal:e}, \
         tolerance {tolerance:e}"
    )]
    NotConverged {
        /// What did not converge (e.g. "Jacobi eigendecomposition of a 3×3 symmetric matrix").
        what: String,
        /// The sweeps (iterations) taken.
        iterations: usize,
        /// The Frobenius norm of the off-diagonal part reached (NaN or infinite
        /// when the iteration overflowed).
        off_diagonal: f64,
        /// The norm it had to fall to.
        tolerance: f64,
    },

    /// A computation failed; `context` says which one (e.g. "backward
    /// likelihood solve") and `source` is the underlying error.
    #[error("{context}: {source}")]
    Context {
        /// What was being computed.
        context: String,
        /// The underlying error.
        source: Box<Error>,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name, reason: reason.into() }
    }

    /// Wraps `self` in [`Error::Context`].
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context { context: context.into(), source: Box::new(self) }
    }

    /// The innermost error under any [`Error::Context`] layers.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
