//! The divergence `∇·u(x, t) = Σᵢ ∂uᵢ/∂xᵢ` of a velocity field, by autograd.
//!
//! The likelihood of a continuous normalizing flow needs the divergence of
//! the velocity along the ODE trajectory (docs/reference/likelihood.md). Two estimators:
//!
//! - **Exact** ([`exact_divergence`]): `d` backward passes, the `i`-th
//!   giving row `i` of the Jacobian `J = ∂u/∂x`; the divergence is its
//!   trace. Cost: `d` VJPs, so it is meant for small `d` (2-D toys; as
//!   `flow_matching`'s `exact_divergence=True` and FFJORD's `divergence_bf`).
//! - **Hutchinson** ([`hutchinson_divergence`]): `εᵀ J ε` for a probe `ε`
//!   with `E[ε εᵀ] = I` — one VJP `εᵀJ = ∇ₓ(u·ε)` and a dot product. It is
//!   unbiased; with `J_s = ½(J + Jᵀ)` its variance is `2‖J_s‖²_F` for
//!   Gaussian probes and `2(‖J_s‖²_F − Σᵢ Jᵢᵢ²)` for Rademacher probes.
//!
//! A [`Divergence`] is the user-facing choice; [`Divergence::estimator`]
//! draws the Hutchinson probes **once** (per likelihood solve) into a
//! [`DivergenceEstimator`], which is then reused at every ODE step, as in
//! `flow_matching` and FFJORD: the augmented ODE stays deterministic (so
//! adaptive steppers work) and the estimate of `log p` stays unbiased.
//!
//! # Autograd in candle
//!
//! candle keeps gradients only for [`Var`]s (those of intermediate tensors
//! are dropped), so the field is evaluated at a differentiable point:
//!
//! - by default (evaluation) at a fresh `Var` holding a *detached* copy of
//!   `x`, and the results are detached: no graph is kept across ODE steps;
//! - with [`DivergenceEstimator::with_graph`]`(true)` (training through the
//!   divergence) at `x.detach() + z` for a zero `Var` `z`, and the results
//!   are re-attached to `x`'s own graph to first order (`u + J δ` with
//!   `δ = x − x.detach() = 0`), so their gradients with respect to `x` and
//!   to the field's parameters are exact while each inner backward pass
//!   sees only the current evaluation. This needs second-order gradients,
//!   which candle computes wrongly unless `CANDLE_GRAD_DO_NOT_DETACH` is set
//!   (see [`crate::likelihood::enable_second_order_gradients`]).
//!
//! If the field's parameters are `Var`s, every backward pass also computes
//! their gradients (wasted work during evaluation, but harmless).
//!
//! ```
//! use candle::{DType, Device, Tensor};
//! use fm_core::divergence::exact_divergence;
//! use fm_core::VelocityField;
//!
//! /// u(x, t) = (x₀², x₀ x₁): div u = 2x₀ + x₀ = 3x₀.
//! struct Quadratic;
//! impl VelocityField for Quadratic {
//!     fn velocity(&self, x: &Tensor, _t: &Tensor) -> fm_core::Result<Tensor> {
//!         let x0 = x.narrow(1, 0, 1)?;
//!         let x1 = x.narrow(1, 1, 1)?;
//!         Ok(Tensor::cat(&[&x0.sqr()?, &(&x0 * &x1)?], 1)?)
//!     }
//! }
//! # fn main() -> fm_core::Result<()> {
//! let x = Tensor::new(&[[1.0f64, 5.0], [-2.0, 0.5]], &Device::Cpu)?;
//! let t = Tensor::zeros(2, DType::F64, &Device::Cpu)?;
//! let div = exact_divergence(&Quadratic, &x, &t)?.to_vec1::<f64>()?;
//! assert_eq!(div, vec![3.0, -6.0]);
//! # Ok(())
//! # }
//! ```

use candle::{DType, Device, Tensor, Var};

use crate::{Error, Result, SeededRng, VelocityField};

/// The distribution of Hutchinson probes `ε` (both have `E[ε εᵀ] = I`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Probe {
    /// Independent ±1 entries (lower variance; `flow_matching`'s default).
    #[default]
    Rademacher,
    /// Independent standard normal entries.
    Gaussian,
}

impl Probe {
    /// Draws a probe tensor of the given shape from `rng`.
    ///
    /// # Shapes
    /// - returns: `shape` (for the divergence of a `(b, d)` batch: `(b, d)`)
    pub fn draw(
        &self,
        rng: &mut SeededRng,
        shape: impl Into<candle::Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            Probe::Rademacher => rng.rademacher(shape, dtype, device),
            Probe::Gaussian => rng.normal(shape, dtype, device),
        }
    }

    /// The probe's short name (`"rademacher"` or `"gaussian"`).
    pub fn name(&self) -> &'static str {
        match self {
            Probe::Rademacher => "rademacher",
            Probe::Gaussian => "gaussian",
        }
    }
}

/// How the likelihood code computes the divergence.
///
/// ```
/// use fm_core::divergence::{Divergence, Probe};
/// let d = Divergence::hutchinson(Probe::Gaussian, 4);
/// assert!(d.validate().is_ok());
/// assert!(Divergence::hutchinson(Probe::Gaussian, 0).validate().is_err());
/// assert_eq!(Divergence::default(), Divergence::Exact);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Divergence {
    /// The exact trace of the Jacobian (`d` backward passes per evaluation).
    #[default]
    Exact,
    /// Hutchinson's estimator averaged over `num_probes` independent probes,
    /// drawn once per solve (`num_probes` backward passes per evaluation).
    Hutchinson {
        /// The probe distribution.
        probe: Probe,
        /// How many independent probes to average (at least 1).
        num_probes: usize,
    },
}

impl Divergence {
    /// Shorthand for [`Divergence::Hutchinson`].
    pub fn hutchinson(probe: Probe, num_probes: usize) -> Self {
        Divergence::Hutchinson { probe, num_probes }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming `num_probes` if it is 0.
    pub fn validate(&self) -> Result<()> {
        if let Divergence::Hutchinson { num_probes: 0, .. } = self {
            return Err(Error::invalid("num_probes", "Hutchinson's estimator needs at least 1 probe"));
        }
        Ok(())
    }

    /// Draws the probes for one solve over a `(b, d)` batch and returns the
    /// estimator that reuses them at every step (no draw for [`Divergence::Exact`]).
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate); tensor errors.
    pub fn estimator(
        &self,
        batch: usize,
        dim: usize,
        dtype: DType,
        device: &Device,
        rng: &mut SeededRng,
    ) -> Result<DivergenceEstimator> {
        self.validate()?;
        match *self {
            Divergence::Exact => Ok(DivergenceEstimator::exact()),
            Divergence::Hutchinson { probe, num_probes } => {
                let probes = (0..num_probes)
                    .map(|_| probe.draw(rng, (batch, dim), dtype, device))
                    .collect::<Result<Vec<_>>>()?;
                DivergenceEstimator::hutchinson(probes)
            }
        }
    }
}

/// A divergence estimator with its probes fixed: computes the velocity and
/// (an estimate of) its divergence together, in one forward pass.
#[derive(Debug, Clone)]
pub struct DivergenceEstimator {
    /// Empty for the exact divergence.
    probes: Vec<Tensor>,
    create_graph: bool,
}

impl DivergenceEstimator {
    /// The exact divergence (trace of the Jacobian).
    pub fn exact() -> Self {
        Self { probes: Vec::new(), create_graph: false }
    }

    /// Hutchinson's estimator averaged over the given probes.
    ///
    /// # Shapes
    /// - each probe: `(b, d)`, the shape of the states it will be used with
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming `probes` if there are none;
    /// [`Error::Shape`] if one is not rank 2 or the shapes differ.
    pub fn hutchinson(probes: Vec<Tensor>) -> Result<Self> {
        let first = probes
            .first()
            .ok_or_else(|| Error::invalid("probes", "Hutchinson's estimator needs at least 1 probe"))?;
        if first.rank() != 2 {
            return Err(Error::Shape(format!("a probe must be (batch, dim), got shape {:?}", first.dims())));
        }
        if let Some(p) = probes.iter().find(|p| p.dims() != first.dims()) {
            return Err(Error::Shape(format!(
                "all probes must have one shape, got {:?} and {:?}",
                first.dims(),
                p.dims()
            )));
        }
        Ok(Self { probes, create_graph: false })
    }

    /// With `true`, the results keep their autograd graph (to `x` and to the
    /// field's parameters) so that a loss built on them can be
    /// back-propagated — torch's `create_graph=True`. This needs
    /// second-order gradients: see
    /// [`crate::likelihood::enable_second_order_gradients`]. Only first
    /// derivatives of the results are exact (enough for training by
    /// gradient descent). It computes the full Jacobian (`d + 1` backward
    /// passes per evaluation, whatever the estimator). Default `false`: the
    /// results are detached.
    pub fn with_graph(mut self, create_graph: bool) -> Self {
        self.create_graph = create_graph;
        self
    }

    /// Whether the results keep their autograd graph.
    pub fn creates_graph(&self) -> bool {
        self.create_graph
    }

    /// Whether this is the exact divergence.
    pub fn is_exact(&self) -> bool {
        self.probes.is_empty()
    }

    /// The Hutchinson probes (empty for the exact divergence).
    pub fn probes(&self) -> &[Tensor] {
        &self.probes
    }

    /// The velocity `u(x, t)` and its divergence at `(x, t)`.
    ///
    /// # Shapes
    /// - `x`: `(b, d)`
    /// - `t`: `(b,)`
    /// - returns: `u` of shape `(b, d)` and the divergence of shape `(b,)`
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] if `x` is not rank 2, `t` is not `(b,)`, the field's
    /// output is not shaped like `x`, or the probes do not match `x`;
    /// [`Error::InvalidArgument`] naming `field` if the field's output is
    /// not connected to `x` in candle's autograd graph (e.g. computed from
    /// plain numbers like [`crate::gaussian::GaussianOracle`]); the field's
    /// own errors.
    pub fn velocity_and_divergence<V: VelocityField + ?Sized>(
        &self,
        field: &V,
        x: &Tensor,
        t: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (b, d) = check_batch(x, t)?;
        for p in &self.probes {
            if p.dims() != [b, d] {
                return Err(Error::Shape(format!(
                    "the Hutchinson probes have shape {:?} but the state has shape {:?}",
                    p.dims(),
                    x.dims()
                )));
            }
        }
        if self.create_graph {
            return self.with_graph_impl(field, x, t, b, d);
        }
        // The field sees a fresh Var holding a detached copy of x.
        let var = Var::from_tensor(&x.detach())?;
        let u = self.checked_velocity(field, var.as_tensor(), t, x)?;
        let grad_of = |scalar: Tensor| grad_wrt(&scalar, &var);
        let div = if self.probes.is_empty() {
            let mut acc: Option<Tensor> = None;
            for i in 0..d {
                // Row i of J, summed over the (independent) batch rows.
                let row = grad_of(u.narrow(1, i, 1)?.sum_all()?)?;
                let jii = row.narrow(1, i, 1)?.squeeze(1)?;
                acc = Some(match acc {
                    None => jii,
                    Some(a) => (a + jii)?,
                });
            }
            acc.ok_or_else(|| Error::Shape("the state has dimension 0".into()))?
        } else {
            let mut acc: Option<Tensor> = None;
            for eps in &self.probes {
                // εᵀJ = ∇ₓ(u·ε), then (εᵀJ)·ε.
                let vjp = grad_of((&u * eps)?.sum_all()?)?;
                let est = (vjp * eps)?.sum(1)?;
                acc = Some(match acc {
                    None => est,
                    Some(a) => (a + est)?,
                });
            }
            let k = self.probes.len() as f64;
            let sum = acc.ok_or_else(|| Error::invalid("probes", "none"))?;
            if self.probes.len() == 1 {
                sum
            } else {
                sum.affine(1.0 / k, 0.0)?
            }
        };
        Ok((u.detach(), div.detach()))
    }

    /// Evaluates the field at `x_in` (a differentiable view of `x`) and checks its output.
    fn checked_velocity<V: VelocityField + ?Sized>(
        &self,
        field: &V,
        x_in: &Tensor,
        t: &Tensor,
        x: &Tensor,
    ) -> Result<Tensor> {
        let u = field.velocity(x_in, t)?;
        if u.dims() != x.dims() {
            return Err(Error::Shape(format!(
                "the field returned shape {:?} for a state of shape {:?}",
                u.dims(),
                x.dims()
            )));
        }
        if !u.track_op() {
            return Err(Error::invalid(
                "field",
                "its output is not connected to x in candle's autograd graph, so its divergence \
                 cannot be computed by autograd (compute the velocity with candle ops, or supply \
                 a closed-form divergence, e.g. likelihood::log_likelihood_with_divergence)",
            ));
        }
        Ok(u)
    }

    /// The graph-keeping evaluation (see [`with_graph`](Self::with_graph)).
    ///
    /// Differentiating the field at `x` itself would make every inner
    /// backward pass walk the whole history of `x` (all previous ODE steps),
    /// a cost quadratic in the number of steps. Instead the field is
    /// evaluated at `x̄ + z`, with `x̄ = x.detach()` and `z` a zero `Var`, so
    /// the inner passes see only this evaluation's graph, and the results
    /// are re-attached to `x`'s graph to first order with `δ = x − x̄` (whose
    /// value is exactly 0):
    ///
    /// `u ← u + J δ`, `div ← div + (∇ₓ div)·δ`,
    ///
    /// with the Jacobian `J` and `∇ₓ div` as constants. The values are
    /// unchanged and the first derivatives with respect to `x` (and hence,
    /// through earlier steps, the parameters) are exact. This needs the full
    /// Jacobian: `d` backward passes plus one for `∇ₓ div`, whatever the
    /// estimator (Hutchinson's estimate is then `εᵀ J ε` from it).
    fn with_graph_impl<V: VelocityField + ?Sized>(
        &self,
        field: &V,
        x: &Tensor,
        t: &Tensor,
        b: usize,
        d: usize,
    ) -> Result<(Tensor, Tensor)> {
        let z = Var::zeros((b, d), x.dtype(), x.device())?;
        let x_bar = x.detach();
        let x_in = (&x_bar + z.as_tensor())?;
        let u = self.checked_velocity(field, &x_in, t, x)?;
        // rows[i] = ∇ₓ uᵢ = row i of J, per batch row (the rows are independent).
        let rows =
            (0..d).map(|i| grad_wrt(&u.narrow(1, i, 1)?.sum_all()?, &z)).collect::<Result<Vec<_>>>()?;
        let jac = Tensor::stack(&rows, 1)?; // (b, d, d): jac[r, i, j] = ∂uᵢ/∂xⱼ
        let div = if self.probes.is_empty() {
            let mut acc = rows[0].narrow(1, 0, 1)?;
            for (i, row) in rows.iter().enumerate().skip(1) {
                acc = (acc + row.narrow(1, i, 1)?)?;
            }
            acc.squeeze(1)?
        } else {
            let mut acc: Option<Tensor> = None;
            for eps in &self.probes {
                // εᵀ J ε = Σᵢ εᵢ (J ε)ᵢ
                let j_eps = jac.broadcast_mul(&eps.unsqueeze(1)?)?.sum(2)?;
                let est = (j_eps * eps)?.sum(1)?;
                acc = Some(match acc {
                    None => est,
                    Some(a) => (a + est)?,
                });
            }
            let sum = acc.ok_or_else(|| Error::invalid("probes", "none"))?;
            sum.affine(1.0 / self.probes.len() as f64, 0.0)?
        };
        if !x.track_op() {
            return Ok((u, div));
        }
        let grad_div = grad_wrt(&div.sum_all()?, &z)?.detach();
        let delta = (x - &x_bar)?;
        let u = (u + jac.detach().broadcast_mul(&delta.unsqueeze(1)?)?.sum(2)?)?;
        let div = (div + (grad_div * &delta)?.sum(1)?)?;
        Ok((u, div))
    }
}

/// The gradient of the scalar `y` with respect to `var` (zeros if `y` does
/// not depend on it).
fn grad_wrt(y: &Tensor, var: &Var) -> Result<Tensor> {
    let grads = y.backward()?;
    Ok(match grads.get(var.as_tensor()) {
        Some(g) => g.clone(),
        None => var.as_tensor().zeros_like()?,
    })
}

/// Checks `x: (b, d)` with `b, d ≥ 1` and `t: (b,)`.
fn check_batch(x: &Tensor, t: &Tensor) -> Result<(usize, usize)> {
    let (b, d) = match x.dims() {
        &[b, d] => (b, d),
        dims => return Err(Error::Shape(format!("the state must be (batch, dim), got shape {dims:?}"))),
    };
    if b == 0 || d == 0 {
        return Err(Error::Shape(format!("the state must not be empty, got shape {:?}", x.dims())));
    }
    if t.dims() != [b] {
        return Err(Error::Shape(format!("the time must be (batch,) = [{b}], got shape {:?}", t.dims())));
    }
    Ok((b, d))
}

/// The exact divergence `Σᵢ ∂uᵢ/∂xᵢ` of `field` at `(x, t)`, by `d`
/// backward passes (detached result; for a differentiable one use
/// [`DivergenceEstimator::exact`]`().with_graph(true)`).
///
/// # Shapes
/// - `x`: `(b, d)`
/// - `t`: `(b,)`
/// - returns: `(b,)`
///
/// # Errors
///
/// As [`DivergenceEstimator::velocity_and_divergence`].
pub fn exact_divergence<V: VelocityField + ?Sized>(field: &V, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    Ok(DivergenceEstimator::exact().velocity_and_divergence(field, x, t)?.1)
}

/// Hutchinson's estimate `εᵀ J ε` of the divergence of `field` at `(x, t)`,
/// one estimate per row (one VJP; detached result).
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use fm_core::divergence::{hutchinson_divergence, Probe};
/// use fm_core::{SeededRng, VelocityField};
///
/// /// u(x) = A x with A = [[1, 2], [0, 3]]: div u = tr A = 4.
/// struct Linear;
/// impl VelocityField for Linear {
///     fn velocity(&self, x: &Tensor, _t: &Tensor) -> fm_core::Result<Tensor> {
///         let a = Tensor::new(&[[1.0f64, 2.0], [0.0, 3.0]], x.device())?;
///         Ok(x.matmul(&a.t()?)?)
///     }
/// }
/// # fn main() -> fm_core::Result<()> {
/// let x = Tensor::ones((1, 2), DType::F64, &Device::Cpu)?;
/// let t = Tensor::zeros(1, DType::F64, &Device::Cpu)?;
/// // With a Rademacher probe εᵀAε = 1 + 3 + 2 ε₀ε₁ ∈ {2, 6}.
/// let eps = Probe::Rademacher.draw(&mut SeededRng::new(0), (1, 2), DType::F64, &Device::Cpu)?;
/// let est = hutchinson_divergence(&Linear, &x, &t, &eps)?.to_vec1::<f64>()?[0];
/// assert!(est == 2.0 || est == 6.0);
/// # Ok(())
/// # }
/// ```
///
/// # Shapes
/// - `x`: `(b, d)`
/// - `t`: `(b,)`
/// - `probe`: `(b, d)`
/// - returns: `(b,)`
///
/// # Errors
///
/// As [`DivergenceEstimator::velocity_and_divergence`].
pub fn hutchinson_divergence<V: VelocityField + ?Sized>(
    field: &V,
    x: &Tensor,
    t: &Tensor,
    probe: &Tensor,
) -> Result<Tensor> {
    Ok(DivergenceEstimator::hutchinson(vec![probe.clone()])?.velocity_and_divergence(field, x, t)?.1)
}
