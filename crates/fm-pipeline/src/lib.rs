//! The run and the sampling chain of `fm`, for every model family: what the
//! `fm` command does, as a library.
//!
//! - [`RunConfig`] → [`RunSettings`]: a run as asked for (the flags of `fm
//!   train`, or its TOML file) and with every value decided by the family's
//!   defaults and checks.
//! - [`Run`]: one training loop for every family — data and random streams,
//!   Adam with warm-up, clipping and an EMA, checkpoints every N steps written
//!   atomically, bit-identical resume, interruption, divergence stops; an
//!   [`Observer`] hears of progress (the library prints nothing).
//! - [`Trained`]: a checkpoint loaded "as trained" (parametrization, source,
//!   standardization, EMA weights) from a folder or `hf://`; one sampling
//!   entry point ([`Trained::sample`]: `n`, seed, solver or flow pass, class
//!   and guidance, hybrid τ, or a [`StochasticChoice`] (SDE, Langevin) →
//!   samples in data units with the NFE) and one
//!   likelihood entry point ([`Trained::log_likelihood`]).
//! - [`family`]: the [`family::Family`] trait — the model supplies its
//!   settings, its training step and its sampler; the velocity MLP, the U-Net
//!   and the normalizing flows (planar, RealNVP) implement it.
//!
//! Time convention: `t = 0` is noise, `t = 1` is data.
//!
//! ```
//! use candle::Device;
//! use fm_pipeline::{Run, RunConfig, RunSettings, SampleRequest, Silent, SolverChoice, Trained};
//!
//! # fn main() -> fm_pipeline::Result<()> {
//! let out = std::env::temp_dir().join(format!("fm-pipeline-doc-{}", std::process::id()));
//! let config = RunConfig { steps: Some(50), out: Some(out.clone()), ..Default::default() };
//! let mut run = Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?;
//! run.train(&mut Silent)?;
//! let model = Trained::load(&out, false, &Device::Cpu)?;
//! let samples = model.sample(&SampleRequest::new(100, 0, SolverChoice::parse_spec("euler:10")?))?;
//! assert_eq!((samples.values.len(), samples.nfe), (200, 10));
//! # std::fs::remove_dir_all(&out).ok();
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod config;
mod data;
mod error;
pub mod family;
pub mod location;
mod record;
mod run;
mod sample;
mod settings;
mod solver;
mod source;
mod stochastic;
mod trained;

pub use config::RunConfig;
pub use data::{to_data_units, ImageInfo, ImageShape, PairsSidecar, TrainingData};
pub use error::{Error, Result, ResultExt};
pub use family::{SampleRequest, DEFAULT_LABEL_DROPOUT};
pub use record::{ObjectiveRecord, RunRecord};
pub use run::{InitReport, Observer, Run, Silent, TrainSummary, LOSS_WINDOW};
pub use sample::{solve_hybrid, source_draws, Samples, Solved};
pub use settings::{
    check_resume_config, parametrization_of, parse_matcher, validate_numbers, DiscreteLoss, DiscreteSettings,
    FlowMatchingSettings, InitFrom, NetworkSettings, Objective, RunSettings, UNetSpec,
    DEFAULT_CHECKPOINT_EVERY,
};
pub use solver::SolverChoice;
pub use source::Source;
pub use stochastic::StochasticChoice;
pub use trained::{mean_stderr, LikelihoodRequest, Likelihoods, PairSink, Trained};
