//! The crate's error type.

/// What can go wrong when building or running a workload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),
    /// An fm-core computation failed.
    #[error(transparent)]
    Core(#[from] fm_core::Error),
    /// An fm-models operation failed.
    #[error(transparent)]
    Models(#[from] fm_models::Error),
    /// A run, a load or a sampler of the pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] fm_pipeline::Error),
    /// An ODE solve failed.
    #[error(transparent)]
    Solvers(#[from] fm_solvers::Error),
    /// The workload name is not known.
    #[error("unknown workload `{name}`; known: {known}")]
    UnknownWorkload {
        /// The name given.
        name: String,
        /// The valid names, comma-separated.
        known: String,
    },
    /// A malformed request (e.g. on `fm-bench serve`'s standard input).
    #[error("bad request: {0}")]
    Request(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
