//! The velocity-field abstraction shared by models, oracles and solvers.

use candle::{DType, Tensor};

use crate::Result;

/// A time-dependent velocity field `u(x, t)` over a batch.
///
/// Time convention: **`t = 0` is noise, `t = 1` is data** (as in
/// `flow_matching` and `torchcfm`; candle's Flux/SD3 samplers use the reverse).
///
/// # Shapes
/// - `x`: `(batch, ...)`
/// - `t`: `(batch,)`, same dtype and device as `x`
/// - returns: the shape of `x`
pub trait VelocityField {
    /// Evaluates the velocity at `(x, t)`.
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor>;
}

impl<V: VelocityField + ?Sized> VelocityField for &V {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        (**self).velocity(x, t)
    }
}

impl<V: VelocityField + ?Sized> VelocityField for Box<V> {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        (**self).velocity(x, t)
    }
}

/// A velocity field that computes its own exact divergence, differentiably
/// and with first-order operations only (closed forms, or forward-mode
/// tangents as `fm_models::VelocityMlp` does).
///
/// Likelihood training through [`crate::likelihood::cnf_nll_loss_exact`]
/// then needs no second-order autograd.
///
/// # Shapes
/// - `x`: `(batch, d)`, `t`: `(batch,)`
/// - returns `(u (batch, d), ∇·u (batch,))`
pub trait DivergenceField: VelocityField {
    /// The velocity and its divergence at `(x, t)`.
    fn velocity_and_divergence(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)>;
}

impl<V: DivergenceField + ?Sized> DivergenceField for &V {
    fn velocity_and_divergence(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
        (**self).velocity_and_divergence(x, t)
    }
}

/// Builds the `(batch,)` time tensor for a scalar `t`, matching `x`'s dtype and device.
pub fn time_like(x: &Tensor, t: f64) -> Result<Tensor> {
    let b = x.dim(0)?;
    Ok(Tensor::full(t, b, x.device())?.to_dtype(x.dtype())?)
}

/// Adapts a [`VelocityField`] to the ODE interface of `fm-solvers`
/// (a scalar `t` broadcast to the batch).
///
/// ```
/// use candle::{Device, Tensor};
/// use fm_core::{AsOde, VelocityField};
/// use fm_solvers::{Euler, OdeSolver, TimeGrid};
///
/// struct Constant;
/// impl VelocityField for Constant {
///     fn velocity(&self, x: &Tensor, _t: &Tensor) -> fm_core::Result<Tensor> {
///         Ok(x.ones_like()?)
///     }
/// }
/// # fn main() -> anyhow::Result<()> {
/// let x0 = Tensor::zeros((4, 2), candle::DType::F32, &Device::Cpu)?;
/// let sol = Euler.solve(&AsOde(&Constant), &x0, &TimeGrid::uniform(0.0, 1.0, 10)?)?;
/// // Ten Euler steps of dt = 0.1 under unit speed: x(1) = 1 up to f32 rounding.
/// let x1 = sol.state.to_vec2::<f32>()?;
/// assert!(x1[0].iter().all(|v| (v - 1.0).abs() < 1e-6));
/// assert_eq!(sol.stats.nfe, 10);
/// # Ok(())
/// # }
/// ```
pub struct AsOde<V>(pub V);

impl<V: VelocityField> fm_solvers::OdeFunction for AsOde<V> {
    fn eval(&self, t: f64, y: &Tensor) -> fm_solvers::Result<Tensor> {
        let tt = time_like(y, t).map_err(|e| fm_solvers::Error::Field(Box::new(e)))?;
        self.0.velocity(y, &tt).map_err(|e| fm_solvers::Error::Field(Box::new(e)))
    }
}

/// Extracts a tensor's values as `f64`, whatever its float dtype.
pub fn to_f64_vec(x: &Tensor) -> Result<Vec<f64>> {
    Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}
