//! The planar flow layer of Rezende & Mohamed (arXiv 1505.05770).

use candle::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{check_input, FlowLayer, Init};
use crate::{limits, Error, Result};

/// Configuration of a planar flow: `layers` planar layers on `ℝ^dim`.
///
/// Parameters of layer `k`: `layers.{k}.u` `(dim,)`, `layers.{k}.w` `(dim,)`,
/// `layers.{k}.b` `(1,)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanarConfig {
    /// The dimension `d`.
    pub dim: usize,
    /// The number of planar layers `K`.
    pub layers: usize,
}

impl PlanarConfig {
    /// Checks the configuration, sizes included ([`crate::limits`]); the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 {
            return Err(Error::Config { field: "dim", reason: "must be at least 1".into() });
        }
        if self.layers == 0 {
            return Err(Error::Config { field: "layers", reason: "a flow needs at least one layer".into() });
        }
        limits::check_elements("dim", "the data dimension", Some(self.dim as u64))?;
        limits::check_layers("layers", "planar layers", Some(self.layers as u64))?;
        // Each layer: u and w of `dim` values and b.
        let per_layer = (self.dim as u64).checked_mul(2).and_then(|n| n.checked_add(1));
        let total = per_layer.and_then(|n| n.checked_mul(self.layers as u64));
        match total {
            Some(n) if n <= limits::MAX_PARAMETERS => Ok(()),
            _ => Err(Error::Config {
                field: "layers",
                reason: format!(
                    "{} layers of dimension {} would have more than {} parameters",
                    self.layers,
                    self.dim,
                    limits::MAX_PARAMETERS
                ),
            }),
        }
    }

    /// The parameters' names and shapes, in layer order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.parameter_inits().into_iter().map(|(n, s, _)| (n, s)).collect()
    }

    /// Names, shapes and initialisation: `u`, `w`, `b` uniform in `±1/√d`.
    pub(crate) fn parameter_inits(&self) -> Vec<(String, Vec<usize>, Init)> {
        let bound = 1.0 / (self.dim as f64).sqrt();
        let mut out = Vec::new();
        for k in 0..self.layers {
            out.push((format!("layers.{k}.u"), vec![self.dim], Init::Uniform(bound)));
            out.push((format!("layers.{k}.w"), vec![self.dim], Init::Uniform(bound)));
            out.push((format!("layers.{k}.b"), vec![1], Init::Uniform(bound)));
        }
        out
    }
}

/// A planar layer `f(z) = z + û tanh(wᵀz + b)`.
///
/// The raw parameter `u` is reparametrised so that the layer is always
/// invertible: `û = u + (m(wᵀu) − wᵀu) w/‖w‖²` with `m(a) = −1 + softplus(a)`,
/// hence `wᵀû = m(wᵀu) > −1` for every `u`, `w` (docs/reference/flows.md). The log-det is
/// `log|1 + ûᵀψ(z)|` with `ψ(z) = tanh'(wᵀz + b) w`; it is computed as
/// `log(1 + m(wᵀu) tanh'(wᵀz + b))` from the scalar `m` rather than the dot
/// product `ûᵀw` (which loses digits to cancellation when `u ≈ −k w`); since
/// `m ≥ −1` holds exactly in floating point, the argument is `≥ 1 − tanh' ≥ 0`.
///
/// # Inverse (numerical)
///
/// There is no closed form. Writing `a = wᵀz`, `f(z) = y` reduces to the
/// scalar equation `g(a) = a + c tanh(a + b) − wᵀy = 0` with `c = wᵀû > −1`,
/// where `g' = 1 + c tanh' > 0`: `g` is strictly increasing, and since
/// `|tanh| ≤ 1` its root lies in `[wᵀy − |c|, wᵀy + |c|]`. Each row's root is
/// found in f64 by Newton's method safeguarded by bisection on that bracket
/// (converged to ~1e-15 relative, at most 200 iterations, usually < 10), then
/// `z = y − û tanh(a + b)`. The root is detached from the graph, so one more
/// Newton step is taken in candle ops, `a ← a* − g(a*)/g'(a*)`: its value is
/// `a*` (as `g(a*) = 0`) and its gradient is the implicit-function one,
/// `∂a/∂θ = −(∂g/∂θ)/g'`, so [`FlowLayer::inverse`] is exact to round-off and
/// differentiable in `y` and in the parameters.
///
/// # Shapes
/// - `u`, `w`: `(d,)`; `b`: `(1,)`
///
/// ```
/// use candle::{DType, Device};
/// use fm_core::SeededRng;
/// use fm_models::flows::{FlowLayer, NormalizingFlow};
/// # fn main() -> anyhow::Result<()> {
/// let mut rng = SeededRng::new(0);
/// let (flow, _varmap) = NormalizingFlow::planar(2, 1, &mut rng, DType::F64, &Device::Cpu)?;
/// let layer = &flow.layers()[0];
/// let x = rng.normal((4, 2), DType::F64, &Device::Cpu)?;
/// let (y, ld) = layer.forward(&x)?;
/// let (x2, ld_inv) = layer.inverse(&y)?;
/// assert!((x2 - &x)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// assert!((ld + ld_inv)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PlanarLayer {
    u: Tensor,
    w: Tensor,
    b: Tensor,
    dim: usize,
}

/// Iteration cap of the scalar root find.
const MAX_ITERS: usize = 200;

impl PlanarLayer {
    /// A layer of dimension `dim` with parameters `u`, `w`, `b` from `vb`.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Config { field: "dim", reason: "must be at least 1".into() });
        }
        let u = vb.get(dim, "u")?;
        let w = vb.get(dim, "w")?;
        let b = vb.get(1, "b")?;
        Ok(Self { u, w, b, dim })
    }

    /// A layer from explicit parameter tensors `u` `(d,)`, `w` `(d,)`, `b` `(1,)`.
    pub fn from_tensors(u: Tensor, w: Tensor, b: Tensor) -> Result<Self> {
        let dim = u.dims1()?;
        if dim == 0 || w.dims() != [dim] || b.dims() != [1] {
            return Err(Error::Shape(format!(
                "a planar layer needs u (d,), w (d,), b (1,) with d ≥ 1, got {:?}, {:?}, {:?}",
                u.dims(),
                w.dims(),
                b.dims()
            )));
        }
        Ok(Self { u, w, b, dim })
    }

    /// `m(wᵀu) = −1 + softplus(wᵀu)` as a scalar tensor (shape `()`); equals `wᵀû`.
    pub fn w_dot_u_hat(&self) -> Result<Tensor> {
        let a = (&self.w * &self.u)?.sum_all()?;
        // softplus(a) = max(a, 0) + log(1 + e^{−|a|}), stable for any a.
        let softplus = (a.relu()? + a.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
        Ok(softplus.affine(1.0, -1.0)?)
    }

    /// The reparametrised `û` `(d,)`, with `wᵀû = m(wᵀu) > −1`.
    pub fn u_hat(&self) -> Result<Tensor> {
        let wtu = (&self.w * &self.u)?.sum_all()?;
        let m = self.w_dot_u_hat()?;
        // A tiny floor keeps w = 0 finite (û = u there); it is below f32's
        // resolution of any ‖w‖² that matters.
        let norm2 = self.w.sqr()?.sum_all()?.affine(1.0, 1e-30)?;
        let coef = ((m - wtu)? / norm2)?;
        Ok((&self.u + self.w.broadcast_mul(&coef)?)?)
    }

    /// `wᵀx + b` per row: `(b, d)` → `(b, 1)`.
    fn pre_activation(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w.unsqueeze(1)?)?.broadcast_add(&self.b.unsqueeze(0)?)?)
    }

    /// `log(1 + c tanh'(pre))` per row, `(b, 1)` → `(b,)`.
    fn log_det_at(&self, tanh_pre: &Tensor, c: &Tensor) -> Result<Tensor> {
        let dh = tanh_pre.sqr()?.affine(-1.0, 1.0)?;
        Ok(dh.broadcast_mul(c)?.affine(1.0, 1.0)?.log()?.squeeze(1)?)
    }
}

/// Solves `a + c tanh(a + b) = s` for `a` (`c > −1`): safeguarded Newton on
/// the bracket `[s − |c|, s + |c|]`.
fn solve_scalar(s: f64, c: f64, b: f64) -> Option<f64> {
    let g = |a: f64| a + c * (a + b).tanh() - s;
    let (mut lo, mut hi) = (s - c.abs(), s + c.abs());
    let mut a = s - c * (s + b).tanh();
    if !(a > lo && a < hi) {
        a = 0.5 * (lo + hi);
    }
    for _ in 0..MAX_ITERS {
        let ga = g(a);
        if !ga.is_finite() {
            return None;
        }
        if ga == 0.0 {
            return Some(a);
        }
        if ga < 0.0 {
            lo = a;
        } else {
            hi = a;
        }
        let th = (a + b).tanh();
        let dg = 1.0 + c * (1.0 - th * th);
        let newton = a - ga / dg;
        let next = if dg > 0.0 && newton > lo && newton < hi { newton } else { 0.5 * (lo + hi) };
        if (next - a).abs() <= 1e-15 * (1.0 + a.abs()) || hi - lo <= 1e-15 * (1.0 + a.abs()) {
            return Some(next);
        }
        a = next;
    }
    // A bracket shrunk by 2^-200 (or Newton steps) is converged for any f64 input.
    Some(a)
}

impl FlowLayer for PlanarLayer {
    fn dim(&self) -> usize {
        self.dim
    }

    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(z, self.dim, "a planar layer")?;
        let h = self.pre_activation(z)?.tanh()?;
        let y = (z + h.broadcast_mul(&self.u_hat()?.unsqueeze(0)?)?)?;
        let log_det = self.log_det_at(&h, &self.w_dot_u_hat()?)?;
        Ok((y, log_det))
    }

    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = check_input(y, self.dim, "a planar layer")?;
        let c = self.w_dot_u_hat()?;
        let wy = y.matmul(&self.w.unsqueeze(1)?)?; // (n, 1)
        let c64 = c.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let b64 = self.b.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        let s = wy.squeeze(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let mut roots = Vec::with_capacity(n);
        for (i, &si) in s.iter().enumerate() {
            let a = solve_scalar(si, c64, b64).ok_or_else(|| {
                Error::NotInvertible(format!(
                    "planar layer: the root find diverged at row {i} (wᵀy = {si}, wᵀû = {c64}, b = {b64})"
                ))
            })?;
            roots.push(a);
        }
        let a_star = Tensor::from_vec(roots, (n, 1), y.device())?.to_dtype(y.dtype())?;
        // One Newton step in the graph: value a*, implicit-function gradients.
        let th = a_star.broadcast_add(&self.b.unsqueeze(0)?)?.tanh()?;
        let g = ((&a_star + th.broadcast_mul(&c)?)? - &wy)?;
        let dg = th.sqr()?.affine(-1.0, 1.0)?.broadcast_mul(&c)?.affine(1.0, 1.0)?;
        let a = (&a_star - (g / dg)?)?;
        let h = a.broadcast_add(&self.b.unsqueeze(0)?)?.tanh()?;
        let z = (y - h.broadcast_mul(&self.u_hat()?.unsqueeze(0)?)?)?;
        let log_det = self.log_det_at(&h, &c)?.neg()?;
        Ok((z, log_det))
    }

    fn has_analytic_inverse(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_root_find_solves_hard_cases() {
        for &(s, c, b) in
            &[(0.3, 2.0, 0.1), (-5.0, -0.999999, 0.0), (100.0, 50.0, -3.0), (0.0, -1.0 + 1e-12, 0.0)]
        {
            let a = solve_scalar(s, c, b).expect("converges");
            let r = a + c * (a + b).tanh() - s;
            assert!(r.abs() < 1e-9 * (1.0 + s.abs()), "s={s} c={c} b={b}: residual {r}");
        }
    }
}
