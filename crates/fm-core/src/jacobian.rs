//! Jacobian regularization: Hutchinson's estimate of the squared Frobenius
//! norm `‖∂u/∂x‖²_F` of a velocity field, from Jacobian–vector products.
//!
//! For probes `ε` with `E[ε εᵀ] = I` (Rademacher or Gaussian),
//! `E‖J ε‖² = tr(Jᵀ J) = ‖J‖²_F`, so `(1/K) Σ_k ‖J ε_k‖²` is unbiased. Each
//! probe costs one JVP. A network that pushes tangents forward with
//! first-order operations ([`JvpField`], e.g. `fm_models::VelocityMlp`) gives
//! a penalty whose gradient with respect to the weights is exact by plain
//! (first-order) autograd: no `CANDLE_GRAD_DO_NOT_DETACH`, no double backward.
//!
//! [`jacobian_autograd`] builds the full Jacobian by reverse-mode autograd
//! (one backward pass per output coordinate): an independent check of the
//! forward-mode JVPs, for tests.

use candle::{DType, Tensor, Var};

use crate::divergence::Probe;
use crate::{Error, Result, SeededRng, VelocityField};

/// A velocity field that also pushes tangents forward: `(u(x, t), J_x u · v)`
/// for several tangents at once, built from first-order, differentiable ops.
///
/// # Shapes
/// - `x`: `(b, d)`, `t`: `(b,)`, `v`: `(k, b, d)` (k tangents per row)
/// - returns `u`: `(b, d)` and `J v`: `(k, b, d)`
pub trait JvpField: VelocityField {
    /// The velocity and its Jacobian–vector products at `(x, t)`.
    fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)>;
}

impl<V: JvpField + ?Sized> JvpField for &V {
    fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        (**self).velocity_and_jvp(x, t, v)
    }
}

/// Draws `k` probes per row of `x` (`(b, d)`): a `(k, b, d)` tensor.
pub fn draw_probes(probe: Probe, k: usize, x: &Tensor, rng: &mut SeededRng) -> Result<Tensor> {
    if k == 0 {
        return Err(Error::invalid("probes", "need at least one probe"));
    }
    let (b, d) = x.dims2()?;
    probe.draw(rng, (k, b, d), x.dtype(), x.device())
}

/// Hutchinson's estimate of `‖∂u/∂x‖²_F` per row, from the probes `v`
/// (`(k, b, d)`): `(1/k) Σ_k ‖J v_k‖²`. Returns `(u, estimate)`; both are
/// differentiable with respect to the field's parameters.
///
/// # Shapes
/// - `x`: `(b, d)`, `t`: `(b,)`, `v`: `(k, b, d)`
/// - returns `u`: `(b, d)`, estimate: `(b,)`
pub fn hutchinson_jacobian_sq<F: JvpField + ?Sized>(
    field: &F,
    x: &Tensor,
    t: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (b, d) = x.dims2()?;
    let (_, vb, vd) = v.dims3()?;
    if (vb, vd) != (b, d) {
        return Err(Error::Shape(format!("probes {:?} do not match x ({b}, {d})", v.dims())));
    }
    let (u, jv) = field.velocity_and_jvp(x, t, v)?;
    Ok((u, jv.sqr()?.sum(2)?.mean(0)?))
}

/// The exact `‖∂u/∂x‖²_F` per row, by `d` JVPs along the coordinate axes.
///
/// # Shapes
/// - `x`: `(b, d)`, `t`: `(b,)` → `(b,)`
pub fn exact_jacobian_sq<F: JvpField + ?Sized>(field: &F, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let (b, d) = x.dims2()?;
    let basis = Tensor::eye(d, x.dtype(), x.device())?.unsqueeze(1)?.broadcast_as((d, b, d))?.contiguous()?;
    let (_, jv) = field.velocity_and_jvp(x, t, &basis)?;
    Ok(jv.sqr()?.sum(2)?.sum(0)?)
}

/// The Jacobian penalty added to a training loss: Hutchinson's estimate of
/// `‖∂u/∂x‖²_F / d` (per coordinate, like the MSE losses), averaged over the
/// batch, with `k` probes per row drawn from `rng`. Returns `(u, penalty)`.
///
/// # Shapes
/// - `x`: `(b, d)`, `t`: `(b,)`
/// - returns `u`: `(b, d)` and a scalar tensor
pub fn jacobian_penalty<F: JvpField + ?Sized>(
    field: &F,
    x: &Tensor,
    t: &Tensor,
    probe: Probe,
    k: usize,
    rng: &mut SeededRng,
) -> Result<(Tensor, Tensor)> {
    let d = x.dim(1)? as f64;
    let v = draw_probes(probe, k, x, rng)?;
    let (u, est) = hutchinson_jacobian_sq(field, x, t, &v)?;
    Ok((u, (est.mean_all()? / d)?))
}

/// The full Jacobian `∂u_i/∂x_j` of any [`VelocityField`] by reverse-mode
/// autograd, one backward pass per output coordinate, in `f64`: a reference
/// for tests (not differentiable with respect to the field's parameters).
///
/// # Shapes
/// - `x`: `(b, d)`, `t`: `(b,)` → `(b, d, d)` (row `i` is `∇_x u_i`)
pub fn jacobian_autograd<V: VelocityField + ?Sized>(field: &V, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let (b, d) = x.dims2()?;
    let xv = Var::from_tensor(&x.detach())?;
    let u = field.velocity(xv.as_tensor(), t)?;
    let mut rows = Vec::with_capacity(d);
    for i in 0..d {
        let grads = u.narrow(1, i, 1)?.sum_all()?.backward()?;
        let g = match grads.get(xv.as_tensor()) {
            Some(g) => g.to_dtype(DType::F64)?,
            None => Tensor::zeros((b, d), DType::F64, x.device())?,
        };
        rows.push(g.unsqueeze(1)?);
    }
    Ok(Tensor::cat(&rows, 1)?)
}
