//! The crate's error type.
//!
//! Settings are named as a front end names them (`--steps`, which is also the
//! key of a config file), so a message can be shown to a person as it is.
//! [`Error::Context`] keeps the cause as its [`std::error::Error::source`]:
//! `{:#}` of an `anyhow` error, or walking the sources, prints the whole chain.

use std::path::PathBuf;

/// Errors of a run, of loading and of sampling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid or does not apply; the message names it.
    #[error("{0}")]
    Setting(String),

    /// What was being done when `source` failed.
    #[error("{context}")]
    Context {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },

    /// The run stopped on request ([`crate::Observer::interrupted`]) after saving.
    #[error("interrupted at step {step} of {steps}; the run is saved in {}", dir.display())]
    Interrupted {
        /// Steps done.
        step: usize,
        /// Steps planned.
        steps: usize,
        /// Where it was saved.
        dir: PathBuf,
    },

    /// A training step failed (usually a non-finite loss); the last checkpoint is intact.
    #[error("training diverged at step {step}; {}", match kept {
        Some(k) => format!("the checkpoint of step {k} in {} is intact", out.display()),
        None => format!("no checkpoint was written to {}", out.display()),
    })]
    Diverged {
        /// The step that failed (1-based).
        step: usize,
        /// The step of the checkpoint left on disk, if any.
        kept: Option<usize>,
        /// The run's folder.
        out: PathBuf,
        /// Why the step failed.
        #[source]
        source: Box<Error>,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle::Error),

    /// An fm-core computation failed.
    #[error(transparent)]
    Core(#[from] fm_core::Error),

    /// An fm-models operation failed (networks, checkpoints, optimiser).
    #[error(transparent)]
    Models(#[from] fm_models::Error),

    /// Loading data failed.
    #[error(transparent)]
    Data(#[from] fm_data::Error),

    /// An ODE solve failed.
    #[error(transparent)]
    Solvers(#[from] fm_solvers::Error),

    /// A record or state could not be (de)serialized.
    #[error(transparent)]
    Json(#[from] serde_json::Error),

    /// Reading or writing a file failed.
    #[error("{}: {io}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        io: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to an error, as `anyhow::Context` does.
pub trait ResultExt<T> {
    /// Wraps the error in [`Error::Context`] with `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// As [`ResultExt::context`], built only on failure.
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context { context: context.into(), source: Box::new(e.into()) })
    }

    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Context { context: context().into(), source: Box::new(e.into()) })
    }
}

impl<T> ResultExt<T> for Option<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| Error::Setting(context.into()))
    }

    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| Error::Setting(context().into()))
    }
}

/// Returns early with [`Error::Setting`] and a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Setting(format!($($arg)*)))
    };
}
pub(crate) use bail;
