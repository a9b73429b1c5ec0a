//! Stochastic sampling that keeps the marginals of a flow-matching model.
//!
//! For any diffusion coefficient `g(t) ≥ 0`, the SDE (`t = 0` noise → `t = 1` data)
//!
//! ```text
//! dx = [u(x, t) + ½ g(t)² ∇log p_t(x)] dt + g(t) dW
//! ```
//!
//! has the marginals `p_t` of the ODE `dx = u dt` (their Fokker–Planck
//! equations agree), so it samples the same distribution when `u` is the
//! marginal velocity; the score comes from the velocity itself
//! ([`crate::score`]): `½g²∇log p = (g²/2σ)·(α u − α̇ x)/Δ`. [`Diffusion`]
//! picks `g`: none (the ODE), a constant, proportional to `σ_t` (vanishing at
//! the data end), or the path's own `g² = 2σΔ/α` — the forward noising
//! process of the path run backwards, which for the VP scheduler is the
//! classical reverse-diffusion (VP-SDE) sampler; it is infinite where
//! `α = 0`, so it needs a path with `α_0 > 0` (VP) or a later start.
//!
//! The solve stops at `1 − δ` (the noise floor `δ`, where the score is still
//! finite) and ends with one denoising step `x ← E[x₁ | x_{1−δ}]`
//! (one more NFE). A Langevin corrector ([`Langevin`]) may follow every
//! predictor step: `x ← x + ε ∇log p_t(x) + √(2ε) ξ` with `ε = r σ_t²`.
//! [`StochasticSampler::langevin_only`] is unadjusted Langevin at one noise
//! level `1 − δ` from the source, then the same denoising step.
//!
//! Every draw comes from the caller's [`SeededRng`].

use std::fmt;
use std::str::FromStr;

use candle::Tensor;
use fm_solvers::{EulerMaruyama, NoiseSource, SdeFunction, SdeMethod, SdeSolver, TimeGrid};
use serde::{Deserialize, Serialize};

use crate::scheduler::{Scheduler, SchedulerKind, SchedulerOutput};
use crate::score::{score_time, velocity_to_denoiser, velocity_to_score};
use crate::{time_like, Error, Result, SeededRng, VelocityField};

/// The diffusion coefficient `g(t)` of a marginal-preserving sampler.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", content = "scale", rename_all = "kebab-case")]
pub enum Diffusion {
    /// `g = 0`: the probability-flow ODE.
    #[default]
    None,
    /// `g = c`.
    Constant(f64),
    /// `g = c·σ_t` (no noise at the data end).
    Sigma(f64),
    /// The path's own `g² = 2σΔ/α` (the reverse VP-SDE on a VP path).
    Path,
}

impl Diffusion {
    /// The spellings [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &["none", "constant:C", "sigma:C", "path"];

    /// `k = g²/(2σ)`, the weight of `(α u − α̇ x)/Δ` in the drift, from the
    /// coefficients at the score's (clamped) time.
    pub fn drift_weight(&self, c: &SchedulerOutput) -> f64 {
        match *self {
            Diffusion::None => 0.0,
            Diffusion::Constant(g) => g * g / (2.0 * c.sigma),
            Diffusion::Sigma(s) => 0.5 * s * s * c.sigma,
            Diffusion::Path => c.delta() / c.alpha,
        }
    }

    /// `g(t)` from the coefficients at `t`.
    pub fn g(&self, c: &SchedulerOutput) -> f64 {
        match *self {
            Diffusion::None => 0.0,
            Diffusion::Constant(g) => g,
            Diffusion::Sigma(s) => s * c.sigma,
            Diffusion::Path => (2.0 * c.sigma * c.delta() / c.alpha).max(0.0).sqrt(),
        }
    }

    /// Whether this is the ODE (`g = 0`).
    pub fn is_none(&self) -> bool {
        matches!(self, Diffusion::None)
    }
}

impl fmt::Display for Diffusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diffusion::None => f.write_str("none"),
            Diffusion::Constant(c) => write!(f, "constant:{c}"),
            Diffusion::Sigma(c) => write!(f, "sigma:{c}"),
            Diffusion::Path => f.write_str("path"),
        }
    }
}

impl FromStr for Diffusion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let scale = |rest: &str| -> Result<f64> {
            match rest.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(Error::invalid(
                    "diffusion",
                    format!("`{s}`: the scale after `:` must be a finite number ≥ 0"),
                )),
            }
        };
        match lower.as_str() {
            "none" | "ode" | "0" => Ok(Diffusion::None),
            "path" | "vp" => Ok(Diffusion::Path),
            other => {
                if let Some(rest) = other.strip_prefix("constant:") {
                    Ok(Diffusion::Constant(scale(rest)?))
                } else if let Some(rest) = other.strip_prefix("sigma:") {
                    Ok(Diffusion::Sigma(scale(rest)?))
                } else {
                    Err(Error::invalid(
                        "diffusion",
                        format!("unknown diffusion `{s}`; valid: {}", Self::NAMES.join(", ")),
                    ))
                }
            }
        }
    }
}

/// A Langevin corrector: `steps` unadjusted Langevin steps of size
/// `ε = step_ratio · σ_t²` at the current noise level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Langevin {
    /// Langevin steps per use.
    pub steps: usize,
    /// `r` in `ε = r σ_t²`.
    pub step_ratio: f64,
}

/// The drift of the marginal-preserving SDE over a velocity field.
struct MarginalSde<'a> {
    field: &'a dyn VelocityField,
    scheduler: SchedulerKind,
    diffusion: Diffusion,
}

fn field_error(e: Error) -> fm_solvers::Error {
    fm_solvers::Error::Field(Box::new(e))
}

impl MarginalSde<'_> {
    fn drift_at(&self, t: f64, x: &Tensor) -> Result<Tensor> {
        let tt = time_like(x, t)?;
        let u = self.field.velocity(x, &tt)?;
        if self.diffusion.is_none() {
            return Ok(u);
        }
        let c = self.scheduler.at(score_time(t));
        let k = self.diffusion.drift_weight(&c);
        // u + k (α u − α̇ x)/Δ
        let a = 1.0 + k * c.alpha / c.delta();
        let b = -k * c.d_alpha / c.delta();
        Ok(((u * a)? + (x * b)?)?)
    }
}

impl SdeFunction for MarginalSde<'_> {
    fn drift(&self, t: f64, y: &Tensor) -> fm_solvers::Result<Tensor> {
        self.drift_at(t, y).map_err(field_error)
    }
    fn diffusion(&self, t: f64) -> f64 {
        self.diffusion.g(&self.scheduler.at(t))
    }
}

/// Unadjusted Langevin at a fixed time: `dx = ∇log p_t(x) dτ + √2 dW` by Euler–Maruyama.
struct LangevinSde<'a> {
    field: &'a dyn VelocityField,
    scheduler: SchedulerKind,
    t: f64,
}

impl SdeFunction for LangevinSde<'_> {
    fn drift(&self, _tau: f64, y: &Tensor) -> fm_solvers::Result<Tensor> {
        let score = || -> Result<Tensor> {
            let tt = time_like(y, self.t)?;
            let u = self.field.velocity(y, &tt)?;
            velocity_to_score(&self.scheduler, &u, y, &tt)
        };
        score().map_err(field_error)
    }
    fn diffusion(&self, _tau: f64) -> f64 {
        std::f64::consts::SQRT_2
    }
}

impl NoiseSource for SeededRng {
    fn standard_normal(&mut self, like: &Tensor) -> fm_solvers::Result<Tensor> {
        self.normal(like.dims(), like.dtype(), like.device()).map_err(field_error)
    }
}

/// What a stochastic sampler returns.
#[derive(Debug, Clone)]
pub struct StochasticSample {
    /// The samples at `t = 1` (after the final denoising step when `δ > 0`).
    pub state: Tensor,
    /// The state at every predictor grid time (start included), then the
    /// denoised output, when requested.
    pub trajectory: Vec<Tensor>,
    /// The times of `trajectory` (the denoised output at `t = 1`).
    pub times: Vec<f64>,
    /// Velocity-field evaluations, corrector and denoising step included.
    pub nfe: usize,
}

/// A marginal-preserving SDE sampler (or, with [`Diffusion::None`] and
/// `δ = 0`, the probability-flow ODE by Euler or Heun).
///
/// ```
/// use candle::{DType, Device};
/// use fm_core::gaussian::GaussianOracle;
/// use fm_core::scheduler::SchedulerKind;
/// use fm_core::stochastic::{Diffusion, StochasticSampler};
/// use fm_core::SeededRng;
/// use fm_solvers::SdeMethod;
///
/// # fn main() -> fm_core::Result<()> {
/// let oracle = GaussianOracle::new(vec![2.0], vec![0.25], SchedulerKind::CondOt)?;
/// let sampler = StochasticSampler {
///     diffusion: Diffusion::Sigma(1.0),
///     method: SdeMethod::EulerMaruyama,
///     steps: 200,
///     noise_floor: 0.01,
///     corrector: None,
/// };
/// let mut rng = SeededRng::new(0);
/// let x0 = rng.normal((20_000, 1), DType::F64, &Device::Cpu)?;
/// let out = sampler.sample(&oracle, SchedulerKind::CondOt, &x0, &mut rng, false)?;
/// let x = out.state.flatten_all()?.to_vec1::<f64>()?;
/// let mean = x.iter().sum::<f64>() / x.len() as f64;
/// assert!((mean - 2.0).abs() < 0.02);
/// assert_eq!(out.nfe, 201); // 200 steps and the final denoising step
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochasticSampler {
    /// The diffusion coefficient.
    pub diffusion: Diffusion,
    /// The predictor's scheme.
    pub method: SdeMethod,
    /// Predictor steps on the uniform grid `0 → 1 − δ`.
    pub steps: usize,
    /// `δ ∈ [0, 1)`: the solve stops at `1 − δ`, then one denoising step.
    pub noise_floor: f64,
    /// An optional Langevin corrector after every predictor step.
    pub corrector: Option<Langevin>,
}

impl StochasticSampler {
    /// Checks the options against the path: `steps ≥ 1`, `0 ≤ δ < 1`, a
    /// constant diffusion needs `δ > 0` (its score term is infinite at
    /// `σ = 0`), the path's own diffusion needs `α_0 > 0`, a corrector a
    /// positive finite ratio and `δ > 0`.
    pub fn validate(&self, scheduler: SchedulerKind) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::invalid("steps", "the sampler needs at least 1 step"));
        }
        if !(self.noise_floor.is_finite() && (0.0..1.0).contains(&self.noise_floor)) {
            return Err(Error::invalid(
                "noise-floor",
                format!("must be in [0, 1), got {}", self.noise_floor),
            ));
        }
        match self.diffusion {
            Diffusion::Constant(g) | Diffusion::Sigma(g) if !(g.is_finite() && g >= 0.0) => {
                return Err(Error::invalid(
                    "diffusion",
                    format!("the scale must be finite and ≥ 0, got {g}"),
                ));
            }
            Diffusion::Constant(g) if g > 0.0 && self.noise_floor == 0.0 => {
                return Err(Error::invalid(
                    "noise-floor",
                    "a constant diffusion needs a noise floor δ > 0: its score term is infinite at t = 1",
                ));
            }
            Diffusion::Path if scheduler.at(0.0).alpha < 1e-3 => {
                return Err(Error::invalid(
                    "diffusion",
                    format!(
                        "the path's own diffusion g² = 2σΔ/α is infinite where α = 0, and this model's path \
                         ({scheduler}) starts at α_0 = {}; use it with a vp path (--scheduler vp), or use \
                         sigma:C / constant:C",
                        scheduler.at(0.0).alpha
                    ),
                ));
            }
            _ => {}
        }
        if let Some(l) = self.corrector {
            if l.steps == 0 || !(l.step_ratio.is_finite() && l.step_ratio > 0.0) {
                return Err(Error::invalid(
                    "langevin",
                    format!("needs ≥ 1 step and a ratio > 0, got {} steps, ratio {}", l.steps, l.step_ratio),
                ));
            }
            if self.noise_floor == 0.0 {
                return Err(Error::invalid("noise-floor", "a Langevin corrector needs a noise floor δ > 0"));
            }
        }
        Ok(())
    }

    /// The predictor's grid, `0 → 1 − δ` in `steps` equal steps.
    pub fn grid(&self) -> Result<TimeGrid> {
        Ok(TimeGrid::uniform(0.0, 1.0 - self.noise_floor, self.steps)?)
    }

    /// NFE of one sample: predictor, corrector, denoising step.
    pub fn nfe(&self) -> usize {
        let predictor = self.steps * self.method.as_solver().evals_per_step();
        let corrector = self.corrector.map_or(0, |l| l.steps * self.steps);
        predictor + corrector + usize::from(self.noise_floor > 0.0)
    }

    /// Samples from `x0` (drawn from the model's source) with `field` on the
    /// path of `scheduler`; Brownian increments from `noise` (a [`SeededRng`]).
    ///
    /// # Errors
    ///
    /// [`Self::validate`]'s, the field's, and a non-finite state.
    pub fn sample(
        &self,
        field: &dyn VelocityField,
        scheduler: SchedulerKind,
        x0: &Tensor,
        noise: &mut dyn NoiseSource,
        record_trajectory: bool,
    ) -> Result<StochasticSample> {
        self.validate(scheduler)?;
        let grid = self.grid()?;
        let mut x = x0.clone();
        let mut trajectory = Vec::new();
        if record_trajectory {
            trajectory.push(x.clone());
        }
        let mut nfe = 0;
        for w in grid.points().windows(2) {
            let (y, n) = self.predictor_step(field, scheduler, &x, w[0], w[1], noise)?;
            x = y;
            nfe += n;
            if let Some(l) = self.corrector {
                let step = l.step_ratio * scheduler.at(w[1]).sigma.powi(2);
                for _ in 0..l.steps {
                    x = langevin_step(field, scheduler, &x, w[1], step, noise)?;
                    nfe += 1;
                }
            }
            if record_trajectory {
                trajectory.push(x.clone());
            }
        }
        let mut times = grid.points().to_vec();
        if self.noise_floor > 0.0 {
            x = denoise(field, scheduler, &x, 1.0 - self.noise_floor)?;
            nfe += 1;
            if record_trajectory {
                trajectory.push(x.clone());
                times.push(1.0);
            }
        }
        if !record_trajectory {
            times.clear();
        }
        Ok(StochasticSample { state: x, trajectory, times, nfe })
    }

    /// One predictor step from `t0` to `t1` (no corrector); returns the
    /// state and the NFE. [`Self::sample`] is these steps, the corrector's
    /// [`langevin_step`]s and a final [`denoise`].
    ///
    /// # Errors
    ///
    /// The field's, and a non-finite state.
    pub fn predictor_step(
        &self,
        field: &dyn VelocityField,
        scheduler: SchedulerKind,
        x: &Tensor,
        t0: f64,
        t1: f64,
        noise: &mut dyn NoiseSource,
    ) -> Result<(Tensor, usize)> {
        let sde = MarginalSde { field, scheduler, diffusion: self.diffusion };
        let step = self.method.as_solver().solve(&sde, x, &TimeGrid::from_points(vec![t0, t1])?, noise)?;
        Ok((step.state, step.stats.nfe))
    }

    /// Unadjusted Langevin at the single noise level `t = 1 − δ`: `steps`
    /// steps of size `step` from `x0`, then the denoising step.
    ///
    /// # Errors
    ///
    /// Bad options (named), the field's errors, a non-finite state.
    pub fn langevin_only(
        field: &dyn VelocityField,
        scheduler: SchedulerKind,
        x0: &Tensor,
        steps: usize,
        step: f64,
        noise_floor: f64,
        noise: &mut dyn NoiseSource,
    ) -> Result<StochasticSample> {
        check_langevin(steps, step, noise_floor)?;
        let t = 1.0 - noise_floor;
        let mut x = x0.clone();
        for _ in 0..steps {
            x = langevin_step(field, scheduler, &x, t, step, noise)?;
        }
        let out = denoise(field, scheduler, &x, t)?;
        Ok(StochasticSample { state: out, trajectory: Vec::new(), times: Vec::new(), nfe: steps + 1 })
    }
}

/// Checks Langevin options: `steps ≥ 1`, `step > 0`, `δ ∈ (0, 1)`.
pub fn check_langevin(steps: usize, step: f64, noise_floor: f64) -> Result<()> {
    if !(noise_floor.is_finite() && noise_floor > 0.0 && noise_floor < 1.0) {
        return Err(Error::invalid("noise-floor", format!("Langevin needs δ in (0, 1), got {noise_floor}")));
    }
    if steps == 0 || !(step.is_finite() && step > 0.0) {
        return Err(Error::invalid("langevin", format!("needs ≥ 1 step of size > 0, got {steps} of {step}")));
    }
    Ok(())
}

/// One unadjusted Langevin step at time `t`:
/// `x + ε ∇log p_t(x) + √(2ε) ξ` (Euler–Maruyama on `dx = ∇log p_t dτ + √2 dW`), one NFE.
///
/// # Errors
///
/// The field's, and a non-finite state.
pub fn langevin_step(
    field: &dyn VelocityField,
    scheduler: SchedulerKind,
    x: &Tensor,
    t: f64,
    step: f64,
    noise: &mut dyn NoiseSource,
) -> Result<Tensor> {
    let sde = LangevinSde { field, scheduler, t };
    Ok(EulerMaruyama.solve(&sde, x, &TimeGrid::from_points(vec![0.0, step])?, noise)?.state)
}

/// The denoising step `E[x₁ | x_t = x] = (σ u − σ̇ x)/Δ` from the field, one NFE.
///
/// # Errors
///
/// The field's.
pub fn denoise(field: &dyn VelocityField, scheduler: SchedulerKind, x: &Tensor, t: f64) -> Result<Tensor> {
    let tt = time_like(x, t)?;
    let u = field.velocity(x, &tt)?;
    velocity_to_denoiser(&scheduler, &u, x, &tt)
}
