//! Discrete normalizing flows (planar, RealNVP) in the CLI: training by maximum
//! likelihood, sampling, exact likelihoods and densities (no ODE), and the
//! reverse-KL fits to the test energies U1–U4.
//!
//! Flow checkpoints are ordinary fm checkpoints (`model.safetensors` +
//! `config.json`) whose model is [`ModelConfig::Planar`] or
//! [`ModelConfig::RealNvp`]; their training record is a [`FlowRecord`].
//! `fm sample`, `fm likelihood` and `fm plot density` detect them with
//! [`is_flow_checkpoint`] and call the functions of [`eval`].

pub mod energies;
pub mod eval;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_data::Standardizer;
use fm_models::checkpoint::{self, CheckpointConfig, CONFIG_FILE};
use fm_models::flows::NormalizingFlow;
use fm_models::ModelConfig;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::data::{self, TrainingData};
use crate::record::TrainingRecord;

/// The models `fm train --model` accepts.
pub const MODEL_NAMES: &str = "mlp, unet, planar, realnvp";

/// Which network `fm train` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// The velocity MLP, by flow matching (or CNF likelihood).
    Mlp,
    /// A planar flow (Rezende & Mohamed 2015).
    Planar,
    /// A RealNVP flow of affine couplings (Dinh et al. 2016).
    RealNvp,
}

impl ModelKind {
    /// Parses `--model` (`None`: mlp).
    pub fn parse(name: Option<&str>) -> Result<Self> {
        Ok(match name.unwrap_or("mlp").to_ascii_lowercase().as_str() {
            "mlp" => ModelKind::Mlp,
            "planar" => ModelKind::Planar,
            "realnvp" | "real-nvp" | "real_nvp" => ModelKind::RealNvp,
            other => bail!("--model: unknown model `{other}`; valid: {MODEL_NAMES}"),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Planar => "planar",
            ModelKind::RealNvp => "realnvp",
        }
    }
}

/// The training record of a flow checkpoint (`config.json` → `training`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// The dataset, as given to `--data`.
    pub data: String,
    #[serde(default)]
    pub columns: Vec<String>,
    pub noise: Option<f64>,
    pub n_train: Option<usize>,
    /// Always `forward-kl` (maximum likelihood) for `fm train`.
    pub objective: String,
    pub optimizer: String,
    pub lr: f64,
    pub batch_size: usize,
    /// Steps requested.
    pub steps: usize,
    /// Steps completed when this checkpoint was written.
    pub step: usize,
    pub seed: u64,
    /// Mean training loss (NLL in model units) over the last (up to) 500 steps.
    pub loss: Option<f64>,
    /// Standardization applied to the data before training.
    pub transform: Option<Standardizer>,
    pub command: Vec<String>,
}

impl FlowRecord {
    /// The data settings in the MLP record's form, to rebuild the data with [`TrainingData::from_record`].
    fn as_training_record(&self) -> TrainingRecord {
        TrainingRecord {
            data: self.data.clone(),
            columns: self.columns.clone(),
            noise: self.noise,
            n_train: self.n_train,
            scheduler: SchedulerKind::CondOt,
            objective: self.objective.clone(),
            cnf_steps: None,
            options: Default::default(),
            matcher: None,
            sigma: None,
            coupling: None,
            source: None,
            optimizer: self.optimizer.clone(),
            lr: self.lr,
            batch_size: self.batch_size,
            steps: self.steps,
            step: self.step,
            seed: self.seed,
            preset: None,
            loss: self.loss,
            transform: self.transform.clone(),
            command: self.command.clone(),
            ..TrainingRecord::default()
        }
    }

    /// The checkpoint's data (fresh test points for toys, the file for CSV), in its units.
    pub fn training_data(&self) -> Result<TrainingData> {
        TrainingData::from_record(&self.as_training_record())
    }
}

/// Whether `dir` holds a planar or RealNVP checkpoint (reads only `config.json`;
/// `false` when it cannot be read, so the MLP path reports the problem).
pub fn is_flow_checkpoint(dir: &Path) -> bool {
    let dir = if dir.is_file() { dir.parent().unwrap_or(Path::new(".")) } else { dir };
    let Ok(text) = std::fs::read_to_string(dir.join(CONFIG_FILE)) else { return false };
    let Ok(config) = serde_json::from_str::<CheckpointConfig>(&text) else { return false };
    matches!(config.model, ModelConfig::Planar(_) | ModelConfig::RealNvp(_))
}

/// A trained flow with its configuration and training record.
pub struct LoadedFlow {
    pub flow: NormalizingFlow,
    pub config: CheckpointConfig,
    pub record: FlowRecord,
    pub dir: PathBuf,
}

impl LoadedFlow {
    pub fn dim(&self) -> usize {
        self.flow.dim()
    }

    /// `planar K=16` / `realnvp K=8 (64-64)`.
    pub fn describe(&self) -> String {
        describe_model(&self.config.model)
    }
}

/// A short description of a flow configuration.
pub fn describe_model(m: &ModelConfig) -> String {
    match m {
        ModelConfig::Planar(c) => format!("planar flow, K = {}", c.layers),
        ModelConfig::RealNvp(c) => format!(
            "RealNVP flow, K = {} {}couplings with {} conditioners{}",
            c.layers,
            if matches!(c.mask, fm_models::flows::CouplingMask::Checkerboard { .. }) {
                "checkerboard "
            } else {
                ""
            },
            c.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("-"),
            c.logit.map_or(String::new(), |g| format!(", logit pre-processing (γ = {g})"))
        ),
        other => format!("{other:?}"),
    }
}

/// Loads the flow checkpoint in `dir`.
pub fn load_flow(dir: &Path, device: &Device) -> Result<LoadedFlow> {
    let ckpt = checkpoint::load(dir, device).with_context(|| "--checkpoint")?;
    if !matches!(ckpt.config.model, ModelConfig::Planar(_) | ModelConfig::RealNvp(_)) {
        bail!("checkpoint {}: not a planar or RealNVP flow", dir.display());
    }
    let record: FlowRecord = serde_json::from_value(ckpt.config.training.clone()).with_context(|| {
        format!("checkpoint {}: the flow's training record in config.json is invalid", dir.display())
    })?;
    let vb = candle_nn::VarBuilder::from_tensors(ckpt.tensors.clone(), DType::F32, device);
    let flow = NormalizingFlow::new(&ckpt.config.model, vb)
        .with_context(|| format!("checkpoint {}: cannot build the flow", dir.display()))?;
    Ok(LoadedFlow { flow, config: ckpt.config, record, dir: ckpt.dir })
}

/// Samples in data units and, if asked, the state after every layer (the
/// flow's "trajectory" from the base noise, layer 0, to the sample, layer K).
pub struct FlowSamples {
    pub samples: Vec<f32>,
    pub trajectory: Vec<Vec<f32>>,
}

/// `n` samples of the flow from seeded base noise (stream `sample-noise`, as `fm sample`).
pub fn generate_flow(
    flow: &NormalizingFlow,
    transform: Option<&Standardizer>,
    n: usize,
    seed: u64,
    keep_trajectory: bool,
    device: &Device,
) -> Result<FlowSamples> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let mut rng = SeededRng::for_stream(seed, "sample-noise");
    let mut z = rng.normal((n, flow.dim()), DType::F32, device)?;
    let mut trajectory = Vec::new();
    if keep_trajectory {
        trajectory.push(data::to_data_units(&z, transform)?);
    }
    for layer in flow.layers() {
        z = layer.forward(&z)?.0;
        if keep_trajectory {
            trajectory.push(data::to_data_units(&z, transform)?);
        }
    }
    let samples = data::to_data_units(&z, transform)?;
    if samples.iter().any(|v| !v.is_finite()) {
        bail!("the flow produced non-finite samples");
    }
    Ok(FlowSamples { samples, trajectory })
}

/// Exact log-densities (data units) of `points` (row-major, data units): the
/// flow's `log q` in model units plus the standardization's log-Jacobian.
/// Returns the values and the log-Jacobian added.
pub fn flow_log_likelihoods(
    flow: &NormalizingFlow,
    data: &TrainingData,
    points: &[f32],
    batch_size: usize,
    device: &Device,
) -> Result<(Vec<f64>, f64)> {
    let dim = flow.dim();
    if batch_size == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    let model_units = data.to_model_units(points)?;
    let mut log_p = Vec::with_capacity(points.len() / dim);
    for chunk in model_units.chunks(batch_size * dim) {
        let x = Tensor::from_vec(chunk.to_vec(), (chunk.len() / dim, dim), device)?;
        let lp = flow.log_prob(&x)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        log_p.extend(lp);
    }
    let log_det_jacobian = data.transform().map_or(0.0, |t| t.log_abs_det_jacobian());
    for v in &mut log_p {
        *v += log_det_jacobian;
    }
    Ok((log_p, log_det_jacobian))
}

/// A progress bar on stderr (hidden with `quiet` or when stderr is not a terminal).
pub fn progress_bar(len: usize, done: usize, quiet: bool, template: &str) -> ProgressBar {
    let pb = crate::progress::bar(len, quiet, template);
    pb.set_position(done as u64);
    pb.reset_eta();
    pb
}
