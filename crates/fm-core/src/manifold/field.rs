//! The projected velocity field of a manifold model, and its sampler.

use candle::Tensor;
use fm_solvers::{OdeFunction, OdeSolver, Solution, TimeGrid};

use super::Manifold;
use crate::{time_like, Result, VelocityField};

/// A network `f(x, t)` on embedding coordinates made a vector field of the
/// manifold: `V(x, t) = P(π(x)) f(π(x), t)`, evaluated at the projection
/// `π(x)` of `x` (so that a solver's stage points off the manifold are
/// handled) and projected onto the tangent space there.
#[derive(Debug, Clone, Copy)]
pub struct ProjectedField<'a, F: ?Sized> {
    /// The manifold.
    pub manifold: &'a dyn Manifold,
    /// The network.
    pub net: &'a F,
}

impl<F: VelocityField + ?Sized> VelocityField for ProjectedField<'_, F> {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let x = self.manifold.project(x)?;
        let f = self.net.velocity(&x, t)?;
        self.manifold.project_tangent(&x, &f)
    }
}

/// How a step's end is brought back onto the manifold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retraction {
    /// The closest point: `y ← π(y)` (flow_matching's `projx`).
    #[default]
    Project,
    /// The exponential map of the step: `y ← exp_{y₀}(P(y₀)(y − y₀))`, so
    /// that a step moves along a geodesic.
    Exp,
}

/// [`ProjectedField`] as an ODE whose steps are retracted onto the manifold.
#[derive(Debug, Clone, Copy)]
pub struct ManifoldOde<'a, F: ?Sized> {
    /// The field.
    pub field: ProjectedField<'a, F>,
    /// The retraction after each step.
    pub retraction: Retraction,
}

impl<F: VelocityField + ?Sized> OdeFunction for ManifoldOde<'_, F> {
    fn eval(&self, t: f64, y: &Tensor) -> fm_solvers::Result<Tensor> {
        let tt = time_like(y, t).map_err(|e| fm_solvers::Error::Field(Box::new(e)))?;
        self.field.velocity(y, &tt).map_err(|e| fm_solvers::Error::Field(Box::new(e)))
    }

    fn retract(&self, from: &Tensor, to: Tensor) -> fm_solvers::Result<Tensor> {
        let m = self.field.manifold;
        let r = match self.retraction {
            Retraction::Project => m.project(&to),
            Retraction::Exp => (|| {
                let step = m.project_tangent(from, &(&to - from)?)?;
                m.exp(from, &step)
            })(),
        };
        r.map_err(|e| fm_solvers::Error::Field(Box::new(e)))
    }
}

/// Solves the flow of the projected field `net` on `manifold` from the base
/// draws `x0` over `grid` (e.g. `0 → 1`), retracting each step.
///
/// # Shapes
/// - `x0`: `(b, n)` points of the manifold
///
/// # Errors
/// The solver's or the network's errors, with context.
pub fn sample_on_manifold<F: VelocityField + ?Sized>(
    manifold: &dyn Manifold,
    net: &F,
    x0: &Tensor,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
    retraction: Retraction,
    trajectory: bool,
) -> Result<Solution> {
    manifold.check(x0, "x0")?;
    let ode = ManifoldOde { field: ProjectedField { manifold, net }, retraction };
    let sol =
        if trajectory { solver.solve_with_trajectory(&ode, x0, grid) } else { solver.solve(&ode, x0, grid) };
    sol.map_err(|e| {
        crate::likelihood::solver_error(e, &format!("sampling on {} ({})", manifold.spec(), solver.name()))
    })
}
