//! Likelihood as `fm likelihood` computes it: [`Trained::log_likelihood`] of a
//! batch by the instantaneous change of variables — the exact divergence
//! (forward-mode tangents) or Hutchinson's estimator (one Rademacher probe,
//! carried as a forward-mode tangent) — RK4 (3/8 rule, torchdiffeq's `rk4`)
//! with 25 steps from t = 1 to t = 0.

use fm_core::divergence::{Divergence, Probe};
use fm_pipeline::{LikelihoodRequest, SolverChoice, Trained};

use crate::fixtures::{bench_trained_mlp, points};
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// Steps of the fixed-step solve.
pub const STEPS: usize = 25;

/// `log p₁` of `n` points under the benchmark MLP.
pub struct Likelihood {
    model: Trained,
    points: Vec<f32>,
    request: LikelihoodRequest,
}

impl Likelihood {
    /// With the exact divergence.
    pub fn exact(n: usize) -> Result<Self> {
        Self::with(n, Divergence::Exact)
    }

    /// With Hutchinson's estimator (one Rademacher probe per solve).
    pub fn hutchinson(n: usize) -> Result<Self> {
        Self::with(n, Divergence::hutchinson(Probe::Rademacher, 1))
    }

    fn with(n: usize, divergence: Divergence) -> Result<Self> {
        let points = points(n, 2, &candle::Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let solver = SolverChoice::new("rk4-3/8", STEPS, 1e-5, 1e-5)?;
        let request = LikelihoodRequest { solver, divergence, batch_size: n, seed: 0 };
        Ok(Self { model: bench_trained_mlp()?, points, request })
    }
}

impl Workload for Likelihood {
    fn run(&mut self) -> Result<RunInfo> {
        let res = self.model.log_likelihood(&self.points, &self.request, &mut |_| ())?;
        Ok(RunInfo { nfe: Some(res.nfe), flops: None })
    }
}
