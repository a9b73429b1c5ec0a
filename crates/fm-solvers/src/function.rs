//! The right-hand side of an ODE.

use candle::Tensor;

use crate::Result;

/// A time-dependent vector field `f(t, y)` over a batch state `y`.
///
/// `t` is a plain scalar shared by the whole batch; the returned tensor must
/// have the shape and dtype of `y`.
///
/// Closures `Fn(f64, &Tensor) -> Result<Tensor>` implement this trait.
pub trait OdeFunction {
    /// Evaluates `dy/dt` at time `t`.
    fn eval(&self, t: f64, y: &Tensor) -> Result<Tensor>;
}

impl<F> OdeFunction for F
where
    F: Fn(f64, &Tensor) -> Result<Tensor>,
{
    fn eval(&self, t: f64, y: &Tensor) -> Result<Tensor> {
        self(t, y)
    }
}
