//! The MeanFlow family (`--model meanflow`): an MLP of the average velocity
//! `ū(x, s, t)` trained with the MeanFlow identity ([`fm_core::mean_flow`])
//! and sampled in one or a few steps (`--steps`; the solver's name does not
//! apply: each step is `x ← x + (t' − t) ū(x, t, t')`).

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fm_core::divergence::Divergence;
use fm_core::likelihood::log_likelihood;
use fm_core::mean_flow::{draw_time_pairs, mean_flow_trajectory, AverageVelocityField};
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::{SeededRng, VelocityField};
use fm_models::{mean_flow_train_step, MeanFlowConfig, MeanFlowMlp, ModelConfig};

use super::velocity;
use super::{Family, Generated, ModelLikelihood, SampleRequest, StepContext, TrainedModel, Trainer};
use crate::error::bail;
use crate::settings::{self, Defaults, Objective, UNET_FLAGS};
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, SolverChoice, TrainingData};

/// The fraction of training pairs with `s = t` (where `ū` is the
/// instantaneous velocity); Geng et al. found 75 % best (25 % with `s < t`).
pub const EQUAL_TIMES_FRACTION: f64 = 0.75;

/// The MeanFlow family.
#[derive(Debug)]
pub(crate) struct MeanFlow;

impl Family for MeanFlow {
    fn name(&self) -> &'static str {
        "meanflow"
    }

    fn accepts(&self, name: &str) -> bool {
        ["meanflow", "mean-flow"].iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    fn owns(&self, model: &ModelConfig) -> bool {
        matches!(model, ModelConfig::MeanFlow(_))
    }

    fn resolve(&'static self, c: &RunConfig) -> Result<RunSettings> {
        if c.layers.is_some() {
            bail!("--layers only applies to --model planar or realnvp (MeanFlow's depth is set by --hidden)");
        }
        settings::refuse(c, UNET_FLAGS, "only applies to --model unet")?;
        if c.preset.is_some() {
            bail!("--preset applies to --model mlp and unet; MeanFlow's defaults are the guide's recipe");
        }
        let mut s = settings::common(
            c,
            self,
            Defaults {
                data: Some("moons"),
                noise: Some(0.05),
                steps: 10_000,
                batch_size: 256,
                lr: 1e-2,
                out_stem: None,
            },
        )?;
        s.network.hidden = settings::hidden(c, &[64, 64, 64])?;
        s.network.activation = settings::activation(c, fm_models::Activation::Elu)?;
        // Any source: MeanFlow draws x₀ itself and needs no matcher for it.
        let plain = RunConfig { source: None, ..c.clone() };
        let mut fm = settings::flow_matching(&plain)?;
        fm.source = crate::Source::parse(c.source.as_deref())?;
        if fm.objective != Objective::Cfm || !fm.spec.is_plain_cfm() || fm.matcher.is_some() {
            bail!(
                "--model meanflow trains by the MeanFlow identity on the scheduler's path; --objective, \
                 --matcher, --parametrization, --weighting and --jacobian-reg do not apply to it"
            );
        }
        s.flow_matching = fm;
        Ok(s)
    }

    fn config_of_record(&self, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
        let ModelConfig::MeanFlow(m) = model else { bail!("not a MeanFlow checkpoint") };
        let mut c = RunConfig::of_record(r);
        c.model = Some(self.name().into());
        c.hidden = Some(m.hidden.clone());
        c.activation = Some(m.activation.to_string());
        velocity::config_of_record(r, &mut c);
        Ok(c)
    }

    fn resume(&'static self, record: &RunRecord, model: &ModelConfig) -> Result<RunSettings> {
        let mut s = self.resolve(&self.config_of_record(record, model)?)?;
        velocity::restore(&mut s, record)?;
        Ok(s)
    }

    fn configure(&self, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
        if data.is_paired() {
            bail!(
                "--data {}: coupled pairs train velocity models (--model mlp); MeanFlow draws its own noise",
                s.data
            );
        }
        s.flow_matching.source.check_dim(data.dim())?;
        Ok(ModelConfig::MeanFlow(MeanFlowConfig {
            dim: data.dim(),
            hidden: s.network.hidden.clone(),
            activation: s.network.activation,
        }))
    }

    fn trainer(
        &self,
        model: &ModelConfig,
        s: &RunSettings,
        _data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>> {
        let ModelConfig::MeanFlow(config) = model else { bail!("not a MeanFlow configuration") };
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (net, varmap) = MeanFlowMlp::init(config, &mut init_rng, DType::F32, device)?;
        Ok(Box::new(MeanFlowTrainer { net, varmap, path: AffinePath::new(s.flow_matching.scheduler) }))
    }

    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        _record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>> {
        let ModelConfig::MeanFlow(config) = model else { bail!("not a MeanFlow checkpoint") };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let net = MeanFlowMlp::new(config, vb)?;
        // 2-D points: one batch.
        Ok(Box::new(MeanFlowModel { net, dim: config.dim, batch: usize::MAX, image: None }))
    }

    fn record(&self, s: &RunSettings, r: &mut RunRecord) {
        velocity::record(s, r);
    }

    fn describe_model(&self, model: &ModelConfig) -> String {
        match model {
            ModelConfig::MeanFlow(m) => {
                format!(
                    "MeanFlow MLP {}",
                    velocity::widths_label(m.dim + 2, &m.hidden, m.dim, m.num_parameters())
                )
            }
            other => format!("{other:?}"),
        }
    }

    fn describe_objective(&self, _s: &RunSettings) -> String {
        mean_flow_objective()
    }

    fn describe_path(&self, s: &RunSettings) -> String {
        velocity::describe_path(s)
    }

    fn default_sample_steps(&self) -> Option<usize> {
        Some(1)
    }

    fn sampler_label(&self, solver: &SolverChoice) -> String {
        mean_flow_sampler_label(solver)
    }
}

/// One MeanFlow training batch: data `x₁` from the data stream, then source
/// draws `x₀` and time pairs `s ≤ t` from the train stream.
pub(super) fn draw_mean_flow_batch(cx: &mut StepContext<'_>) -> Result<[Tensor; 4]> {
    let x1 = cx.data.batch(cx.settings.batch_size, cx.data_rng)?.to_device(cx.device)?;
    let (b, d) = x1.dims2()?;
    let x0 = cx.settings.flow_matching.source.sample(b, d, cx.train_rng, cx.device)?;
    let (s, t) = draw_time_pairs(b, EQUAL_TIMES_FRACTION, cx.train_rng, x1.dtype(), cx.device)?;
    Ok([x0, x1, s, t])
}

/// The objective line of the MeanFlow families' logs.
pub(super) fn mean_flow_objective() -> String {
    format!(
        "MeanFlow (average velocity ū(x, s, t); {:.0} % of the time pairs with s < t)",
        100.0 * (1.0 - EQUAL_TIMES_FRACTION)
    )
}

/// How outputs name MeanFlow sampling: `meanflow-1 step`, `meanflow-2 steps`.
pub(super) fn mean_flow_sampler_label(solver: &SolverChoice) -> String {
    let steps = solver.steps;
    format!("meanflow-{steps} step{}", if steps == 1 { "" } else { "s" })
}

struct MeanFlowTrainer {
    net: MeanFlowMlp,
    varmap: VarMap,
    path: AffinePath<SchedulerKind>,
}

impl Trainer for MeanFlowTrainer {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<f64> {
        let [x0, x1, s, t] = draw_mean_flow_batch(cx)?;
        // The target by the graph-free tangent pass, then the MLP's explicit backward pass.
        Ok(mean_flow_train_step(&self.net, &self.path, cx.opt, &x0, &x1, &s, &t)?)
    }
}

/// A trained MeanFlow network (the MLP, or the U-Net on images): few-step
/// sampling in batches of `batch` (trajectories kept); its instantaneous
/// velocity `ū(x, t, t)` for likelihoods and analyses.
pub(super) struct MeanFlowModel<N> {
    pub net: N,
    pub dim: usize,
    /// Samples per batch unless the request says otherwise.
    pub batch: usize,
    /// The shape of one sample, for models of images.
    pub image: Option<crate::ImageShape>,
}

impl<N: AverageVelocityField + VelocityField> TrainedModel for MeanFlowModel<N> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn generate(
        &self,
        x0: &Tensor,
        request: &SampleRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Generated> {
        if request.class.is_some() || request.cfg_scale != 0.0 {
            bail!("--class and --cfg-scale: MeanFlow models are unconditional");
        }
        if request.stochastic.is_some() {
            bail!("--sampler sde|langevin: a MeanFlow model samples by its own steps (--steps)");
        }
        let batch = request.batch_size.unwrap_or(self.batch);
        if batch == 0 {
            bail!("--batch-size must be at least 1, got 0");
        }
        let steps = request.solver.steps;
        let n = x0.dim(0)?;
        let (mut samples, mut trajectory) = (Vec::new(), Vec::<Vec<Tensor>>::new());
        let mut start = 0;
        while start < n {
            let b = batch.min(n - start);
            let rows = request.trajectory_rows.saturating_sub(start).min(b);
            let (x, kept) = mean_flow_trajectory(&self.net, &x0.narrow(0, start, b)?, steps, rows)
                .with_context(|| format!("MeanFlow sampling in {steps} step(s)"))?;
            samples.push(x);
            if rows > 0 {
                trajectory.push(kept);
            }
            start += b;
            progress(start);
        }
        // The kept rows of every batch, step by step.
        let trajectory = (0..trajectory.first().map_or(0, Vec::len))
            .map(|k| Tensor::cat(&trajectory.iter().map(|t| &t[k]).collect::<Vec<_>>(), 0))
            .collect::<candle::Result<Vec<_>>>()?;
        Ok(Generated { samples: Tensor::cat(&samples, 0)?, trajectory, nfe: steps })
    }

    fn log_likelihood(
        &self,
        x: &Tensor,
        solver: &SolverChoice,
        divergence: Divergence,
        rng: &mut SeededRng,
    ) -> Result<ModelLikelihood> {
        // The instantaneous velocity ū(x, t, t) is a CNF; its divergence by autograd.
        let grid = solver.backward_grid()?;
        let res = log_likelihood(&self.net, x, divergence, &solver.method, &grid, rng)
            .with_context(|| format!("likelihood solve with {}", solver.label))?;
        Ok(ModelLikelihood { log_p: res.log_p_vec()?, nfe: res.nfe })
    }

    fn velocity_field(&self) -> Option<&dyn VelocityField> {
        Some(&self.net)
    }

    fn image_shape(&self) -> Option<crate::ImageShape> {
        self.image
    }
}
