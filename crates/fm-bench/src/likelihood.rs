//! Likelihood of a batch by the instantaneous change of variables: exact
//! divergence (forward-mode tangents) or Hutchinson's estimator (one Rademacher
//! probe), RK4 (3/8 rule, torchdiffeq's `rk4`) with 25 steps from t = 1 to t = 0.

use candle::{Device, Tensor};
use fm_core::divergence::Probe;
use fm_core::likelihood::{log_likelihood_exact, log_likelihood_hutchinson_jvp};
use fm_core::SeededRng;
use fm_models::VelocityMlp;
use fm_solvers::{Rk4ThreeEighths, TimeGrid};

use crate::fixtures::{bench_mlp_config, deterministic_mlp, points};
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// Steps of the fixed-step solve.
pub const STEPS: usize = 25;

/// `log p₁` of `n` points under the benchmark MLP.
pub struct Likelihood {
    model: VelocityMlp,
    x1: Tensor,
    hutchinson: bool,
    rng: SeededRng,
}

impl Likelihood {
    /// With the exact divergence.
    pub fn exact(n: usize) -> Result<Self> {
        Self::with(n, false)
    }

    /// With Hutchinson's estimator (one Rademacher probe per solve).
    pub fn hutchinson(n: usize) -> Result<Self> {
        Self::with(n, true)
    }

    fn with(n: usize, hutchinson: bool) -> Result<Self> {
        let device = Device::Cpu;
        let (model, _varmap) = deterministic_mlp(&bench_mlp_config(), &device)?;
        Ok(Self { model: model.detached()?, x1: points(n, 2, &device)?, hutchinson, rng: SeededRng::new(0) })
    }
}

impl Workload for Likelihood {
    fn run(&mut self) -> Result<RunInfo> {
        let grid = TimeGrid::uniform(1.0, 0.0, STEPS)?;
        let res = if self.hutchinson {
            // The probe rides along as a forward-mode tangent: no autograd graph.
            log_likelihood_hutchinson_jvp(
                &self.model,
                &self.x1,
                Probe::Rademacher,
                1,
                &Rk4ThreeEighths,
                &grid,
                &mut self.rng,
            )?
        } else {
            log_likelihood_exact(&self.model, &self.x1, &Rk4ThreeEighths, &grid)?
        };
        Ok(RunInfo { nfe: Some(res.nfe), flops: None })
    }
}
