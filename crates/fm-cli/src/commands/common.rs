//! Pieces shared by the subcommands: loading a checkpoint, generating samples.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use fm_core::{AsOde, SeededRng};
use fm_models::checkpoint::{self, CheckpointConfig};
use fm_models::{ModelConfig, VelocityMlp};
use fm_solvers::OdeSolver;

use crate::data;
use crate::record::TrainingRecord;
use crate::solver::SolverChoice;

/// A trained model with its configuration and training record.
pub struct LoadedModel {
    pub model: VelocityMlp,
    pub config: CheckpointConfig,
    pub record: TrainingRecord,
    pub dir: PathBuf,
}

impl LoadedModel {
    pub fn dim(&self) -> usize {
        self.config.model.dim()
    }
}

pub fn load_model(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let ckpt = checkpoint::load(dir, device).with_context(|| "--checkpoint")?;
    let record: TrainingRecord = serde_json::from_value(ckpt.config.training.clone()).with_context(|| {
        format!("checkpoint {}: the training record in config.json is invalid", dir.display())
    })?;
    let model = match &ckpt.config.model {
        ModelConfig::Mlp(c) => {
            let vb = candle_nn::VarBuilder::from_tensors(ckpt.tensors.clone(), DType::F32, device);
            VelocityMlp::new(c, vb)?
        }
        #[allow(unreachable_patterns)]
        other => bail!("checkpoint {}: `fm` cannot sample from a {other:?} model yet", dir.display()),
    };
    Ok(LoadedModel { model, config: ckpt.config, record, dir: ckpt.dir })
}

/// Samples in data units, the trajectory at every grid time, and the NFE.
pub struct Generated {
    pub samples: Vec<f32>,
    pub trajectory: Vec<Vec<f32>>,
    pub nfe: usize,
}

/// Solves the ODE from `n` draws of `N(0, I)` (seeded) and maps the result
/// back to data units through the checkpoint's transform.
pub fn generate(
    m: &LoadedModel,
    n: usize,
    seed: u64,
    choice: &SolverChoice,
    keep_trajectory: bool,
    device: &Device,
) -> Result<Generated> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let mut rng = SeededRng::for_stream(seed, "sample-noise");
    let x0 = rng.normal((n, m.dim()), DType::F32, device)?;
    let grid = choice.grid()?;
    let sol = choice
        .method
        .integrate(&AsOde(&m.model), &x0, &grid, keep_trajectory)
        .with_context(|| format!("sampling with {}", choice.label))?;
    let to_data = |t: &Tensor| -> Result<Vec<f32>> { data::to_data_units(t, m.record.transform.as_ref()) };
    let samples = to_data(&sol.state)?;
    let trajectory = sol.trajectory.iter().map(to_data).collect::<Result<Vec<_>>>()?;
    Ok(Generated { samples, trajectory, nfe: sol.stats.nfe })
}
