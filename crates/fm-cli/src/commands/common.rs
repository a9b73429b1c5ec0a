//! Pieces shared by the subcommands: loading a checkpoint, generating samples.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use fm_core::closed_form::EmpiricalVelocity;
use fm_core::parametrization::Parametrized;
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::{AsOde, SeededRng, VelocityField};
use fm_models::checkpoint::{self, CheckpointConfig};
use fm_models::VelocityNet;
use fm_solvers::OdeSolver;
use fm_solvers::TimeGrid;

use crate::data;
use crate::record::TrainingRecord;
use crate::solver::SolverChoice;

/// A trained model with its configuration and training record.
pub struct LoadedModel {
    /// The network as a velocity field: its output converted from the
    /// recorded parametrization (`--parametrization noise|data`) to a velocity.
    pub model: Parametrized<VelocityNet, SchedulerKind>,
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
    let kind = crate::commands::train::parametrization_of(&record)
        .with_context(|| format!("checkpoint {}", dir.display()))?;
    let vb = candle_nn::VarBuilder::from_tensors(ckpt.tensors.clone(), DType::F32, device);
    let net = VelocityNet::new(&ckpt.config.model, vb)
        .with_context(|| format!("checkpoint {}: `fm` cannot sample from this model", dir.display()))?;
    let model = Parametrized::new(net, AffinePath::new(record.scheduler), kind);
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
    generate_hybrid(m, n, seed, choice, keep_trajectory, device, None)
}

/// As [`generate`], but with `hybrid = Some((τ, û*))` follows `û*` on `[0, τ]`
/// and the model on `[τ, 1]` (see [`solve_hybrid`]).
pub fn generate_hybrid(
    m: &LoadedModel,
    n: usize,
    seed: u64,
    choice: &SolverChoice,
    keep_trajectory: bool,
    device: &Device,
    hybrid: Option<(f64, &dyn VelocityField)>,
) -> Result<Generated> {
    let x0 = model_source(m, n, seed, device)?;
    if let (VelocityNet::UNet(net), None) = (m.model.net(), hybrid) {
        // Images: solved in batches, class-conditional models cycle through the classes.
        let labels = super::images::default_labels(net, n, None)?;
        return super::images::generate_images(
            m,
            net,
            &x0,
            &super::images::ImageSampling {
                choice,
                labels,
                cfg_scale: 0.0,
                batch: super::images::DEFAULT_BATCH,
                trajectory_rows: if keep_trajectory { n } else { 0 },
            },
        );
    }
    let sol = match hybrid {
        None => solve_hybrid(&m.model, &m.model, &x0, choice, 0.0, keep_trajectory)?,
        Some((tau, closed)) => solve_hybrid(closed, &m.model, &x0, choice, tau, keep_trajectory)?,
    };
    let to_data = |t: &Tensor| -> Result<Vec<f32>> { data::to_data_units(t, m.record.transform.as_ref()) };
    let samples = to_data(&sol.state)?;
    let trajectory = sol.trajectory.iter().map(to_data).collect::<Result<Vec<_>>>()?;
    Ok(Generated { samples, trajectory, nfe: sol.nfe })
}

/// `n` draws of `N(0, I)` (model units, `f32`) from the seed's `sample-noise`
/// stream: the source noise of `fm sample` for the same `--seed`.
pub fn source_noise(n: usize, dim: usize, seed: u64, device: &Device) -> Result<Tensor> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let mut rng = SeededRng::for_stream(seed, "sample-noise");
    Ok(rng.normal((n, dim), DType::F32, device)?)
}

/// `n` draws of the checkpoint's source distribution (`N(0, I)` as
/// [`source_noise`], or its `--source`) from the seed's `sample-noise` stream.
pub fn model_source(m: &LoadedModel, n: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let source = crate::source::Source::parse(m.record.source.as_deref())?;
    if source == crate::source::Source::Normal {
        return source_noise(n, m.dim(), seed, device);
    }
    let mut rng = SeededRng::for_stream(seed, "sample-noise");
    source.sample(n, m.dim(), &mut rng, device)
}

/// The end state of a (possibly two-part) solve, the trajectory at every grid
/// time if requested, and the NFE of both parts.
pub struct Solved {
    pub state: Tensor,
    pub trajectory: Vec<Tensor>,
    pub nfe: usize,
}

/// Solves from `x0` at `t = 0` to `t = 1`, following `first` on `[0, τ]` and
/// `second` on `[τ, 1]`: two solves on the choice's grid split at `τ` (with
/// `τ` inserted as a grid point when it is not one). `τ = 0` is `second`
/// alone and `τ = 1` is `first` alone.
pub fn solve_hybrid(
    first: &dyn VelocityField,
    second: &dyn VelocityField,
    x0: &Tensor,
    choice: &SolverChoice,
    tau: f64,
    keep_trajectory: bool,
) -> Result<Solved> {
    if !(0.0..=1.0).contains(&tau) {
        bail!("--hybrid must lie in [0, 1], got {tau}");
    }
    let points = choice.grid()?.points().to_vec();
    let before: Vec<f64> =
        points.iter().copied().filter(|&t| t < tau).chain((tau > 0.0).then_some(tau)).collect();
    let after: Vec<f64> =
        (tau < 1.0).then_some(tau).into_iter().chain(points.iter().copied().filter(|&t| t > tau)).collect();
    let mut state = x0.clone();
    let mut trajectory = Vec::new();
    let mut nfe = 0;
    for (field, part) in [(first, before), (second, after)] {
        if part.len() < 2 {
            continue;
        }
        let grid = TimeGrid::from_points(part)?;
        let sol = choice
            .method
            .integrate(&AsOde(field), &state, &grid, keep_trajectory)
            .with_context(|| format!("sampling with {}", choice.label))?;
        let skip = usize::from(!trajectory.is_empty());
        trajectory.extend(sol.trajectory.into_iter().skip(skip));
        nfe += sol.stats.nfe;
        state = sol.state;
    }
    Ok(Solved { state, trajectory, nfe })
}

/// The checkpoint's finite training set in model units as an `f64` tensor
/// `(n, d)`: its `--n-train` set or CSV rows, or, with `n_train`, a set of that
/// size rebuilt from the seed (for checkpoints trained on fresh data).
pub fn training_points(m: &LoadedModel, n_train: Option<usize>, device: &Device) -> Result<Tensor> {
    let data = data::TrainingData::training_set_of_record(&m.record, n_train)?;
    let Some(points) = data.fixed_points() else {
        bail!(
            "checkpoint {} was trained on fresh `{}` points every step, so it has no finite training set; \
             give --n-train N to compare against N points drawn from its seed",
            m.dir.display(),
            m.record.data
        );
    };
    let d = m.dim();
    if data.dim() != d || points.is_empty() {
        bail!("checkpoint {}: the rebuilt training set does not match the model", m.dir.display());
    }
    let v: Vec<f64> = points.iter().map(|&x| x as f64).collect();
    Ok(Tensor::from_vec(v, (points.len() / d, d), device)?)
}

/// The closed-form velocity `û*` of `points` on the checkpoint's path
/// (see [`require_normal_source`]).
pub fn closed_form_field(m: &LoadedModel, points: &Tensor) -> Result<EmpiricalVelocity<SchedulerKind>> {
    require_normal_source(m)?;
    EmpiricalVelocity::new(points, m.record.scheduler).context("the closed-form velocity")
}

/// Fails for a checkpoint trained from another source than `N(0, I)`
/// (`--source 8gaussians`): û* is the exact velocity for a Gaussian source only.
pub fn require_normal_source(m: &LoadedModel) -> Result<()> {
    let source = crate::source::Source::parse(m.record.source.as_deref())?;
    if source != crate::source::Source::Normal {
        bail!(
            "checkpoint {}: it was trained from --source {}, but the closed-form velocity û* \
             transports N(0, I) to the training points; closed-form analyses need a checkpoint \
             trained from the standard normal source",
            m.dir.display(),
            m.record.source.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}
