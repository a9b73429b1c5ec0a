//! The solver interface.

use candle::Tensor;

use crate::{OdeFunction, Result, Solution, TimeGrid};

/// An ODE integrator for `dy/dt = f(t, y)` over a [`TimeGrid`].
///
/// The trait is object safe: solvers can be chosen at run time as
/// `Box<dyn OdeSolver>` or `&dyn OdeSolver` (see also [`Method`](crate::Method)).
///
/// # Shapes
///
/// `y0` may have any shape; `f` must return a tensor of the same shape and
/// dtype (`f32` or `f64`). The returned states have that shape and dtype.
pub trait OdeSolver {
    /// Integrates from `grid.start()` to `grid.end()`, starting at `y0`.
    ///
    /// With `record_trajectory`, [`Solution::trajectory`] holds the state at
    /// every grid time (the start included); otherwise it is empty.
    ///
    /// # Errors
    ///
    /// Errors of the vector field, tensor errors (e.g. a field returning the
    /// wrong shape), and the solver's own failures (see [`Error`](crate::Error)).
    fn integrate(
        &self,
        f: &dyn OdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        record_trajectory: bool,
    ) -> Result<Solution>;

    /// Integrates without recording the trajectory.
    ///
    /// # Errors
    ///
    /// As [`integrate`](Self::integrate).
    fn solve(&self, f: &dyn OdeFunction, y0: &Tensor, grid: &TimeGrid) -> Result<Solution> {
        self.integrate(f, y0, grid, false)
    }

    /// Integrates and records the state at every grid time.
    ///
    /// # Errors
    ///
    /// As [`integrate`](Self::integrate).
    fn solve_with_trajectory(&self, f: &dyn OdeFunction, y0: &Tensor, grid: &TimeGrid) -> Result<Solution> {
        self.integrate(f, y0, grid, true)
    }

    /// The method's short name (`"rk4"`, `"dopri5"`, ...).
    fn name(&self) -> &'static str;
}

impl<S: OdeSolver + ?Sized> OdeSolver for &S {
    fn integrate(
        &self,
        f: &dyn OdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        record_trajectory: bool,
    ) -> Result<Solution> {
        (**self).integrate(f, y0, grid, record_trajectory)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}

impl<S: OdeSolver + ?Sized> OdeSolver for Box<S> {
    fn integrate(
        &self,
        f: &dyn OdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        record_trajectory: bool,
    ) -> Result<Solution> {
        (**self).integrate(f, y0, grid, record_trajectory)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}
