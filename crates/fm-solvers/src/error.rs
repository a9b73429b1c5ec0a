//! The crate's error type.

/// Errors raised while integrating an ODE.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),

    /// The vector field itself failed (errors of the caller's field, boxed).
    #[error("the vector field failed: {0}")]
    Field(Box<dyn std::error::Error + Send + Sync>),

    /// The time grid is unusable (fewer than two points, not strictly monotone, not finite).
    #[error("invalid time grid: {0}")]
    InvalidGrid(String),

    /// A solver option is out of range (e.g. `rtol <= 0`).
    #[error("invalid solver option `{name}`: {reason}")]
    InvalidOption {
        /// The option's name, as the user spells it (`rtol`, `atol`, `max_steps`, ...).
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// An adaptive solver needed more steps than allowed.
    #[error("the adaptive solver exceeded max_steps = {max_steps} before reaching t = {t_end} (stopped at t = {t_reached}); raise max_steps or loosen rtol/atol")]
    MaxStepsExceeded {
        /// The step budget.
        max_steps: usize,
        /// Where the solve stopped.
        t_reached: f64,
        /// Where it was meant to go.
        t_end: f64,
    },

    /// The adaptive step size shrank below what floating point can resolve.
    #[error(
        "the adaptive step size underflowed at t = {t} (h = {h:e}); the field may be stiff or singular there"
    )]
    StepSizeUnderflow {
        /// Time at which the step collapsed.
        t: f64,
        /// The last attempted step.
        h: f64,
    },

    /// The state or the error estimate became NaN or infinite.
    #[error("the solution became non-finite (NaN or Inf) near t = {t}")]
    NonFinite {
        /// Time at which it was detected.
        t: f64,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
