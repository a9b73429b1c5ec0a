//! Stochastic differential equations with additive noise:
//! `dy = f(t, y) dt + g(t) dW`.
//!
//! The diffusion `g(t)` is a scalar shared by every coordinate (diagonal,
//! isotropic noise), which is the case of every sampler of flow matching and
//! diffusion models. The Brownian increments come from a [`NoiseSource`] the
//! caller supplies, so runs are reproducible with the caller's own seeded
//! generator; this crate draws nothing itself.
//!
//! Schemes, one step per grid interval `h = t_{k+1} − t_k` (grids may run
//! backwards; the noise is scaled by `√|h|`), `ξ ~ N(0, I)` one draw per step:
//!
//! ```text
//! Euler–Maruyama   y' = y + h f(t, y) + g(t) √|h| ξ                      (weak order 1, 1 NFE)
//! stochastic Heun  ỹ  = y + h f(t, y) + g(t) √|h| ξ
//!                  y' = y + h/2 [f(t, y) + f(t + h, ỹ)] + g(t) √|h| ξ      (2 NFE)
//! ```
//!
//! For additive noise the stochastic Heun scheme has strong order 1 and, on
//! linear drifts, weak order 2 (the tests measure both weak orders on an
//! Ornstein–Uhlenbeck process, exactly: the schemes are affine in `(y, ξ)`
//! there, so the output law follows from the maps read off one step at a time).
//!
//! ```
//! use candle::{Device, Tensor};
//! use fm_solvers::{EulerMaruyama, SdeSolver, TimeGrid};
//!
//! # fn main() -> fm_solvers::Result<()> {
//! // dy = -y dt + 0 dW is the ODE dy/dt = -y.
//! let drift = |_t: f64, y: &Tensor| -> fm_solvers::Result<Tensor> { Ok(y.neg()?) };
//! let sde = (drift, |_t: f64| 0.0);
//! let mut noise = |y: &Tensor| -> fm_solvers::Result<Tensor> { Ok(y.zeros_like()?) };
//! let y0 = Tensor::new(&[1.0f64], &Device::Cpu)?;
//! let sol = EulerMaruyama.solve(&sde, &y0, &TimeGrid::uniform(0.0, 1.0, 1000)?, &mut noise)?;
//! assert!((sol.state.to_vec1::<f64>()?[0] - (-1.0f64).exp()).abs() < 1e-3);
//! assert_eq!(sol.stats.nfe, 1000);
//! # Ok(())
//! # }
//! ```

use candle::Tensor;

use crate::{Error, Result, Solution, SolveStats, TimeGrid};

/// The coefficients of `dy = f(t, y) dt + g(t) dW`.
///
/// A pair `(drift, diffusion)` of closures `Fn(f64, &Tensor) -> Result<Tensor>`
/// and `Fn(f64) -> f64` implements this trait.
pub trait SdeFunction {
    /// The drift `f(t, y)`, of the shape and dtype of `y`.
    fn drift(&self, t: f64, y: &Tensor) -> Result<Tensor>;
    /// The scalar diffusion coefficient `g(t) ≥ 0`.
    fn diffusion(&self, t: f64) -> f64;
}

impl<F, G> SdeFunction for (F, G)
where
    F: Fn(f64, &Tensor) -> Result<Tensor>,
    G: Fn(f64) -> f64,
{
    fn drift(&self, t: f64, y: &Tensor) -> Result<Tensor> {
        (self.0)(t, y)
    }
    fn diffusion(&self, t: f64) -> f64 {
        (self.1)(t)
    }
}

/// Where the Brownian increments come from: standard normal draws of a
/// state's shape and dtype, one call per step.
///
/// Closures `FnMut(&Tensor) -> Result<Tensor>` implement this trait.
pub trait NoiseSource {
    /// A tensor of independent `N(0, 1)` draws shaped like `like`.
    fn standard_normal(&mut self, like: &Tensor) -> Result<Tensor>;
}

impl<F> NoiseSource for F
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    fn standard_normal(&mut self, like: &Tensor) -> Result<Tensor> {
        self(like)
    }
}

/// A fixed-step integrator of an SDE with additive noise over a [`TimeGrid`].
///
/// One noise draw per grid interval; the NFE in [`SolveStats`] counts drift
/// evaluations. The trait is object safe.
pub trait SdeSolver {
    /// Integrates from `grid.start()` to `grid.end()`, starting at `y0`.
    ///
    /// With `record_trajectory`, [`Solution::trajectory`] holds the state at
    /// every grid time (the start included).
    ///
    /// # Errors
    ///
    /// Errors of the drift or of the noise source, tensor errors, a negative
    /// or non-finite diffusion coefficient ([`Error::InvalidOption`]), and
    /// [`Error::NonFinite`] when the state stops being finite.
    fn integrate(
        &self,
        f: &dyn SdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        noise: &mut dyn NoiseSource,
        record_trajectory: bool,
    ) -> Result<Solution>;

    /// Integrates without recording the trajectory.
    ///
    /// # Errors
    ///
    /// As [`integrate`](Self::integrate).
    fn solve(
        &self,
        f: &dyn SdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        noise: &mut dyn NoiseSource,
    ) -> Result<Solution> {
        self.integrate(f, y0, grid, noise, false)
    }

    /// Drift evaluations per step.
    fn evals_per_step(&self) -> usize;

    /// The scheme's short name (`"euler-maruyama"`, `"stochastic-heun"`).
    fn name(&self) -> &'static str;
}

/// Euler–Maruyama: `y + h f(t, y) + g(t) √|h| ξ`; weak order 1, 1 NFE per step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EulerMaruyama;

/// Stochastic Heun (the additive-noise trapezoidal predictor–corrector);
/// weak order 2 on linear drifts, 2 NFE per step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StochasticHeun;

fn diffusion_at(f: &dyn SdeFunction, t: f64) -> Result<f64> {
    let g = f.diffusion(t);
    if !(g.is_finite() && g >= 0.0) {
        return Err(Error::InvalidOption {
            name: "diffusion",
            reason: format!("g(t) must be finite and non-negative, got g({t}) = {g}"),
        });
    }
    Ok(g)
}

/// The shared driver: `step(f, t, t_next, y, noise_term)` per interval.
fn integrate_with(
    evals_per_step: usize,
    f: &dyn SdeFunction,
    y0: &Tensor,
    grid: &TimeGrid,
    noise: &mut dyn NoiseSource,
    record_trajectory: bool,
    step: impl Fn(&dyn SdeFunction, f64, f64, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Solution> {
    let times = grid.points();
    let mut trajectory = Vec::new();
    if record_trajectory {
        trajectory.reserve_exact(times.len());
        trajectory.push(y0.clone());
    }
    let mut y = y0.clone();
    for w in times.windows(2) {
        let (t, t_next) = (w[0], w[1]);
        let g = diffusion_at(f, t)?;
        let noise_term = if g == 0.0 {
            y.zeros_like()?
        } else {
            let xi = noise.standard_normal(&y)?;
            if xi.dims() != y.dims() {
                return Err(Error::Field(
                    format!(
                        "the noise source returned shape {:?} for a state of shape {:?}",
                        xi.dims(),
                        y.dims()
                    )
                    .into(),
                ));
            }
            (xi.to_dtype(y.dtype())? * (g * (t_next - t).abs().sqrt()))?
        };
        y = step(f, t, t_next, &y, &noise_term)?;
        let finite = y.flatten_all()?.to_dtype(candle::DType::F64)?.abs()?.max(0)?.to_scalar::<f64>()?;
        if !finite.is_finite() {
            return Err(Error::NonFinite { t: t_next });
        }
        if record_trajectory {
            trajectory.push(y.clone());
        }
    }
    let steps = grid.steps();
    Ok(Solution {
        state: y,
        trajectory,
        times: times.to_vec(),
        stats: SolveStats { nfe: steps * evals_per_step, accepted_steps: steps, rejected_steps: 0 },
    })
}

impl SdeSolver for EulerMaruyama {
    fn integrate(
        &self,
        f: &dyn SdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        noise: &mut dyn NoiseSource,
        record_trajectory: bool,
    ) -> Result<Solution> {
        integrate_with(1, f, y0, grid, noise, record_trajectory, |f, t, t_next, y, dw| {
            let drift = f.drift(t, y)?;
            Ok(((y + (drift * (t_next - t))?)? + dw)?)
        })
    }

    fn evals_per_step(&self) -> usize {
        1
    }

    fn name(&self) -> &'static str {
        "euler-maruyama"
    }
}

impl SdeSolver for StochasticHeun {
    fn integrate(
        &self,
        f: &dyn SdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        noise: &mut dyn NoiseSource,
        record_trajectory: bool,
    ) -> Result<Solution> {
        integrate_with(2, f, y0, grid, noise, record_trajectory, |f, t, t_next, y, dw| {
            let h = t_next - t;
            let k1 = f.drift(t, y)?;
            let predicted = ((y + (&k1 * h)?)? + dw)?;
            let k2 = f.drift(t_next, &predicted)?;
            Ok(((y + ((k1 + k2)? * (0.5 * h))?)? + dw)?)
        })
    }

    fn evals_per_step(&self) -> usize {
        2
    }

    fn name(&self) -> &'static str {
        "stochastic-heun"
    }
}

/// The SDE schemes by name, for choosing one at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdeMethod {
    /// [`EulerMaruyama`].
    EulerMaruyama,
    /// [`StochasticHeun`].
    StochasticHeun,
}

impl SdeMethod {
    /// Every scheme, in the order of their names in [`SdeMethod::NAMES`].
    pub const ALL: [SdeMethod; 2] = [SdeMethod::EulerMaruyama, SdeMethod::StochasticHeun];
    /// The names [`SdeMethod::from_name`] accepts (`em` and `heun` are short forms).
    pub const NAMES: &'static [&'static str] = &["euler-maruyama", "stochastic-heun"];

    /// The scheme as a solver.
    pub fn as_solver(&self) -> &'static dyn SdeSolver {
        match self {
            SdeMethod::EulerMaruyama => &EulerMaruyama,
            SdeMethod::StochasticHeun => &StochasticHeun,
        }
    }

    /// Parses `euler-maruyama` (`em`, `euler`) or `stochastic-heun` (`heun`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] naming the valid choices.
    pub fn from_name(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "euler-maruyama" | "em" | "euler" => Ok(SdeMethod::EulerMaruyama),
            "stochastic-heun" | "heun" => Ok(SdeMethod::StochasticHeun),
            other => Err(Error::InvalidOption {
                name: "sde solver",
                reason: format!(
                    "unknown scheme `{other}`; valid: euler-maruyama (em), stochastic-heun (heun)"
                ),
            }),
        }
    }
}
