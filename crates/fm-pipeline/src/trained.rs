//! [`Trained`]: a checkpoint loaded "as trained" — the network with its
//! parametrization, source distribution, standardization and (where kept) EMA
//! weights — from a folder or `hf://`, with one sampling and one likelihood
//! entry point for every family.

use std::path::{Path, PathBuf};

use candle::{Device, Tensor};
use fm_core::closed_form::EmpiricalVelocity;
use fm_core::divergence::Divergence;
use fm_core::scheduler::SchedulerKind;
use fm_core::{SeededRng, VelocityField};
use fm_models::checkpoint::{self, Checkpoint, CheckpointConfig};

use crate::data::to_data_units;
use crate::error::bail;
use crate::family::{self, Family, SampleRequest, TrainedModel};
use crate::sample::{solve_hybrid, source_draws, Samples};
use crate::source::Source;
use crate::{Result, ResultExt, RunRecord, SolverChoice, TrainingData};

/// How to compute log-likelihoods.
#[derive(Debug, Clone)]
pub struct LikelihoodRequest {
    /// The backward solve (velocity families; flows are exact without one).
    pub solver: SolverChoice,
    /// Exact divergence or Hutchinson's estimator.
    pub divergence: Divergence,
    /// Points per solve.
    pub batch_size: usize,
    /// Seed of the Hutchinson probes (stream `likelihood-probes`).
    pub seed: u64,
}

impl LikelihoodRequest {
    /// RK4 with `steps` steps and the exact divergence, 1000 points per solve, seed 0.
    pub fn exact_rk4(steps: usize) -> Result<Self> {
        Ok(Self {
            solver: SolverChoice::new("rk4", steps, 1e-5, 1e-5)?,
            divergence: Divergence::Exact,
            batch_size: 1000,
            seed: 0,
        })
    }
}

/// Per-point log-likelihoods in data units.
#[derive(Debug, Clone)]
pub struct Likelihoods {
    /// `log p(x)` per point, in the data's units.
    pub log_p: Vec<f64>,
    /// Function evaluations of all solves (0 for a normalizing flow).
    pub nfe: usize,
    /// `log |det ∂z/∂x|` of the standardization, added to every model-space value (0 without one).
    pub log_det_jacobian: f64,
}

impl Likelihoods {
    /// Mean and standard error of the negative log-likelihood (nats per point).
    pub fn nll(&self) -> (f64, f64) {
        let nll: Vec<f64> = self.log_p.iter().map(|v| -v).collect();
        mean_stderr(&nll)
    }
}

/// Mean and standard error.
pub fn mean_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, (var / n).sqrt())
}

/// Receives reflow pairs batch by batch: `x₀` and `x₁` rows, model units.
pub type PairSink<'a> = dyn FnMut(&[f32], &[f32]) -> Result<()> + 'a;

/// A trained model as its run left it.
///
/// ```no_run
/// use candle::Device;
/// use fm_pipeline::{SampleRequest, SolverChoice, Trained};
///
/// # fn main() -> fm_pipeline::Result<()> {
/// let model = Trained::load("runs/moons".as_ref(), false, &Device::Cpu)?; // or "hf://OWNER/REPO"
/// let samples = model.sample(&SampleRequest::new(2000, 0, SolverChoice::parse_spec("midpoint:8")?))?;
/// assert_eq!((samples.n, samples.dim), (2000, 2));
/// # Ok(())
/// # }
/// ```
pub struct Trained {
    model: Box<dyn TrainedModel>,
    family: &'static dyn Family,
    config: CheckpointConfig,
    record: RunRecord,
    dir: PathBuf,
    source: Source,
    device: Device,
}

impl Trained {
    /// Loads the checkpoint at `location`: a folder written by a run, its
    /// weights file, or `hf://OWNER/REPO[@REVISION][/FILE]` (from the Hub cache
    /// only when `offline`).
    pub fn load(location: &Path, offline: bool, device: &Device) -> Result<Self> {
        let path = crate::location::resolve(location, offline)?;
        Self::from_checkpoint(checkpoint::load(&path, device)?, device)
    }

    /// A checkpoint already read (its configuration, record and weights).
    pub fn from_checkpoint(ckpt: Checkpoint, device: &Device) -> Result<Self> {
        let dir = ckpt.dir;
        let record: RunRecord = serde_json::from_value(ckpt.config.training.clone()).with_context(|| {
            format!("checkpoint {}: the training record in config.json is invalid", dir.display())
        })?;
        let family = family::of(&ckpt.config.model)?;
        // Plain tensors, not variables: inference builds no autograd graph (and the
        // MLP takes its fused path).
        let tensors: std::collections::HashMap<_, _> =
            ckpt.tensors.into_iter().map(|(k, t)| (k, t.detach())).collect();
        let source = match &record.tokens {
            Some(grid) => Source::parse_tokens(record.source.as_deref(), grid.bins),
            None => Source::parse(record.source.as_deref()),
        }
        .with_context(|| format!("checkpoint {}", dir.display()))?;
        let model = family.load(&ckpt.config.model, tensors, &record, device).with_context(|| {
            format!("checkpoint {}: cannot build its {} model", dir.display(), family.name())
        })?;
        Ok(Self { model, family, config: ckpt.config, record, dir, source, device: device.clone() })
    }

    /// The model's family.
    pub fn family(&self) -> &'static dyn Family {
        self.family
    }

    /// The checkpoint's configuration (network and record as JSON).
    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// How it was trained.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Where it was loaded from (the Hub cache's snapshot folder for `hf://`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Values per sample.
    pub fn dim(&self) -> usize {
        self.model.dim()
    }

    /// Values per point in data units: [`Trained::dim`], or the chart
    /// coordinates of a point on a manifold (2 for longitude, latitude on `S²`).
    pub fn data_dim(&self) -> usize {
        match &self.record.manifold {
            Some(m) => m.chart_dim(),
            None => self.dim(),
        }
    }

    /// The source distribution it was trained from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The family's model (generation, likelihood, velocity field).
    pub fn model(&self) -> &dyn TrainedModel {
        self.model.as_ref()
    }

    /// The model as a velocity field in model units (velocity families).
    pub fn velocity_field(&self) -> Option<&dyn VelocityField> {
        self.model.velocity_field()
    }

    /// One line naming the network.
    pub fn describe(&self) -> String {
        self.family.describe_model(&self.config.model)
    }

    /// The run's data rebuilt from the record (reference and test points; needs the dataset).
    pub fn data(&self) -> Result<TrainingData> {
        TrainingData::from_record(&self.record)
    }

    /// `n` draws of the source distribution from the seed's `sample-noise` stream (model units).
    pub fn source_draws(&self, n: usize, seed: u64) -> Result<Tensor> {
        source_draws(self.source, n, self.dim(), seed, &self.device)
    }

    /// Model-space rows `(n, d)` as data-unit values.
    pub fn to_data_units(&self, x: &Tensor) -> Result<Vec<f32>> {
        if let Some(m) = &self.record.manifold {
            return crate::data::manifold::chart(
                m,
                &x.to_dtype(candle::DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            );
        }
        to_data_units(x, self.record.transform.as_ref())
    }

    /// Data-unit values as model-space values.
    pub fn to_model_units(&self, points: &[f32]) -> Result<Vec<f32>> {
        if let Some(m) = &self.record.manifold {
            return crate::data::manifold::embed(m, points);
        }
        match &self.record.transform {
            None => Ok(points.to_vec()),
            Some(t) => {
                let mut v: Vec<f64> = points.iter().map(|&x| x as f64).collect();
                t.transform(&mut v)?;
                Ok(v.into_iter().map(|x| x as f32).collect())
            }
        }
    }

    /// Samples in data units: source draws from `request.seed`, then the
    /// family's sampler (the ODE solve, batched with labels and guidance for
    /// images, or one pass through a flow), or with `hybrid = Some(τ)` the
    /// closed-form velocity of the training set on `[0, τ]` and the model after.
    pub fn sample(&self, request: &SampleRequest) -> Result<Samples> {
        self.sample_with(request, &mut |_| ())
    }

    /// As [`Trained::sample`]; `progress` hears the number of samples finished
    /// after each batch (image models solve in batches).
    pub fn sample_with(&self, request: &SampleRequest, progress: &mut dyn FnMut(usize)) -> Result<Samples> {
        let x0 = self.source_draws(request.n, request.seed)?;
        self.sample_from_with(&x0, request, progress)
    }

    /// As [`Trained::sample`], from given source draws `x0` `(n, d)` (model units).
    pub fn sample_from(&self, x0: &Tensor, request: &SampleRequest) -> Result<Samples> {
        self.sample_from_with(x0, request, &mut |_| ())
    }

    /// As [`Trained::sample_from`], with a `progress` callback (see [`Trained::sample_with`]).
    pub fn sample_from_with(
        &self,
        x0: &Tensor,
        request: &SampleRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Samples> {
        let (n, dim) = x0.dims2()?;
        if request.stochastic.is_some() {
            self.source.require_normal("--sampler sde|langevin (its score assumes the N(0, I) source)")?;
            if request.hybrid.is_some() {
                bail!("--hybrid follows ODEs; it does not combine with --sampler sde|langevin");
            }
        }
        let (samples, trajectory, nfe) = match request.hybrid {
            None => {
                let g = self.model.generate(x0, request, progress)?;
                (g.samples, g.trajectory, g.nfe)
            }
            Some(tau) => {
                self.require_normal_source()?;
                let field = self.velocity_field().with_context(|| {
                    format!("--hybrid: a {} has no velocity field to follow", self.family.name())
                })?;
                let points = self.training_points(None).context("--hybrid needs the training set")?;
                let closed = self.closed_form(&points)?;
                let keep = request.trajectory_rows > 0;
                let sol = solve_hybrid(&closed, field, x0, &request.solver, tau, keep)?;
                progress(n);
                (sol.state, sol.trajectory, sol.nfe)
            }
        };
        let values = self.to_data_units(&samples)?;
        let trajectory = trajectory.iter().map(|x| self.to_data_units(x)).collect::<Result<Vec<_>>>()?;
        // Values per row in data units (a manifold's chart coordinates).
        let dim = if self.record.manifold.is_some() { self.data_dim() } else { dim };
        Ok(Samples { values, n, dim, trajectory, nfe })
    }

    /// Coupled pairs for reflow (Liu et al., rectified flow): `n` source draws
    /// `x₀` from `seed`'s `sample-noise` stream and their ODE solutions
    /// `x₁ = Φ(x₀)` with `solver`, both in model units, computed `batch` at a
    /// time and handed to `sink` as they come (so they can be streamed to
    /// disk); returns the NFE of one solve. Velocity families, any source
    /// (the sidecar `fm reflow` writes carries it to the student), no
    /// standardization (the pairs train a new model in the same units).
    pub fn reflow_pairs(
        &self,
        n: usize,
        seed: u64,
        solver: &SolverChoice,
        batch: usize,
        sink: &mut PairSink<'_>,
    ) -> Result<usize> {
        if !self.family.solves_ode() || self.velocity_field().is_none() {
            bail!("reflow needs a velocity model (its ODE map); a {} has none", self.family.name());
        }
        if self.record.transform.is_some() {
            bail!(
                "checkpoint {}: reflow of standardized CSV data is not supported (the pairs would be in \
                 standardized units); train on the raw columns' toy equivalent or without standardization",
                self.dir.display()
            );
        }
        if batch == 0 {
            bail!("--batch-size must be at least 1, got 0");
        }
        let x0 = self.source_draws(n, seed)?;
        let mut request = SampleRequest::new(n, seed, solver.clone());
        request.batch_size = Some(batch);
        let mut nfe = 0;
        let mut start = 0;
        while start < n {
            let b = batch.min(n - start);
            let chunk = x0.narrow(0, start, b)?;
            let g = self.model.generate(&chunk, &request, &mut |_| ())?;
            nfe = g.nfe;
            let a: Vec<f32> = chunk.flatten_all()?.to_vec1::<f32>()?;
            let c: Vec<f32> = g.samples.to_dtype(candle::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if c.iter().any(|v| !v.is_finite()) {
                bail!("the ODE solve with {} produced non-finite values", solver.label);
            }
            sink(&a, &c)?;
            start += b;
        }
        Ok(nfe)
    }

    /// The straightness `S(u)` of the model's trajectories from `n` source
    /// draws of `seed` (Euler on `steps` steps; see [`fm_core::straightness`]).
    pub fn straightness(&self, n: usize, seed: u64, steps: usize) -> Result<f64> {
        let field = self
            .velocity_field()
            .with_context(|| format!("straightness: a {} has no velocity field", self.family.name()))?;
        let x0 = self.source_draws(n, seed)?;
        let grid = fm_solvers::TimeGrid::uniform(0.0, 1.0, steps)?;
        Ok(fm_core::straightness::straightness(field, &fm_solvers::Euler, &x0, &grid)?.value)
    }

    /// Log-likelihoods of `points` (row-major, data units), in batches of
    /// `request.batch_size`; `progress` hears the points done after each batch.
    pub fn log_likelihood(
        &self,
        points: &[f32],
        request: &LikelihoodRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Likelihoods> {
        if !self.source.is_tokens() {
            // Discrete models bound their own likelihood (the ELBO).
            self.source.require_normal("the likelihood")?;
        }
        let dim = self.dim();
        if request.batch_size == 0 {
            bail!("--batch-size must be at least 1, got 0");
        }
        let model_units = self.to_model_units(points)?;
        let mut rng = SeededRng::for_stream(request.seed, "likelihood-probes");
        let mut log_p = Vec::with_capacity(points.len() / dim);
        let mut nfe = 0;
        for chunk in model_units.chunks(request.batch_size * dim) {
            let x = Tensor::from_vec(chunk.to_vec(), (chunk.len() / dim, dim), &self.device)?;
            let res = self.model.log_likelihood(&x, &request.solver, request.divergence, &mut rng)?;
            nfe += res.nfe;
            log_p.extend(res.log_p);
            progress(chunk.len() / dim);
        }
        let log_det_jacobian = self.record.transform.as_ref().map_or(0.0, |t| t.log_abs_det_jacobian());
        for v in &mut log_p {
            *v += log_det_jacobian;
        }
        Ok(Likelihoods { log_p, nfe, log_det_jacobian })
    }

    /// The finite training set in model units as an `f64` tensor `(n, d)`: its
    /// `--n-train` set or CSV rows, or, with `n_train`, a set of that size
    /// rebuilt from the seed (for checkpoints trained on fresh data).
    pub fn training_points(&self, n_train: Option<usize>) -> Result<Tensor> {
        let data = TrainingData::training_set_of_record(&self.record, n_train)?;
        let Some(points) = data.fixed_points() else {
            bail!(
                "checkpoint {} was trained on fresh `{}` points every step, so it has no finite training set; \
                 give --n-train N to compare against N points drawn from its seed",
                self.dir.display(),
                self.record.data
            );
        };
        let d = self.dim();
        if data.dim() != d || points.is_empty() {
            bail!("checkpoint {}: the rebuilt training set does not match the model", self.dir.display());
        }
        let v: Vec<f64> = points.iter().map(|&x| x as f64).collect();
        Ok(Tensor::from_vec(v, (points.len() / d, d), &self.device)?)
    }

    /// The closed-form velocity `û*` of `points` on the checkpoint's path
    /// (see [`Trained::require_normal_source`]).
    pub fn closed_form(&self, points: &Tensor) -> Result<EmpiricalVelocity<SchedulerKind>> {
        self.require_normal_source()?;
        let scheduler = self.record.scheduler.unwrap_or(SchedulerKind::CondOt);
        EmpiricalVelocity::new(points, scheduler).context("the closed-form velocity")
    }

    /// Fails for a checkpoint trained from another source than `N(0, I)`:
    /// `û*` is the exact velocity for a Gaussian source only.
    pub fn require_normal_source(&self) -> Result<()> {
        if self.source != Source::Normal {
            bail!(
                "checkpoint {}: it was trained from --source {}, but the closed-form velocity û* \
                 transports N(0, I) to the training points; closed-form analyses need a checkpoint \
                 trained from the standard normal source",
                self.dir.display(),
                self.record.source.as_deref().unwrap_or_default()
            );
        }
        Ok(())
    }
}
