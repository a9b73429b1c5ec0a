//! A square single-precision GEMM, to measure the machine's peak rate.

use candle::{DType, Device, Tensor};

use crate::workload::{RunInfo, Workload};
use crate::Result;

/// `C = A·B` for `n × n` f32 matrices: `2n³` floating-point operations.
pub struct Gemm {
    a: Tensor,
    b: Tensor,
    flops: f64,
}

impl Gemm {
    /// Matrices of size `n × n`.
    pub fn new(n: usize) -> Result<Self> {
        let device = Device::Cpu;
        let a = Tensor::ones((n, n), DType::F32, &device)?;
        let b = (Tensor::ones((n, n), DType::F32, &device)? * 0.5)?;
        Ok(Self { a, b, flops: 2.0 * (n as f64).powi(3) })
    }
}

impl Workload for Gemm {
    fn run(&mut self) -> Result<RunInfo> {
        std::hint::black_box(self.a.matmul(&self.b)?);
        Ok(RunInfo { nfe: None, flops: Some(self.flops) })
    }
}
