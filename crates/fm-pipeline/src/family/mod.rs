//! Model families: what differs between a velocity MLP, a U-Net and a
//! normalizing flow, behind one trait, so that the run, the loader and the
//! sampler are written once.
//!
//! A family supplies (as burn's `TrainStep` does for its `Learner`):
//! - its defaults and checks ([`Family::resolve`]), and the way back from a
//!   checkpoint's record to the configuration that made it ([`Family::config_of_record`]);
//! - the network for the data ([`Family::configure`]) and a [`Trainer`] whose
//!   [`Trainer::step`] is one optimisation step — the [`crate::Run`] owns the loop,
//!   the streams, the optimiser, checkpoints and resume;
//! - the trained model ([`Family::load`]): generation from source draws and,
//!   where it has one, the log-likelihood ([`TrainedModel`]).
//!
//! Adding a family is one network in fm-models (and its [`ModelConfig`]
//! variant) plus one file here implementing [`Family`], listed in [`FAMILIES`].

mod discrete;
mod discrete_unet;
mod flow;
mod mean_flow;
mod mean_flow_unet;
mod mlp;
mod riemannian;
mod unet;
mod velocity;

use std::collections::HashMap;
use std::fmt;

use candle::{Device, Tensor};
use candle_nn::VarMap;
use fm_core::divergence::Divergence;
use fm_core::{SeededRng, VelocityField};
use fm_models::training::TrainingOptimizer;
use fm_models::{ModelConfig, VelocityNet};
use serde_json::{Map, Value};

use crate::error::bail;
use crate::{Result, RunConfig, RunRecord, RunSettings, SolverChoice, TrainingData};

pub use unet::DEFAULT_LABEL_DROPOUT;

/// One kind of model: its settings, its training step, its checkpoints and its sampler.
pub trait Family: Sync + fmt::Debug {
    /// The canonical `--model` name (`mlp`, `unet`, `realnvp`, …).
    fn name(&self) -> &'static str;

    /// Whether `--model name` selects this family (case-insensitive, with aliases).
    fn accepts(&self, name: &str) -> bool;

    /// Whether checkpoints of `model` belong to this family.
    fn owns(&self, model: &ModelConfig) -> bool;

    /// A new run's settings from `config`: the family's defaults for what is
    /// unset; an error naming the flag for what does not apply.
    fn resolve(&'static self, config: &RunConfig) -> Result<RunSettings>;

    /// The configuration that reproduces the run of a checkpoint (`record`,
    /// `model`): [`Family::resolve`] of it gives the run's settings back.
    fn config_of_record(&self, record: &RunRecord, model: &ModelConfig) -> Result<RunConfig>;

    /// The settings of a resumed run: [`Family::resolve`] of
    /// [`Family::config_of_record`], with what a configuration cannot carry
    /// exactly taken from the record.
    fn resume(&'static self, record: &RunRecord, model: &ModelConfig) -> Result<RunSettings> {
        self.resolve(&self.config_of_record(record, model)?)
    }

    /// Readies the run's `data` before the network is configured (the
    /// discrete families make it tokens); nothing by default.
    fn prepare_data(&self, _settings: &RunSettings, _data: &mut TrainingData) -> Result<()> {
        Ok(())
    }

    /// The network of a new run on `data`.
    fn configure(&self, settings: &RunSettings, data: &TrainingData) -> Result<ModelConfig>;

    /// A freshly initialised network (from the seed's `init` stream) and its trainer.
    fn trainer(
        &self,
        model: &ModelConfig,
        settings: &RunSettings,
        data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>>;

    /// The trained model from a checkpoint's weights.
    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>>;

    /// Writes the family's part of the run record (objective, path, matcher, …).
    fn record(&self, settings: &RunSettings, record: &mut RunRecord);

    /// One line naming the network, e.g. `MLP 3-64-64-64-2 (8706 parameters)`.
    fn describe_model(&self, model: &ModelConfig) -> String;

    /// What the run minimises, e.g. `flow matching` or `maximum likelihood`.
    fn describe_objective(&self, settings: &RunSettings) -> String;

    /// The path of the run's log line (`, cond-ot path`), empty where there is none.
    fn describe_path(&self, _settings: &RunSettings) -> String {
        String::new()
    }

    /// Whether sampling solves an ODE (so that a solver applies and each sample costs many network passes).
    fn solves_ode(&self) -> bool {
        true
    }

    /// Whether the log-likelihood is exact and cheap (no ODE): reports after training include it.
    fn exact_likelihood(&self) -> bool {
        false
    }

    /// Whether the log-likelihood is a lower bound (the ELBO of discrete models), not an ODE's value.
    fn likelihood_bound(&self) -> bool {
        false
    }

    /// How outputs name sampling with `solver` (`midpoint-8`; MeanFlow: `meanflow-1 step`).
    fn sampler_label(&self, solver: &SolverChoice) -> String {
        solver.label.clone()
    }

    /// The steps a report samples with when none are asked for (`None`: the solver's default).
    fn default_sample_steps(&self) -> Option<usize> {
        None
    }

    /// What the training loss is, for reports (`loss`, `training NLL in model units`).
    fn loss_name(&self) -> &'static str {
        "loss"
    }
}

/// What one training step gets from the run.
pub struct StepContext<'a> {
    /// The run's data.
    pub data: &'a mut TrainingData,
    /// Batches are drawn from this stream.
    pub data_rng: &'a mut SeededRng,
    /// Times, source draws and probes are drawn from this stream.
    pub train_rng: &'a mut SeededRng,
    /// The optimiser (Adam with warm-up, clipping, EMA).
    pub opt: &'a mut TrainingOptimizer,
    /// The run's settings.
    pub settings: &'a RunSettings,
    /// Where the model lives.
    pub device: &'a Device,
}

/// A family's network during training.
pub trait Trainer {
    /// The network's variables (the run's optimiser and checkpoints use them).
    fn varmap(&self) -> &VarMap;

    /// One optimisation step; the batch loss.
    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<f64>;

    /// The family's own loop state (stream positions, a queued batch), saved
    /// beside the run's in the resume file.
    fn state(&self) -> Map<String, Value> {
        Map::new()
    }

    /// Restores [`Trainer::state`] after the run's streams have been restored.
    fn restore(&mut self, _state: &Map<String, Value>, _cx: &mut StepContext<'_>) -> Result<()> {
        Ok(())
    }
}

/// The first `rows` rows of every state of a solve's trajectory (all of them
/// when it has no more).
pub(crate) fn first_rows(trajectory: Vec<Tensor>, rows: usize) -> Result<Vec<Tensor>> {
    trajectory.into_iter().map(|x| if rows < x.dim(0)? { Ok(x.narrow(0, 0, rows)?) } else { Ok(x) }).collect()
}

/// The loss value, refused when not finite (before the optimiser touches the weights).
pub(crate) fn finite(loss: &Tensor) -> Result<f64> {
    let value = loss.to_dtype(candle::DType::F64)?.to_scalar::<f64>()?;
    if !value.is_finite() {
        bail!("the training loss became {value}; lower the learning rate");
    }
    Ok(value)
}

/// How to draw samples.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    /// Number of samples.
    pub n: usize,
    /// Seed of the source draws (stream `sample-noise`).
    pub seed: u64,
    /// The ODE solver (ignored by normalizing flows: one pass through the layers).
    pub solver: SolverChoice,
    /// Class of every sample (class-conditional models; `None`: classes in turn).
    pub class: Option<u32>,
    /// Classifier-free guidance weight `w` (0: the conditional model).
    pub cfg_scale: f64,
    /// Follow the closed-form velocity `û*` of the training set on `[0, τ]`, the model after.
    pub hybrid: Option<f64>,
    /// Samples per solve (`None`: the family's default).
    pub batch_size: Option<usize>,
    /// Keep the trajectory of the first this many samples.
    pub trajectory_rows: usize,
    /// Sample by an SDE or Langevin instead of the ODE `solver` (velocity
    /// families, Gaussian source; noise from the seed's `sample-diffusion` stream).
    pub stochastic: Option<crate::StochasticChoice>,
}

impl SampleRequest {
    /// `n` samples from `seed` with `solver`, nothing else.
    pub fn new(n: usize, seed: u64, solver: SolverChoice) -> Self {
        Self {
            n,
            seed,
            solver,
            class: None,
            cfg_scale: 0.0,
            hybrid: None,
            batch_size: None,
            trajectory_rows: 0,
            stochastic: None,
        }
    }
}

/// Samples in model units, the trajectory of the first rows, and the NFE.
pub struct Generated {
    /// `(n, d)` in model units.
    pub samples: Tensor,
    /// The kept rows at every grid time (or after every layer).
    pub trajectory: Vec<Tensor>,
    /// Function evaluations (0 for a normalizing flow).
    pub nfe: usize,
}

/// Log-densities in model units and the NFE.
pub struct ModelLikelihood {
    /// `log p(x)` per point.
    pub log_p: Vec<f64>,
    /// Function evaluations.
    pub nfe: usize,
}

/// A trained network as its family uses it.
pub trait TrainedModel {
    /// Values per sample.
    fn dim(&self) -> usize;

    /// Samples from the source draws `x0` `(n, d)` (model units); `progress`
    /// hears the number of samples finished after each batch.
    fn generate(
        &self,
        x0: &Tensor,
        request: &SampleRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Generated>;

    /// `log p` of `x` `(n, d)` (model units).
    fn log_likelihood(
        &self,
        x: &Tensor,
        solver: &SolverChoice,
        divergence: Divergence,
        rng: &mut SeededRng,
    ) -> Result<ModelLikelihood>;

    /// The model as a velocity field (velocity families), for analyses.
    fn velocity_field(&self) -> Option<&dyn VelocityField> {
        None
    }

    /// The raw network (velocity families), for parity checks.
    fn velocity_net(&self) -> Option<&VelocityNet> {
        None
    }

    /// The shape of one sample, for models of images.
    fn image_shape(&self) -> Option<crate::ImageShape> {
        None
    }

    /// Class labels the model knows (class-conditional models).
    fn num_classes(&self) -> Option<usize> {
        None
    }
}

/// Every family, in the order `--model` lists them.
pub static FAMILIES: &[&dyn Family] = &[
    &mlp::Mlp,
    &unet::UNet,
    &flow::Flow::Planar,
    &flow::Flow::RealNvp,
    &mean_flow::MeanFlow,
    &mean_flow_unet::MeanFlowUNet,
    &discrete::Discrete,
    &discrete_unet::DiscreteUNet,
    &riemannian::Riemannian,
];

/// The valid `--model` names.
pub fn names() -> String {
    FAMILIES.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

/// The family `--model name` selects (`None`: `mlp`).
pub fn named(name: Option<&str>) -> Result<&'static dyn Family> {
    let name = name.unwrap_or("mlp");
    match FAMILIES.iter().find(|f| f.accepts(name)) {
        Some(f) => Ok(*f),
        None => bail!("--model: unknown model `{}`; valid: {}", name.to_ascii_lowercase(), names()),
    }
}

/// The family of a checkpoint's model.
pub fn of(model: &ModelConfig) -> Result<&'static dyn Family> {
    match FAMILIES.iter().find(|f| f.owns(model)) {
        Some(f) => Ok(*f),
        None => bail!("no model family trains a {model:?}"),
    }
}
