//! Sampling as `fm sample` does it: [`Trained::sample_from`] of the benchmark
//! MLP — the ODE solve from noise at t = 0 to data at t = 1 and the samples in
//! data units — from the deterministic points the PyTorch peer starts from
//! (an adaptive solver's NFE depends on them), instead of seeded normal draws.

use candle::{Device, Tensor};
use fm_pipeline::{SampleRequest, SolverChoice, Trained};

use crate::fixtures::{bench_trained_mlp, bench_trained_unet, points};
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// `n` points through Euler with a fixed number of steps, or through Dopri5.
pub struct Sampling {
    model: Trained,
    x0: Tensor,
    request: SampleRequest,
}

impl Sampling {
    /// Euler with `steps` steps.
    pub fn euler(n: usize, steps: usize) -> Result<Self> {
        Self::with(n, SolverChoice::new("euler", steps, 1e-5, 1e-5)?)
    }

    /// Dopri5 with `rtol = atol = tol`.
    pub fn dopri5(n: usize, tol: f64) -> Result<Self> {
        Self::with(n, SolverChoice::new("dopri5", 1, tol, tol)?)
    }

    /// `n` MNIST images from the U-Net with Euler in `steps` steps, in one
    /// batch of `n`, as `fm sample --checkpoint UNET --solver euler --steps
    /// STEPS --batch-size N` runs it (the PyTorch peer: torchcfm's
    /// `UNetModelWrapper`, the same Euler steps under `no_grad`).
    pub fn unet_euler(n: usize, steps: usize) -> Result<Self> {
        let x0 = points(n, 784, &Device::Cpu)?;
        let mut request = SampleRequest::new(n, 0, SolverChoice::new("euler", steps, 1e-5, 1e-5)?);
        request.batch_size = Some(n);
        Ok(Self { model: bench_trained_unet()?, x0, request })
    }

    fn with(n: usize, solver: SolverChoice) -> Result<Self> {
        let x0 = points(n, 2, &Device::Cpu)?;
        Ok(Self { model: bench_trained_mlp()?, x0, request: SampleRequest::new(n, 0, solver) })
    }
}

impl Workload for Sampling {
    fn run(&mut self) -> Result<RunInfo> {
        let s = self.model.sample_from(&self.x0, &self.request)?;
        Ok(RunInfo { nfe: Some(s.nfe), flops: None })
    }
}
