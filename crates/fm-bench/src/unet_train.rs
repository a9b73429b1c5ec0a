//! The U-Net training step on MNIST shapes: torchcfm's MNIST example
//! (`mnist` preset: 32 channels, one residual block per level, `channel_mult
//! [1, 2, 2]`, attention at 28×28 and in the middle), images `1×28×28`, Adam
//! `lr = 1e-3`, f32.

use std::cell::RefCell;

use candle::{DType, Device, Tensor};
use fm_core::loss::{cfm_loss, draw_source_and_time};
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_models::optim::{Adam, AdamParams};
use fm_models::unet::{UNet, UNetConfig};

use crate::fixtures::points;
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// One CFM step per run (CondOT path, fresh `t` and `x₀` each step) on a fixed
/// batch of deterministic `1×28×28` "images".
pub struct UNetTraining {
    net: UNet,
    opt: Adam,
    path: AffinePath<SchedulerKind>,
    x1: Tensor,
    rng: RefCell<SeededRng>,
}

impl UNetTraining {
    /// The workload for batch size `batch`.
    pub fn new(batch: usize) -> Result<Self> {
        let device = Device::Cpu;
        let config = UNetConfig::preset("mnist", 1, 28, 28)?;
        let mut rng = SeededRng::new(0);
        let (net, varmap) = UNet::init(&config, &mut rng, DType::F32, &device)?;
        let opt = Adam::new(&varmap, AdamParams::with_lr(1e-3))?;
        let x1 = points(batch, 28 * 28, &device)?.reshape((batch, 1, 28, 28))?;
        Ok(Self { net, opt, path: AffinePath::new(SchedulerKind::CondOt), x1, rng: RefCell::new(rng) })
    }
}

impl Workload for UNetTraining {
    fn run(&mut self) -> Result<RunInfo> {
        let (x0, t) = draw_source_and_time(&self.x1, &mut self.rng.borrow_mut())?;
        let loss = cfm_loss(&self.net.conditioned(None, None), &self.path, &x0, &self.x1, &t)?;
        self.opt.backward_step(&loss)?;
        Ok(RunInfo::default())
    }
}
