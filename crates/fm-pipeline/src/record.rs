//! The run record stored in every checkpoint (`config.json` → `training`),
//! the same for every model family.
//!
//! It says how the checkpoint was trained — enough to continue the run
//! bit-identically ([`crate::Run::resume`]) and to read its samples back in the
//! data's units ([`crate::Trained`]). Keys a family does not use are absent, so
//! checkpoints written before a key existed still load.

use serde::{Deserialize, Serialize};

use fm_core::coupling::Coupling;
use fm_core::scheduler::SchedulerKind;
use fm_data::tokens::TokenGrid;
use fm_data::Standardizer;

/// How a checkpoint was trained: enough to reproduce the run and to read its samples back in data units.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The dataset, as given to `--data` (`moons`, `csv:PATH`, ...).
    pub data: String,
    /// CSV columns, if any.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Toy noise level, if set.
    pub noise: Option<f64>,
    /// Size of the fixed training set, or `None` for fresh points every step.
    pub n_train: Option<usize>,
    /// The probability path's scheduler (flow-matching families; absent for normalizing flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerKind>,
    /// Objective: `cfm`, `efm` or `likelihood`, or `forward-kl` for normalizing flows.
    pub objective: String,
    /// RK4 steps of the likelihood solve (objective `likelihood`).
    #[serde(default)]
    pub cnf_steps: Option<usize>,
    /// The torchcfm matcher (`icfm`, `otcfm`, `sbcfm`, `fm`, `si`), absent for plain CFM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<String>,
    /// The matcher's σ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<f64>,
    /// The matcher's minibatch coupling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupling: Option<Coupling>,
    /// The source distribution (`8gaussians`), absent for `N(0, I)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The flow-matching objective's options (flattened: absent keys are the defaults).
    #[serde(flatten)]
    pub options: ObjectiveRecord,
    /// Optimizer and its settings.
    pub optimizer: String,
    /// Learning rate.
    pub lr: f64,
    /// Decoupled weight decay (AdamW), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Batch size.
    pub batch_size: usize,
    /// Steps requested.
    pub steps: usize,
    /// Steps completed when this checkpoint was written.
    pub step: usize,
    /// The seed of every random draw.
    pub seed: u64,
    /// The preset used, if any.
    #[serde(default)]
    pub preset: Option<String>,
    /// Mean training loss over the last (up to) 500 steps.
    pub loss: Option<f64>,
    /// Standardization applied to the data before training (samples are mapped back through its inverse).
    pub transform: Option<Standardizer>,
    /// The full command line.
    pub command: Vec<String>,
    /// Linear learning-rate warm-up steps, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<usize>,
    /// Gradient-norm clipping, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Decay of the EMA of the weights, if kept (`model.safetensors` then holds the EMA weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Label dropout of class-conditional training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_dropout: Option<f64>,
    /// The weights the run started from (`--init`: a path or an `hf://` address), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Discrete models: the grid that made the data tokens (samples are its cell values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenGrid>,
    /// Discrete models of images: the shape of one image (a network on tokens may not know it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_shape: Option<crate::ImageShape>,
    /// Riemannian models: the manifold the data were embedded on (from their chart columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifold: Option<fm_core::manifold::ManifoldSpec>,
}

/// The options of the flow-matching objective in a [`RunRecord`]; every
/// key is absent for the default (velocity, uniform, CFM, no penalty), so plain
/// runs keep their historical `config.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ObjectiveRecord {
    /// What the network predicts (`noise` or `data`); absent for the velocity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parametrization: Option<String>,
    /// The loss weighting over t (`velocity`, `noise`, `data`, `v-prediction`); absent for uniform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighting: Option<String>,
    /// EFM's reference-set size M (objective `efm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efm_m: Option<usize>,
    /// Weight of the Jacobian penalty, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jacobian_reg: Option<f64>,
    /// Hutchinson probes per sample of the Jacobian penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jacobian_probes: Option<usize>,
}
