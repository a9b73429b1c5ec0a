//! Loss weightings over `t`: the weights `w(t)` that make a regression on one
//! parametrization equal, sample by sample, to the usual loss of another
//! (docs/reference/paths-and-losses.md, "Loss weightings").
//!
//! On an affine path, the errors of the three predictions and of the
//! diffusion `v`-prediction (Salimans & Ho, `v = α ε − σ x₁`) are all
//! multiples of the data (denoiser) error `x̂₁ − x₁`:
//!
//! ```text
//! ‖x̂₁ − x₁‖     = (σ/σ)·e       g_data     = σ
//! ‖ε̂ − ε‖       = (α/σ)·e       g_noise    = α
//! ‖û − u‖       = (Δ/σ)·e       g_velocity = Δ = α̇σ − σ̇α
//! ‖v̂ − v‖       = ((α²+σ²)/σ)·e g_v        = α² + σ²
//! ```
//!
//! with `e = ‖x̂₁ − x₁‖`. So a network predicting `P` trained with weight
//! `w(t) = (g_W / g_P)²` minimises exactly the unweighted `W`-loss:
//! e.g. on CondOT, a velocity network with the `noise` weighting `t²`
//! minimises DDPM's `‖ε̂ − ε‖²`, and with the `data` weighting `(1 − t)²`
//! the denoising loss `‖x̂₁ − x₁‖²`; a data network with the `velocity`
//! weighting `(1 − t)⁻²` minimises the flow-matching loss. `uniform` is
//! `w = 1` in the network's own space. Weights are evaluated at the time
//! clamped as in [`crate::parametrization::CONVERSION_EPS`] on the singular side.

use std::fmt;
use std::str::FromStr;

use candle::Tensor;
use serde::{Deserialize, Serialize};

use crate::parametrization::{per_sample, times_for, CONVERSION_EPS};
use crate::path::{AffinePath, Prediction};
use crate::scheduler::{Scheduler, SchedulerOutput};
use crate::{Error, Result};

/// Which loss the weighted regression equals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    /// `w = 1`: the plain MSE of whatever the network predicts.
    #[default]
    Uniform,
    /// The flow-matching (velocity) loss `‖û − u‖²`.
    Velocity,
    /// The noise-prediction (DDPM, `ε`) loss `‖ε̂ − ε‖²`.
    Noise,
    /// The denoising (data, `x₁`/`x₀`-prediction) loss `‖x̂₁ − x₁‖²`.
    Data,
    /// The diffusion `v`-prediction loss `‖v̂ − v‖²`, `v = α ε − σ x₁`.
    VPrediction,
}

/// The factor `g_K(t)` with `‖error of K‖ = (g_K/σ)·‖x̂₁ − x₁‖` (see the module docs).
fn error_scale(space: Weighting, c: &SchedulerOutput) -> f64 {
    match space {
        Weighting::Uniform | Weighting::Data => c.sigma,
        Weighting::Noise => c.alpha,
        Weighting::Velocity => c.delta(),
        Weighting::VPrediction => c.alpha * c.alpha + c.sigma * c.sigma,
    }
}

/// The weighting space that a parametrization's own error lives in.
fn space_of(p: Prediction) -> Weighting {
    match p {
        Prediction::Velocity => Weighting::Velocity,
        Prediction::Epsilon => Weighting::Noise,
        Prediction::Target => Weighting::Data,
    }
}

impl Weighting {
    /// The names [`FromStr`] accepts (canonical ones first).
    pub const NAMES: &'static [&'static str] = &["uniform", "velocity", "noise", "data", "v-prediction"];

    /// The canonical name.
    pub fn name(&self) -> &'static str {
        match self {
            Weighting::Uniform => "uniform",
            Weighting::Velocity => "velocity",
            Weighting::Noise => "noise",
            Weighting::Data => "data",
            Weighting::VPrediction => "v-prediction",
        }
    }

    /// The weight `w(t) = (g_W/g_P)²` for a network predicting `p`, from the
    /// scheduler's coefficients at `t` (unclamped: may be infinite at the ends).
    pub fn weight_from(&self, p: Prediction, c: &SchedulerOutput) -> f64 {
        if *self == Weighting::Uniform || *self == space_of(p) {
            return 1.0;
        }
        let r = error_scale(*self, c) / error_scale(space_of(p), c);
        r * r
    }

    /// The weight at time `t` on `path`, evaluated at `t` clamped to
    /// `[CONVERSION_EPS, 1 − CONVERSION_EPS]`.
    pub fn weight<S: Scheduler>(&self, path: &AffinePath<S>, p: Prediction, t: f64) -> f64 {
        let tc = t.clamp(CONVERSION_EPS, 1.0 - CONVERSION_EPS);
        self.weight_from(p, &path.scheduler.at(tc))
    }

    /// Per-sample weights shaped `(b, 1, …, 1)` to broadcast against `like` (`(b, ...)`).
    ///
    /// # Shapes
    /// - `like`: `(b, ...)`, `t`: `(b,)`
    pub fn weights<S: Scheduler>(
        &self,
        path: &AffinePath<S>,
        p: Prediction,
        like: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        let w = times_for(like, t)?.into_iter().map(|ti| self.weight(path, p, ti)).collect();
        per_sample(w, like)
    }
}

impl fmt::Display for Weighting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Weighting {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uniform" | "none" | "constant" => Ok(Weighting::Uniform),
            "velocity" | "fm" | "flow-matching" => Ok(Weighting::Velocity),
            "noise" | "epsilon" | "eps" | "ddpm" => Ok(Weighting::Noise),
            "data" | "x1" | "x0" | "denoising" | "target" => Ok(Weighting::Data),
            "v-prediction" | "v" | "vpred" | "v-pred" => Ok(Weighting::VPrediction),
            other => Err(Error::invalid(
                "weighting",
                format!("unknown weighting `{other}`; valid: {}", Self::NAMES.join(", ")),
            )),
        }
    }
}

/// The weighted regression loss `mean_i w(t_i) · mean_d (out − target)²`:
/// per-sample squared errors, weighted, averaged over coordinates and batch.
///
/// # Shapes
/// - `out`, `target`: `(b, ...)`, `weights`: `(b, 1, …)`; returns a scalar
pub fn weighted_mse(out: &Tensor, target: &Tensor, weights: &Tensor) -> Result<Tensor> {
    if out.dims() != target.dims() {
        return Err(Error::Shape(format!("output {:?} vs target {:?}", out.dims(), target.dims())));
    }
    Ok((out - target)?.sqr()?.broadcast_mul(weights)?.mean_all()?)
}
