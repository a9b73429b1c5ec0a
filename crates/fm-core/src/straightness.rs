//! Straightness of a velocity field's trajectories (Liu et al., rectified
//! flow, arXiv 2209.03003, Eq. 6).
//!
//! For the ODE `ẋ = u(x, t)` from `x_0` at `t = 0` to `x_1` at `t = 1`,
//!
//! `S(u) = E_{x_0} ∫₀¹ ‖u(x_t, t) − (x_1 − x_0)‖² dt`,
//!
//! the mean (over trajectories) of the time-integrated squared deviation of
//! the velocity from the trajectory's net displacement; `‖·‖²` sums over
//! coordinates. `S = 0` exactly when every trajectory is a straight line
//! travelled at constant speed, and then one Euler step is exact. On a
//! grid over `[t_a, t_b]` other than `[0, 1]` the reference velocity is the
//! mean one, `(x_{t_b} − x_{t_a})/(t_b − t_a)`, and the integral is over the grid.
//!
//! [`straightness`] solves the ODE with any `fm-solvers` method on a grid
//! `0 = t_0 < … < t_N = 1`, records the states `x_{t_k}`
//! (`integrate(..., record_trajectory = true)`), takes `x_1 − x_0` from the
//! solve, and approximates the integral by the left Riemann sum
//! `Σ_{k<N} (t_{k+1} − t_k) ‖u(x_{t_k}, t_k) − (x_{t_N} − x_{t_0})/(t_N − t_0)‖²` (no
//! evaluation at `t = 1`, where some parameterisations are singular). With
//! Euler these are the solver's own velocities, so the value is that of the
//! discrete polygonal path.
//!
//! ```
//! use candle::{DType, Device, Tensor};
//! use fm_core::{straightness::straightness, SeededRng, VelocityField};
//! use fm_solvers::{Euler, TimeGrid};
//!
//! // u(x, t) = −x: trajectories x_t = e^{−t} x_0 are straight lines
//! // whose speed changes, so S > 0.
//! struct Shrink;
//! impl VelocityField for Shrink {
//!     fn velocity(&self, x: &Tensor, _t: &Tensor) -> fm_core::Result<Tensor> {
//!         Ok(x.neg()?)
//!     }
//! }
//! # fn main() -> fm_core::Result<()> {
//! let x0 = SeededRng::new(0).normal((64, 2), DType::F64, &Device::Cpu)?;
//! let s = straightness(&Shrink, &Euler, &x0, &TimeGrid::uniform(0.0, 1.0, 50)?)?;
//! assert!(s.value > 0.01 && s.nfe == 100);
//! # Ok(())
//! # }
//! ```

use candle::{DType, Tensor};
use fm_solvers::{OdeSolver, TimeGrid};

use crate::{time_like, AsOde, Error, Result, VelocityField};

/// The straightness of a field from one solve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Straightness {
    /// `S(u)`, mean over the batch (see the module documentation).
    pub value: f64,
    /// Field evaluations used: the solver's plus one per grid interval.
    pub nfe: usize,
}

/// The straightness of `field`'s trajectories from `x0` over `grid` (which
/// should run from 0 to 1; any forward grid is accepted and the integral
/// is then over it).
///
/// # Shapes
/// - `x0`: `(b, ...)`, the source samples
///
/// # Errors
/// [`Error::InvalidArgument`] for a backward grid or an empty batch; solver
/// and field errors.
pub fn straightness<V, S>(field: &V, solver: &S, x0: &Tensor, grid: &TimeGrid) -> Result<Straightness>
where
    V: VelocityField + ?Sized,
    S: OdeSolver + ?Sized,
{
    if !grid.is_forward() {
        return Err(Error::invalid("grid", "straightness needs a forward grid (t from 0 to 1)"));
    }
    let b = x0.dim(0)?;
    if b == 0 {
        return Err(Error::invalid("x0", "the batch is empty"));
    }
    let sol = solver.integrate(&AsOde(field), x0, grid, true)?;
    let times = &sol.times;
    let traj = &sol.trajectory;
    if traj.len() != times.len() || traj.is_empty() {
        return Err(Error::invalid("solver", "it did not record the trajectory"));
    }
    let span = grid.end() - grid.start();
    let disp = ((&sol.state - x0)?.to_dtype(DType::F64)? / span)?;
    let mut total = 0.0;
    for k in 0..times.len() - 1 {
        let h = times[k + 1] - times[k];
        let t = time_like(&traj[k], times[k])?;
        let u = field.velocity(&traj[k], &t)?.to_dtype(DType::F64)?;
        let dev = (u - &disp)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        total += h * dev;
    }
    Ok(Straightness { value: total / b as f64, nfe: sol.stats.nfe + times.len() - 1 })
}
