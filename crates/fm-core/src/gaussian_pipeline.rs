//! The exact error of a whole score-based sampling pipeline on Gaussian data
//! (Hurault, Terris, Moreau, Peyré, "From Score Matching to Diffusion: a
//! fine-grained error analysis in the Gaussian setting", 2025;
//! docs/reference/gaussian-oracle.md).
//!
//! Data `N(μ, Σ)`, source `N(0, I)`, an affine path. The model is linear, and
//! diagonal in the eigenbasis `(λ̂ᵢ, uᵢ)` of a covariance `Σ̂` with mean `μ̂`:
//!
//! - **exact** (`samples = None`, `training = None`): `Σ̂ = Σ`, `μ̂ = μ`, the true score;
//! - **empirical** (`samples = Some(N)`): the exact score of `N(μ̂, Σ̂)`, the
//!   moments of `N` data points drawn from the seeded generator (generalization);
//! - **trained** (`training = Some((K, η))`): at every time a linear denoiser
//!   `x̂₁ = c + W(x − α μ̂)` fitted by `K` gradient steps of size `η` from 0 on
//!   the denoising loss `½E‖x̂₁ − x₁‖²` over the (empirical or exact) data and
//!   exact Gaussian noise; in the eigenbasis, with `hᵢ = α²λ̂ᵢ + σ²`,
//!   `wᵢ = (αλ̂ᵢ/hᵢ)(1 − (1 − ηhᵢ)^K)` and `c = μ̂(1 − (1 − η)^K)` (optimisation).
//!
//! Every sampler step of [`crate::stochastic`] (Euler–Maruyama or stochastic
//! Heun predictor for any diffusion `g`, Langevin corrector, Langevin alone,
//! the final denoising step) is then affine in the state plus Gaussian noise,
//! so the output is Gaussian with per-direction mean `Mᵢ` and variance `Vᵢ`.
//! They are computed **by running the sampler's own step functions**, one
//! step at a time, on three rows — `(x, ξ) = (M, 0), (M + 1, 0), (M, 1)` —
//! which give the step's map `x ↦ A x + B + C ξ`; then `M ← A M + B`,
//! `V ← A² V + C²`. What is measured is the code users sample with.
//!
//! The output is `N(U M, U diag(V) Uᵀ)`. When the model's basis is the
//! data's (`samples = None`), `W2² = Σᵢ (Mᵢ − μᵢ)² + (√Vᵢ − √λᵢ)²` splits
//! exactly over the data's power spectrum (the eigenvalues `λᵢ`): the
//! per-direction terms are [`PipelineError::contributions`]. With `N`
//! samples the bases differ and the exact W2 comes from the general formula.

use candle::{DType, Device, Tensor};
use fm_solvers::NoiseSource;

use crate::gaussian::GaussianOracle;
use crate::linalg::{gaussian_w2, sample_moments, symmetric_eigen, SymmetricEigen};
use crate::parametrization::{times_for, CONVERSION_EPS};
use crate::scheduler::{Scheduler, SchedulerKind, SchedulerOutput};
use crate::stochastic::{check_langevin, denoise, langevin_step, StochasticSampler};
use crate::{to_f64_vec, Error, Result, SeededRng, VelocityField};

/// The linear score model of the pipeline (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinearScoreModel {
    /// Fit the moments to this many data points (`None`: the exact moments).
    pub samples: Option<usize>,
    /// `(K, η)`: gradient steps and step size on the denoising loss
    /// (`None`: fully trained, i.e. the exact score of the fitted Gaussian).
    pub training: Option<(u64, f64)>,
}

/// The sampler of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PipelineSampler {
    /// A marginal-preserving SDE (or, with no diffusion, the ODE by Euler or Heun).
    Sde(StochasticSampler),
    /// Unadjusted Langevin at the noise level `1 − δ`, from the source.
    Langevin {
        /// Langevin steps.
        steps: usize,
        /// Step size `ε`.
        step: f64,
        /// `δ`.
        noise_floor: f64,
    },
}

/// The exact law of the pipeline's output and its distance to the data.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineError {
    /// `W2(N(μ, Σ), output)`, exact; infinite when the scheme is unstable for
    /// the options (its law overflows).
    pub w2: f64,
    /// The model's eigenvalues `λ̂ᵢ` (ascending), the basis of `means`/`variances`.
    pub model_eigenvalues: Vec<f64>,
    /// The output's mean per model direction, `Mᵢ = uᵢᵀ E[x]`.
    pub means: Vec<f64>,
    /// The output's variance per model direction, `Vᵢ`.
    pub variances: Vec<f64>,
    /// When the model's basis is the data's: `W2²`'s term per data eigenvalue
    /// `λᵢ` (ascending), `(Mᵢ − μᵢ)² + (√Vᵢ − √λᵢ)²`, summing to `w2²`.
    pub contributions: Option<Vec<f64>>,
    /// Velocity-field evaluations of one sample.
    pub nfe: usize,
}

/// One direction of the model: eigenvalue and the mean's coordinate.
#[derive(Debug, Clone, Copy)]
struct Direction {
    lambda: f64,
    mean: f64,
}

/// The model as a velocity field on eigen-coordinates (column `i` is
/// direction `i`), so the sampler's steps can run on it directly.
struct DiagonalModel<'a> {
    directions: &'a [Direction],
    scheduler: SchedulerKind,
    training: Option<(u64, f64)>,
}

impl DiagonalModel<'_> {
    /// `(gain, offset)` of the velocity `u = gain·x + offset` of direction `d` at `t`.
    fn velocity_coefficients(&self, d: &Direction, t: f64) -> (f64, f64) {
        match self.training {
            None => {
                // u = α̇ μ + (α̇αλ + σ̇σ)/(α²λ + σ²) (x − α μ): regular on [0, 1].
                let c = self.scheduler.at(t);
                let gain = (c.d_alpha * c.alpha * d.lambda + c.d_sigma * c.sigma)
                    / (c.alpha * c.alpha * d.lambda + c.sigma * c.sigma);
                (gain, c.d_alpha * d.mean - gain * c.alpha * d.mean)
            }
            Some((k, eta)) => {
                // u = (σ̇/σ) x + (Δ/σ) x̂₁ (a data prediction: clamped below t = 1).
                let c = self.scheduler.at(t.min(1.0 - CONVERSION_EPS));
                let (w, offset) = trained_denoiser(&c, d, k, eta);
                (c.d_sigma / c.sigma + c.delta() / c.sigma * w, c.delta() / c.sigma * offset)
            }
        }
    }
}

/// `(w, b)` of the trained denoiser `x̂₁ = w x + b` of direction `d` at coefficients `c`.
fn trained_denoiser(c: &SchedulerOutput, d: &Direction, k: u64, eta: f64) -> (f64, f64) {
    let h = c.alpha * c.alpha * d.lambda + c.sigma * c.sigma;
    let w = c.alpha * d.lambda / h * (1.0 - (1.0 - eta * h).powf(k as f64));
    let mean = d.mean * (1.0 - (1.0 - eta).powf(k as f64));
    (w, mean - w * c.alpha * d.mean)
}

impl VelocityField for DiagonalModel<'_> {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let ts = times_for(x, t)?;
        let (_, cols) = x.dims2()?;
        if cols != self.directions.len() {
            return Err(Error::Shape(format!("{cols} columns for {} directions", self.directions.len())));
        }
        // One time for the whole batch (the sampler's steps use one).
        let t0 = ts[0];
        let (gain, offset): (Vec<f64>, Vec<f64>) =
            self.directions.iter().map(|d| self.velocity_coefficients(d, t0)).unzip();
        let gain = Tensor::from_vec(gain, (1, cols), x.device())?.to_dtype(x.dtype())?;
        let offset = Tensor::from_vec(offset, (1, cols), x.device())?.to_dtype(x.dtype())?;
        Ok(x.broadcast_mul(&gain)?.broadcast_add(&offset)?)
    }
}

/// A noise source returning the rows `(0, 0, 1)`: the third row reads off the noise gain.
struct UnitNoiseOnLastRow;

impl NoiseSource for UnitNoiseOnLastRow {
    fn standard_normal(&mut self, like: &Tensor) -> fm_solvers::Result<Tensor> {
        let cols = like.dim(1)?;
        let mut v = vec![0.0; 2 * cols];
        v.extend(std::iter::repeat_n(1.0, cols));
        Ok(Tensor::from_vec(v, (3, cols), like.device())?.to_dtype(like.dtype())?)
    }
}

/// The running law: per-direction mean and variance.
struct Law {
    mean: Vec<f64>,
    var: Vec<f64>,
}

impl Law {
    fn rows(&self) -> Result<Tensor> {
        let d = self.mean.len();
        let mut v = self.mean.clone();
        v.extend(self.mean.iter().map(|m| m + 1.0));
        v.extend(&self.mean);
        Ok(Tensor::from_vec(v, (3, d), &Device::Cpu)?)
    }

    /// Applies a step given by its effect on [`Self::rows`].
    fn apply(&mut self, out: &Tensor) -> Result<()> {
        let v = to_f64_vec(out)?;
        let d = self.mean.len();
        for i in 0..d {
            let b = v[i];
            let a = v[d + i] - b;
            let c = v[2 * d + i] - b;
            self.mean[i] = b;
            self.var[i] = a * a * self.var[i] + c * c;
        }
        Ok(())
    }
}

impl GaussianOracle {
    /// The exact W2 of the whole pipeline (model fitted as `model` says,
    /// sampled by `sampler`); `rng` draws the `N` data points when
    /// `model.samples` is set (nothing else is random).
    ///
    /// ```
    /// use fm_core::gaussian::GaussianOracle;
    /// use fm_core::gaussian_pipeline::{LinearScoreModel, PipelineSampler};
    /// use fm_core::scheduler::SchedulerKind;
    /// use fm_core::stochastic::{Diffusion, StochasticSampler};
    /// use fm_core::SeededRng;
    /// use fm_solvers::SdeMethod;
    ///
    /// # fn main() -> fm_core::Result<()> {
    /// let oracle = GaussianOracle::new(vec![0.0; 3], vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.25], SchedulerKind::CondOt)?;
    /// let sampler = StochasticSampler { diffusion: Diffusion::Sigma(1.0), method: SdeMethod::EulerMaruyama, steps: 100, noise_floor: 1e-3, corrector: None };
    /// let e = oracle.pipeline_error(&LinearScoreModel::default(), &PipelineSampler::Sde(sampler), &mut SeededRng::new(0))?;
    /// let split: f64 = e.contributions.as_ref().unwrap().iter().sum();
    /// assert!((split - e.w2 * e.w2).abs() < 1e-12 && e.w2 < 0.05);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Invalid sampler options (named), `N < 2`, a non-finite law.
    pub fn pipeline_error(
        &self,
        model: &LinearScoreModel,
        sampler: &PipelineSampler,
        rng: &mut SeededRng,
    ) -> Result<PipelineError> {
        let d = self.dim();
        let (basis, mean_hat) = match model.samples {
            None => (symmetric_eigen(&self.covariance(), d)?, self.mean().to_vec()),
            Some(n) => {
                if n < 2 {
                    return Err(Error::invalid("samples", format!("needs at least 2 data points, got {n}")));
                }
                let x = to_f64_vec(&self.sample_data(n, rng, DType::F64, &Device::Cpu)?)?;
                let (m, c) = sample_moments(&x, d, 0)?;
                (symmetric_eigen(&c, d)?, m)
            }
        };
        if let Some((k, eta)) = model.training {
            if k == 0 || !(eta.is_finite() && eta > 0.0) {
                return Err(Error::invalid(
                    "training",
                    format!("needs K ≥ 1 steps of size η > 0, got K = {k}, η = {eta}"),
                ));
            }
        }
        let projected = basis.to_eigenbasis(&mean_hat);
        let directions: Vec<Direction> = basis
            .values
            .iter()
            .zip(&projected)
            .map(|(&l, &m)| Direction { lambda: l.max(0.0), mean: m })
            .collect();
        let field =
            DiagonalModel { directions: &directions, scheduler: self.scheduler(), training: model.training };
        let scheduler = self.scheduler();
        let mut law = Law { mean: vec![0.0; d], var: vec![1.0; d] };
        let mut unit = UnitNoiseOnLastRow;
        let mut run = || -> Result<()> {
            match sampler {
                PipelineSampler::Sde(s) => {
                    s.validate(scheduler)?;
                    let grid = s.grid()?;
                    for w in grid.points().windows(2) {
                        let (out, _) =
                            s.predictor_step(&field, scheduler, &law.rows()?, w[0], w[1], &mut unit)?;
                        law.apply(&out)?;
                        if let Some(l) = s.corrector {
                            let step = l.step_ratio * scheduler.at(w[1]).sigma.powi(2);
                            for _ in 0..l.steps {
                                law.apply(&langevin_step(
                                    &field,
                                    scheduler,
                                    &law.rows()?,
                                    w[1],
                                    step,
                                    &mut unit,
                                )?)?;
                            }
                        }
                    }
                    if s.noise_floor > 0.0 {
                        law.apply(&denoise(&field, scheduler, &law.rows()?, 1.0 - s.noise_floor)?)?;
                    }
                }
                &PipelineSampler::Langevin { steps, step, noise_floor } => {
                    check_langevin(steps, step, noise_floor)?;
                    let t = 1.0 - noise_floor;
                    for _ in 0..steps {
                        law.apply(&langevin_step(&field, scheduler, &law.rows()?, t, step, &mut unit)?)?;
                    }
                    law.apply(&denoise(&field, scheduler, &law.rows()?, t)?)?;
                }
            }
            Ok(())
        };
        let nfe = match sampler {
            PipelineSampler::Sde(s) => s.nfe(),
            PipelineSampler::Langevin { steps, .. } => steps + 1,
        };
        let overflowed = match run() {
            Ok(()) => false,
            // The solver stops where the state overflows: an unstable scheme.
            Err(Error::Solver(fm_solvers::Error::NonFinite { .. })) => true,
            Err(e) => return Err(e),
        };
        if overflowed || law.mean.iter().chain(&law.var).any(|v| !v.is_finite()) {
            // The scheme is unstable for these options (a step too large for the
            // stiffest direction): the error is infinite, which is a result.
            return Ok(PipelineError {
                w2: f64::INFINITY,
                model_eigenvalues: basis.values.clone(),
                means: law.mean,
                variances: law.var,
                contributions: None,
                nfe,
            });
        }
        let (w2, contributions) = if model.samples.is_none() {
            let data_mean = basis.to_eigenbasis(self.mean());
            let terms: Vec<f64> = (0..d)
                .map(|i| {
                    (law.mean[i] - data_mean[i]).powi(2)
                        + (law.var[i].sqrt() - self.eigenvalues()[i].sqrt()).powi(2)
                })
                .collect();
            (terms.iter().sum::<f64>().sqrt(), Some(terms))
        } else {
            let mean = basis.from_eigenbasis(&law.mean);
            let cov =
                SymmetricEigen { values: law.var.clone(), vectors: basis.vectors.clone(), dim: d }.map(|v| v);
            (gaussian_w2(&mean, &cov, self.mean(), &self.covariance())?, None)
        };
        Ok(PipelineError {
            w2,
            model_eigenvalues: basis.values.clone(),
            means: law.mean,
            variances: law.var,
            contributions,
            nfe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trained_denoiser_is_k_gradient_steps_on_the_denoising_loss() {
        // ½E‖c + w(x_t − αμ) − x₁‖² with x_t = αx₁ + σε, x₁ ~ N(μ, λ):
        // ∂/∂w = w h − αλ (h = α²λ + σ²), ∂/∂c = c − μ; K steps of size η from 0.
        let scheduler = SchedulerKind::Cosine;
        let d = Direction { lambda: 2.5, mean: -0.7 };
        for (t, k, eta) in [(0.3, 1u64, 0.1), (0.6, 25, 0.05), (0.9, 400, 0.3)] {
            let c = scheduler.at(t);
            let h = c.alpha * c.alpha * d.lambda + c.sigma * c.sigma;
            let (mut w, mut b) = (0.0, 0.0);
            for _ in 0..k {
                let (gw, gb) = (w * h - c.alpha * d.lambda, b - d.mean);
                w -= eta * gw;
                b -= eta * gb;
            }
            let (w_closed, offset) = trained_denoiser(&c, &d, k, eta);
            assert!((w - w_closed).abs() < 1e-12, "t = {t}: {w} vs {w_closed}");
            // x̂₁ = b + w(x − αμ) = w x + (b − wαμ).
            assert!((b - w * c.alpha * d.mean - offset).abs() < 1e-12);
        }
    }
}
