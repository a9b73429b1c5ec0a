//! ODE integration over candle [`Tensor`] states.
//!
//! `fm-solvers` knows nothing about flow matching: it integrates
//! `dy/dt = f(t, y)` for a batch state `y` (any shape, `f32` or `f64`) over a
//! [`TimeGrid`] that may run forwards (`t0 < t1`) or backwards (`t0 > t1`).
//!
//! Fixed-step methods ([`Euler`], [`Midpoint`], [`Heun`], [`Heun3`], [`Rk4`],
//! [`Rk4ThreeEighths`]) take one step per grid interval. The adaptive
//! [`Dopri5`] integrates from the first to the last grid time with error
//! control and records the state at every grid time. Every solve reports its
//! number of function evaluations (NFE) in [`SolveStats`].
//!
//! Stochastic differential equations with additive noise,
//! `dy = f(t, y) dt + g(t) dW`, are integrated by [`EulerMaruyama`] and
//! [`StochasticHeun`] (trait [`SdeSolver`]) on the same grids, with the
//! Brownian increments drawn from the caller's [`NoiseSource`].
//!
//! ```
//! use candle::{Device, Tensor};
//! use fm_solvers::{OdeSolver, Rk4, TimeGrid};
//!
//! # fn main() -> fm_solvers::Result<()> {
//! // dy/dt = -y, y(0) = 1  =>  y(1) = e^-1
//! let f = |_t: f64, y: &Tensor| -> fm_solvers::Result<Tensor> { Ok(y.neg()?) };
//! let y0 = Tensor::new(&[1.0f64], &Device::Cpu)?;
//! let sol = Rk4.solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, 20)?)?;
//! let y1 = sol.state.to_vec1::<f64>()?[0];
//! assert!((y1 - (-1.0f64).exp()).abs() < 1e-6);
//! assert_eq!(sol.stats.nfe, 80);
//! # Ok(())
//! # }
//! ```
//!
//! [`Tensor`]: candle::Tensor

#![deny(missing_docs)]

mod dopri5;
mod error;
mod fixed;
mod function;
mod grid;
mod method;
mod sde;
mod solution;
mod solver;
mod tableau;

pub use dopri5::Dopri5;
pub use error::{Error, Result};
pub use fixed::{Euler, Heun, Heun3, Midpoint, Rk4, Rk4ThreeEighths};
pub use function::OdeFunction;
pub use grid::TimeGrid;
pub use method::Method;
pub use sde::{EulerMaruyama, NoiseSource, SdeFunction, SdeMethod, SdeSolver, StochasticHeun};
pub use solution::{Solution, SolveStats};
pub use solver::OdeSolver;
