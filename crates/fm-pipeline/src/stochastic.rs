//! Stochastic sampling for the velocity families: the marginal-preserving
//! SDE or Langevin of [`fm_core::stochastic`] in place of the ODE solve.
//!
//! The Brownian increments come from the seed's `sample-diffusion` stream
//! (the source draws still come from `sample-noise`, so an SDE and an ODE
//! sample with the same seed start from the same points). Image models draw
//! them batch after batch from one stream, so the samples depend on
//! `--batch-size` as well as on the seed.

use candle::Tensor;
use fm_core::scheduler::SchedulerKind;
use fm_core::stochastic::StochasticSampler;
use fm_core::{SeededRng, VelocityField};

use crate::{Result, ResultExt, Solved};

/// A stochastic sampler in place of the ODE solve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StochasticChoice {
    /// The SDE `dx = [u + ½g²∇log p] dt + g dW` (with an optional Langevin corrector).
    Sde(StochasticSampler),
    /// Unadjusted Langevin at the noise level `1 − δ` from the source draws, then a denoising step.
    Langevin {
        /// Langevin steps.
        steps: usize,
        /// Step size `ε`.
        step: f64,
        /// `δ ∈ (0, 1)`.
        noise_floor: f64,
    },
}

impl StochasticChoice {
    /// How outputs name it, e.g. `sde(sigma:1, euler-maruyama-100, δ = 0.001)`.
    pub fn label(&self) -> String {
        match self {
            StochasticChoice::Sde(s) => {
                let corrector = s
                    .corrector
                    .map(|l| format!(", Langevin corrector {} × r = {}", l.steps, l.step_ratio))
                    .unwrap_or_default();
                format!(
                    "sde(g = {}, {}-{}, δ = {}{corrector})",
                    s.diffusion,
                    s.method.as_solver().name(),
                    s.steps,
                    s.noise_floor
                )
            }
            StochasticChoice::Langevin { steps, step, noise_floor } => {
                format!("langevin({steps} steps of ε = {step} at t = 1 − {noise_floor})")
            }
        }
    }

    /// Checks the options against the model's path.
    pub fn validate(&self, scheduler: SchedulerKind) -> Result<()> {
        match self {
            StochasticChoice::Sde(s) => s.validate(scheduler).context("--sampler sde"),
            &StochasticChoice::Langevin { steps, step, noise_floor } => {
                fm_core::stochastic::check_langevin(steps, step, noise_floor).context("--sampler langevin")
            }
        }
    }

    /// The seed's stream of Brownian increments.
    pub fn noise(seed: u64) -> SeededRng {
        SeededRng::for_stream(seed, "sample-diffusion")
    }

    /// Samples from `x0` with `field`; keeps the trajectory (the predictor's
    /// grid times, then the denoised output) when asked.
    pub fn run(
        &self,
        field: &dyn VelocityField,
        scheduler: SchedulerKind,
        x0: &Tensor,
        rng: &mut SeededRng,
        keep_trajectory: bool,
    ) -> Result<Solved> {
        let out = match self {
            StochasticChoice::Sde(s) => s.sample(field, scheduler, x0, rng, keep_trajectory),
            &StochasticChoice::Langevin { steps, step, noise_floor } => {
                StochasticSampler::langevin_only(field, scheduler, x0, steps, step, noise_floor, rng)
            }
        }
        .with_context(|| format!("sampling with {}", self.label()))?;
        Ok(Solved { state: out.state, trajectory: out.trajectory, nfe: out.nfe })
    }
}
