//! The score view of an affine path: posterior means and `∇ log p_t` from
//! any prediction (docs/reference/paths-and-losses.md).
//!
//! On `x_t = α_t x₁ + σ_t x₀` (`t = 0` noise), a velocity `u = α̇ x̂₁ + σ̇ x̂₀`
//! and the point `x = α x̂₁ + σ x̂₀` give both posterior means, with
//! `Δ = α̇σ − σ̇α > 0`:
//!
//! ```text
//! E[x₀ | x_t = x] = (α̇ x − α u) / Δ        (= (α u − α̇ x)/(α σ̇ − α̇ σ))
//! E[x₁ | x_t = x] = (σ u − σ̇ x) / Δ        (the denoiser)
//! ∇ log p_t(x)    = −E[x₀ | x_t = x] / σ = (α u − α̇ x) / (σ Δ)
//! ```
//!
//! The two means are regular on all of `[0, 1]`; the score is singular at
//! `σ = 0` (`t = 1`), where its coefficients are evaluated at `t` clamped to
//! `1 − CONVERSION_EPS`. Every parametrization converts ([`score_coefficients`]):
//! a noise prediction `ε̂` gives `−ε̂/σ`, a data prediction `x̂₁` gives
//! `(α x̂₁ − x)/σ²`; a network that outputs the score itself is the noise
//! parametrization divided by `−σ`. Back from a score: `u = (α̇/α) x + (σΔ/α) s`
//! ([`score_to_velocity`], singular at `α = 0` and clamped there).

use candle::Tensor;

use crate::parametrization::{per_sample, times_for, CONVERSION_EPS};
use crate::path::Prediction;
use crate::scheduler::{Scheduler, SchedulerOutput};
use crate::{Result, VelocityField};

/// `(a, b)` with `∇ log p_t(x) = a·x + b·out` for a network output `out` of
/// kind `kind`, from the scheduler's coefficients `c` at a time where `σ > 0`.
pub fn score_coefficients(kind: Prediction, c: &SchedulerOutput) -> (f64, f64) {
    match kind {
        Prediction::Velocity => (-c.d_alpha / (c.sigma * c.delta()), c.alpha / (c.sigma * c.delta())),
        Prediction::Epsilon => (0.0, -1.0 / c.sigma),
        Prediction::Target => (-1.0 / (c.sigma * c.sigma), c.alpha / (c.sigma * c.sigma)),
    }
}

/// The time at which score coefficients are evaluated: `t` clamped to
/// `1 − CONVERSION_EPS` (the score is singular at `σ = 0`).
pub fn score_time(t: f64) -> f64 {
    t.min(1.0 - CONVERSION_EPS)
}

fn affine<S: Scheduler>(
    scheduler: &S,
    x: &Tensor,
    out: &Tensor,
    t: &Tensor,
    coefficients: impl Fn(f64, &SchedulerOutput) -> (f64, f64),
) -> Result<Tensor> {
    let (a, b): (Vec<f64>, Vec<f64>) =
        times_for(x, t)?.into_iter().map(|ti| coefficients(ti, &scheduler.at(ti))).unzip();
    Ok((x.broadcast_mul(&per_sample(a, x)?)? + out.broadcast_mul(&per_sample(b, x)?)?)?)
}

/// `∇ log p_t(x)` from a network output of kind `kind` at `(x, t)`.
///
/// # Shapes
/// - `out`, `x`: `(b, ...)`; `t`: `(b,)`; returns the shape of `x`
pub fn output_to_score<S: Scheduler>(
    scheduler: &S,
    kind: Prediction,
    out: &Tensor,
    x: &Tensor,
    t: &Tensor,
) -> Result<Tensor> {
    affine(scheduler, x, out, t, |ti, _| score_coefficients(kind, &scheduler.at(score_time(ti))))
}

/// `∇ log p_t(x)` from a velocity `u` at `(x, t)`.
pub fn velocity_to_score<S: Scheduler>(scheduler: &S, u: &Tensor, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    output_to_score(scheduler, Prediction::Velocity, u, x, t)
}

/// The velocity `u = (α̇/α) x + (σΔ/α) s` of a score `s` (coefficients at
/// `t ≥ CONVERSION_EPS`: singular at `α = 0`).
pub fn score_to_velocity<S: Scheduler>(scheduler: &S, s: &Tensor, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    affine(scheduler, x, s, t, |ti, _| {
        let c = scheduler.at(ti.max(CONVERSION_EPS));
        (c.d_alpha / c.alpha, c.sigma * c.delta() / c.alpha)
    })
}

/// The posterior mean of the source, `E[x₀ | x_t = x] = (α̇ x − α u)/Δ`.
pub fn velocity_to_source_mean<S: Scheduler>(
    scheduler: &S,
    u: &Tensor,
    x: &Tensor,
    t: &Tensor,
) -> Result<Tensor> {
    affine(scheduler, x, u, t, |_, c| (c.d_alpha / c.delta(), -c.alpha / c.delta()))
}

/// The denoiser `E[x₁ | x_t = x] = (σ u − σ̇ x)/Δ`, regular on `[0, 1]`.
pub fn velocity_to_denoiser<S: Scheduler>(
    scheduler: &S,
    u: &Tensor,
    x: &Tensor,
    t: &Tensor,
) -> Result<Tensor> {
    affine(scheduler, x, u, t, |_, c| (-c.d_sigma / c.delta(), c.sigma / c.delta()))
}

/// A velocity field seen as a score: `∇ log p_t` of the marginals its flow
/// transports (exact when the field is the marginal velocity of the path).
#[derive(Debug, Clone, Copy)]
pub struct ScoreOf<'a, V: ?Sized, S> {
    /// The velocity field.
    pub field: &'a V,
    /// The path's scheduler.
    pub scheduler: S,
}

impl<V: VelocityField + ?Sized, S: Scheduler> ScoreOf<'_, V, S> {
    /// `∇ log p_t(x)` (`x`: `(b, ...)`, `t`: `(b,)`).
    pub fn score(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let u = self.field.velocity(x, t)?;
        velocity_to_score(&self.scheduler, &u, x, t)
    }
}
