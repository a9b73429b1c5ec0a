//! The right-hand side of an ODE.

use candle::Tensor;

use crate::Result;

/// A time-dependent vector field `f(t, y)` over a batch state `y`.
///
/// `t` is a plain scalar shared by the whole batch; the returned tensor must
/// have the shape and dtype of `y`.
///
/// Closures `Fn(f64, &Tensor) -> Result<Tensor>` implement this trait.
///
/// # Constrained states
/// A state that must stay on a set (a sphere, a torus: flow matching on
/// manifolds) overrides [`OdeFunction::retract`]: every solver calls it on
/// the state each accepted step ends at, with the state the step started
/// from. The solvers themselves stay geometry-agnostic.
pub trait OdeFunction {
    /// Evaluates `dy/dt` at time `t`.
    fn eval(&self, t: f64, y: &Tensor) -> Result<Tensor>;

    /// Maps the end `to` of a step that started at `from` back onto the
    /// state's constraint set (a projection, or an exponential map of the
    /// step); the identity by default.
    fn retract(&self, from: &Tensor, to: Tensor) -> Result<Tensor> {
        let _ = from;
        Ok(to)
    }
}

impl<F> OdeFunction for F
where
    F: Fn(f64, &Tensor) -> Result<Tensor>,
{
    fn eval(&self, t: f64, y: &Tensor) -> Result<Tensor> {
        self(t, y)
    }
}
