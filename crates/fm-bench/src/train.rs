//! Training steps as `fm train` takes them: one [`Run::step`] of the pipeline
//! (batch drawn from the run's data stream, the family's step, Adam), for the
//! CFM and exact OT-CFM MLP `3 → 256 → 256 → 256 → 2` (SiLU, AdamW with
//! PyTorch's defaults `lr = 1e-3`, `weight_decay = 0.01`), the MNIST U-Net and
//! the MNIST RealNVP.

use fm_pipeline::{Run, RunConfig};

use crate::fixtures::{bench_images, bench_run, points_data};
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// One training step of a run per call.
pub struct Training {
    run: Run,
}

impl Training {
    /// CFM on the benchmark MLP, batch `batch`, drawn from `batch` fixed points.
    pub fn cfm(batch: usize) -> Result<Self> {
        Self::mlp(batch, None)
    }

    /// Exact OT-CFM (torchcfm's `ExactOptimalTransportConditionalFlowMatcher`,
    /// `σ = 0`): the batch re-paired by the exact OT permutation, then the
    /// same step as [`Training::cfm`] (sequential coupling pipeline).
    pub fn ot_cfm(batch: usize) -> Result<Self> {
        Self::mlp(batch, Some("otcfm"))
    }

    fn mlp(batch: usize, matcher: Option<&str>) -> Result<Self> {
        let config = RunConfig {
            hidden: Some(vec![256, 256, 256]),
            activation: Some("silu".into()),
            lr: Some(1e-3),
            weight_decay: Some(0.01),
            batch_size: Some(batch),
            matcher: matcher.map(str::to_string),
            ..RunConfig::default()
        };
        Ok(Self { run: bench_run(&config, points_data(batch, 2)?, true)? })
    }

    /// A MeanFlow step (`fm train --model meanflow`) on an MLP `4 → 256 → 256 →
    /// 256 → 2` (SiLU, AdamW as above), batch `batch`: the average velocity
    /// and its forward-mode tangent along `(u, 1, 0)`, the loss, the backward
    /// pass. The PyTorch peer (`MeanFlowTrain` in `xtask/python/peer.py`)
    /// takes the tangent with `torch.func.jvp`.
    pub fn mean_flow(batch: usize) -> Result<Self> {
        let config = RunConfig {
            model: Some("meanflow".into()),
            hidden: Some(vec![256, 256, 256]),
            activation: Some("silu".into()),
            lr: Some(1e-3),
            weight_decay: Some(0.01),
            batch_size: Some(batch),
            ..RunConfig::default()
        };
        Ok(Self { run: bench_run(&config, points_data(batch, 2)?, false)? })
    }

    /// The MNIST U-Net (`mnist` preset: torchcfm's MNIST example), Adam `lr = 1e-3`.
    pub fn unet(batch: usize) -> Result<Self> {
        let config = RunConfig {
            model: Some("unet".into()),
            data: Some("images".into()),
            batch_size: Some(batch),
            ..RunConfig::default()
        };
        Ok(Self { run: bench_run(&config, bench_images(batch)?, false)? })
    }

    /// RealNVP on MNIST shapes as `fm train --model realnvp` builds it for
    /// images: 8 checkerboard couplings, ELU conditioners `784 → 64 → 64 →
    /// 1568`, logit pre-processing (`γ = 0.05`), forward KL, Adam `lr = 1e-3`.
    /// The PyTorch peer is `RealNvpTrain` in `xtask/python/peer.py`.
    pub fn realnvp(batch: usize) -> Result<Self> {
        let config =
            RunConfig { model: Some("realnvp".into()), batch_size: Some(batch), ..RunConfig::default() };
        Ok(Self { run: bench_run(&config, bench_images(batch)?, false)? })
    }
}

impl Workload for Training {
    fn run(&mut self) -> Result<RunInfo> {
        self.run.step()?;
        Ok(RunInfo::default())
    }
}
