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
use fm_core::mean_flow::mean_flow_loss;
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_models::unet::UNet as UNetNet;
use fm_models::ModelConfig;

use super::mean_flow::{draw_mean_flow_batch, mean_flow_objective, mean_flow_sampler_label, MeanFlowModel};
use super::velocity::{self, DEFAULT_IMAGE_BATCH};
use super::{finite, unet, Family, StepContext, TrainedModel, Trainer};
use crate::error::bail;
use crate::{Result, RunConfig, RunRecord, RunSettings, SolverChoice, TrainingData};

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
        let image =
            crate::ImageShape { channels: config.in_channels, height: config.height, width: config.width };
        Ok(Box::new(MeanFlowModel { net, dim: config.dim(), batch: DEFAULT_IMAGE_BATCH, image: Some(image) }))
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
        let [x0, x1, s, t] = draw_mean_flow_batch(cx)?;
        // The target from the forward-mode pass (detached), the loss's gradient by autograd.
        let loss = mean_flow_loss(&self.net, &self.path, &x0, &x1, &s, &t)?;
        let value = finite(&loss)?;
        cx.opt.backward_step(&loss)?;
        Ok(value)
    }
}
