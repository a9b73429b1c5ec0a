//! A square single-precision GEMM, to measure the machine's peak rate.
//!
//! The product is written into a buffer allocated once, so that the rate is
//! the kernel's alone, without allocating and zero-filling a fresh 4 MiB
//! result per call (what `Tensor::matmul` does). The PyTorch peer likewise
//! writes into a preallocated `out=` tensor.

use gemm::Parallelism;

use crate::workload::{RunInfo, Workload};
use crate::Result;

/// `C = A·B` for `n × n` f32 matrices: `2n³` floating-point operations.
pub struct Gemm {
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    flops: f64,
}

impl Gemm {
    /// Matrices of size `n × n`.
    pub fn new(n: usize) -> Result<Self> {
        Ok(Self {
            n,
            a: vec![1.0; n * n],
            b: vec![0.5; n * n],
            c: vec![0.0; n * n],
            flops: 2.0 * (n as f64).powi(3),
        })
    }
}

impl Workload for Gemm {
    fn run(&mut self) -> Result<RunInfo> {
        let n = self.n;
        let threads = candle::utils::get_num_threads();
        let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        // SAFETY: the three buffers hold n·n elements each, addressed
        // row-major by the strides below; `c` is a distinct `&mut`.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                self.c.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.a.as_ptr(),
                1,
                n as isize,
                self.b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        std::hint::black_box(&self.c);
        Ok(RunInfo { nfe: None, flops: Some(self.flops) })
    }
}
