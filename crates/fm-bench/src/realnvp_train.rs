//! The RealNVP training step on MNIST shapes, as `fm flow train --model realnvp`
//! builds it for images: 8 affine couplings with checkerboard masks on
//! `1×28×28`, ELU conditioners `784 → 64 → 64 → 1568`, the logit
//! pre-processing (`γ = 0.05`), maximum likelihood (forward KL), Adam
//! `lr = 1e-3`, batch 256, f32. The PyTorch peer is `RealNvpTrain` in
//! `xtask/python/peer.py`.

use candle::{DType, Device, Tensor};
use fm_core::SeededRng;
use fm_models::flows::{CouplingMask, NormalizingFlow, RealNvpConfig};
use fm_models::optim::{Adam, AdamParams};
use fm_models::ModelConfig;

use crate::fixtures::points;
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// One maximum-likelihood step per run on a fixed batch of deterministic
/// "images" with values in `(−1, 1)`.
pub struct RealNvpTraining {
    flow: NormalizingFlow,
    opt: Adam,
    x: Tensor,
}

impl RealNvpTraining {
    /// The workload for batch size `batch`.
    pub fn new(batch: usize) -> Result<Self> {
        let device = Device::Cpu;
        let mut config = RealNvpConfig::new(28 * 28, 8, &[64, 64]);
        config.mask = CouplingMask::Checkerboard { height: 28, width: 28 };
        config.logit = Some(0.05);
        let (flow, varmap) = NormalizingFlow::init(
            &ModelConfig::RealNvp(config),
            &mut SeededRng::new(0),
            DType::F32,
            &device,
        )?;
        let opt = Adam::new(&varmap, AdamParams::with_lr(1e-3))?;
        // 1.5 sin(…) / 1.6 lies inside (−1, 1).
        let x = (points(batch, 28 * 28, &device)? / 1.6)?;
        Ok(Self { flow, opt, x })
    }
}

impl Workload for RealNvpTraining {
    fn run(&mut self) -> Result<RunInfo> {
        let loss = self.flow.forward_kl_loss(&self.x)?;
        self.opt.backward_step(&loss)?;
        Ok(RunInfo::default())
    }
}
