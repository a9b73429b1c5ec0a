//! The CFM training step: MLP `3 → 256 → 256 → 256 → 2` (SiLU), AdamW, f32.

use candle::{Device, Tensor};
use fm_core::loss::draw_source_and_time;
use fm_core::matcher::{Matcher, MatcherKind};
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_models::optim::{Adam, AdamParams};
use fm_models::{mlp_cfm_train_step, DrawnBatch, OtCfmPipeline, VelocityMlp};

use crate::fixtures::{bench_mlp_config, deterministic_mlp, points};
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// One CFM step per run on a fixed data batch, with fresh `t` and `x₀` each step
/// (as `fm train` does, with its explicit backward pass); AdamW with PyTorch's defaults (`lr = 1e-3`, `weight_decay = 0.01`).
pub struct CfmTraining {
    model: VelocityMlp,
    opt: Adam,
    path: AffinePath<SchedulerKind>,
    x1: Tensor,
    rng: SeededRng,
}

impl CfmTraining {
    /// The workload for batch size `batch`.
    pub fn new(batch: usize) -> Result<Self> {
        let device = Device::Cpu;
        let (model, varmap) = deterministic_mlp(&bench_mlp_config(), &device)?;
        let opt = Adam::new(&varmap, AdamParams { weight_decay: 0.01, ..AdamParams::default() })?;
        Ok(Self {
            model,
            opt,
            path: AffinePath::new(SchedulerKind::CondOt),
            x1: points(batch, 2, &device)?,
            rng: SeededRng::new(0),
        })
    }
}

impl Workload for CfmTraining {
    fn run(&mut self) -> Result<RunInfo> {
        mlp_cfm_train_step(&self.model, &self.path, &mut self.opt, &self.x1, &mut self.rng)?;
        Ok(RunInfo::default())
    }
}

/// One exact OT-CFM step per run (torchcfm's `ExactOptimalTransportConditionalFlowMatcher`
/// with `σ = 0`): the batch is re-paired by the exact OT permutation before the
/// same step as [`CfmTraining`] ([`OtCfmPipeline`], sequential: each batch's
/// coupling is solved when it is queued).
pub struct OtCfmTraining {
    model: VelocityMlp,
    opt: Adam,
    matcher: Matcher,
    x1: Tensor,
    rng: SeededRng,
    pipeline: OtCfmPipeline,
}

impl OtCfmTraining {
    /// The workload for batch size `batch`.
    pub fn new(batch: usize) -> Result<Self> {
        let device = Device::Cpu;
        let (model, varmap) = deterministic_mlp(&bench_mlp_config(), &device)?;
        let opt = Adam::new(&varmap, AdamParams { weight_decay: 0.01, ..AdamParams::default() })?;
        Ok(Self {
            model,
            opt,
            matcher: Matcher::new(MatcherKind::OtCfm, 0.0)?,
            x1: points(batch, 2, &device)?,
            rng: SeededRng::new(0),
            // Sequential: overlapping the coupling with the step measured no
            // faster on two cores (see `OtCfmPipeline::new`).
            pipeline: OtCfmPipeline::new(false),
        })
    }
}

impl OtCfmTraining {
    /// Queues the fixed batch with fresh `t` and `x₀` (the next step's coupling).
    fn push_next(&mut self) -> Result<()> {
        let (x0, t) = draw_source_and_time(&self.x1, &mut self.rng)?;
        self.pipeline.push(DrawnBatch { x0, x1: self.x1.clone(), t })?;
        Ok(())
    }
}

impl Workload for OtCfmTraining {
    fn run(&mut self) -> Result<RunInfo> {
        if self.pipeline.queued() == 0 {
            self.push_next()?;
        }
        self.push_next()?;
        self.pipeline.step(&self.model, &self.matcher, &mut self.opt, &mut self.rng)?;
        Ok(RunInfo::default())
    }
}
