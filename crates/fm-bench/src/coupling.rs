//! Exact minibatch OT coupling of a batch (the public `Coupling::couple` API).

use candle::{Device, Tensor};
use fm_core::coupling::Coupling;
use fm_core::SeededRng;

use crate::fixtures::points;
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// Pairs `b` noise points with `b` data points by the exact OT permutation.
pub struct OtCoupling {
    x0: Tensor,
    x1: Tensor,
    rng: SeededRng,
}

impl OtCoupling {
    /// A batch of `b` points of dimension `d`.
    pub fn new(b: usize, d: usize) -> Result<Self> {
        let device = Device::Cpu;
        let mut rng = SeededRng::new(1);
        let x0 = rng.normal((b, d), candle::DType::F32, &device)?;
        Ok(Self { x0, x1: points(b, d, &device)?, rng })
    }
}

impl Workload for OtCoupling {
    fn run(&mut self) -> Result<RunInfo> {
        let c = Coupling::ExactOt.couple(&self.x0, &self.x1, None, false, &mut self.rng)?;
        std::hint::black_box(c);
        Ok(RunInfo::default())
    }
}
