//! MeanFlow on images (`--model meanflow-unet`): the U-Net as a network of
//! the average velocity `ū(x, s, t)` ([`UNetConfig::average_velocity`]),
//! trained with the MeanFlow identity ([`fm_core::mean_flow`]) through the
//! U-Net's exact forward-mode pass, and sampled in one or a few steps
//! (`--steps`).
//!
//! Unconditional and without dropout (the tangent of a random mask is not
//! defined): `--class-cond`, `--dropout` above 0 and a coupling are refused.
//!
//! [`UNetConfig::average_velocity`]: fm_models::unet::UNetConfig::average_velocity

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fm_core::divergence::Divergence;
use fm_core::likelihood::log_likelihood;
use fm_core::mean_flow::{draw_time_pairs, mean_flow_loss, mean_flow_trajectory};
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::{SeededRng, VelocityField};
use fm_models::unet::UNet as UNetNet;
use fm_models::ModelConfig;

use super::mean_flow::{mean_flow_objective, mean_flow_sampler_label, EQUAL_TIMES_FRACTION};
use super::velocity::{self, DEFAULT_IMAGE_BATCH};
use super::{
    finite, unet, Family, Generated, ModelLikelihood, SampleRequest, StepContext, TrainedModel, Trainer,
};
use crate::error::bail;
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, SolverChoice, TrainingData};

/// The MeanFlow U-Net family.
#[derive(Debug)]
pub(crate) struct MeanFlowUNet;

impl Family for MeanFlowUNet {
    fn name(&self) -> &'static str {
        "meanflow-unet"
    }

    fn accepts(&self, name: &str) -> bool {
        ["meanflow-unet", "unet-meanflow", "mean-flow-unet"].iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    fn owns(&self, model: &ModelConfig) -> bool {
        matches!(model, ModelConfig::UNet(c) if c.average_velocity)
    }

    fn resolve(&'static self, c: &RunConfig) -> Result<RunSettings> {
        let (mut s, mut spec) = unet::resolve_images(self, c)?;
        if spec.class_cond {
            bail!("--class-cond: --model meanflow-unet is unconditional (train --model unet for guidance)");
        }
        if s.flow_matching.matcher.is_some() {
            bail!("--coupling/--matcher: --model meanflow-unet trains on the scheduler's path with independent noise");
        }
        match spec.dropout {
            Some(p) if p > 0.0 => {
                bail!("--dropout {p}: --model meanflow-unet trains without dropout (its JVP needs a fixed network)")
            }
            _ => spec.dropout = Some(0.0),
        }
        spec.average_velocity = true;
        s.network.unet = Some(spec);
        Ok(s)
    }

    fn config_of_record(&self, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
        unet::config_of_record(self, r, model)
    }

    fn resume(&'static self, record: &RunRecord, model: &ModelConfig) -> Result<RunSettings> {
        unet::resume(self, record, model)
    }

    fn configure(&self, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
        unet::configure(self, s, data)
    }

    fn trainer(
        &self,
        model: &ModelConfig,
        s: &RunSettings,
        _data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>> {
        let ModelConfig::UNet(config) = model else { bail!("not a U-Net configuration") };
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (net, varmap) = UNetNet::init(config, &mut init_rng, DType::F32, device)?;
        Ok(Box::new(MeanFlowUNetTrainer { net, varmap, path: AffinePath::new(s.flow_matching.scheduler) }))
    }

    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        _record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>> {
        let ModelConfig::UNet(config) = model else { bail!("not a U-Net checkpoint") };
        let net = UNetNet::new(config, VarBuilder::from_tensors(tensors, DType::F32, device))?;
        Ok(Box::new(MeanFlowUNetModel { net }))
    }

    fn record(&self, s: &RunSettings, r: &mut RunRecord) {
        velocity::record(s, r);
    }

    fn describe_model(&self, model: &ModelConfig) -> String {
        format!("MeanFlow {}", unet::describe(model))
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

struct MeanFlowUNetTrainer {
    net: UNetNet,
    varmap: VarMap,
    path: AffinePath<SchedulerKind>,
}

impl Trainer for MeanFlowUNetTrainer {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<f64> {
        let x1 = cx.data.batch(cx.settings.batch_size, cx.data_rng)?.to_device(cx.device)?;
        let (b, d) = x1.dims2()?;
        let x0 = cx.settings.flow_matching.source.sample(b, d, cx.train_rng, cx.device)?;
        let (s, t) = draw_time_pairs(b, EQUAL_TIMES_FRACTION, cx.train_rng, x1.dtype(), cx.device)?;
        // The target from the forward-mode pass (detached), the loss's gradient by autograd.
        let loss = mean_flow_loss(&self.net, &self.path, &x0, &x1, &s, &t)?;
        let value = finite(&loss)?;
        cx.opt.backward_step(&loss)?;
        Ok(value)
    }
}

/// A trained MeanFlow U-Net: few-step sampling in batches of images; its
/// instantaneous velocity `ū(x, t, t)` for likelihoods and analyses.
struct MeanFlowUNetModel {
    net: UNetNet,
}

impl TrainedModel for MeanFlowUNetModel {
    fn dim(&self) -> usize {
        self.net.config().dim()
    }

    fn generate(
        &self,
        x0: &Tensor,
        request: &SampleRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Generated> {
        if request.class.is_some() || request.cfg_scale != 0.0 {
            bail!("--class and --cfg-scale: the MeanFlow U-Net is unconditional");
        }
        if request.stochastic.is_some() {
            bail!("--sampler sde|langevin: a MeanFlow model samples by its own steps (--steps)");
        }
        let batch = request.batch_size.unwrap_or(DEFAULT_IMAGE_BATCH);
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
        let c = self.net.config();
        Some(crate::ImageShape { channels: c.in_channels, height: c.height, width: c.width })
    }
}
