//! The closed-form (empirical) velocity of a training set: `n` points of
//! dimension `d`, evaluated at a batch of `b` queries. Its cost is two GEMMs,
//! `(b, d)·(d, n)` and `(b, n)·(n, d)`: `4·b·n·d` floating-point operations.

use candle::{Device, Tensor};
use fm_core::closed_form::EmpiricalVelocity;
use fm_core::scheduler::CondOtScheduler;
use fm_core::VelocityField;

use crate::fixtures::points;
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// One evaluation of the empirical velocity at `t = 0.5`.
pub struct ClosedForm {
    field: EmpiricalVelocity<CondOtScheduler>,
    x: Tensor,
    t: Tensor,
    flops: f64,
}

impl ClosedForm {
    /// `n` training points of dimension `d`, a batch of `b` queries.
    pub fn new(n: usize, d: usize, b: usize) -> Result<Self> {
        let device = Device::Cpu;
        // Training points in [0, 1] like images; queries around them.
        let data = ((points(n, d, &device)? / 3.0)? + 0.5)?;
        let field = EmpiricalVelocity::new(&data, CondOtScheduler)?;
        let x = (points(b, d, &device)? * 0.7)?;
        let t = Tensor::full(0.5f32, b, &device)?;
        Ok(Self { field, x, t, flops: 4.0 * (b * n * d) as f64 })
    }
}

impl Workload for ClosedForm {
    fn run(&mut self) -> Result<RunInfo> {
        let u = self.field.velocity(&self.x, &self.t)?;
        std::hint::black_box(u);
        Ok(RunInfo { nfe: None, flops: Some(self.flops) })
    }
}
