//! The inverse update of an affine coupling, `x = (y − β̄ ⊙ t) ⊙ e^{−s}`, as
//! one candle custom op.
//!
//! Composed from candle's ops it is a masked shift, a negation, an
//! exponential, a difference and a product, each a tensor allocated forward
//! and again in the backward pass (with its gradient zero-filled and
//! accumulated): on RealNVP's image couplings, a sixth of a training step.
//! Here the forward pass is one loop (the exponential vectorised in f32 by
//! [`fm_core::simd::exp_f32`]), the backward pass three: `dy = g e^{−s}`,
//! `ds = −g x` and the shift's half of `dh = −β̄ ⊙ dy`.
//!
//! Off the CPU, for other dtypes than f32/f64, or when the incoming
//! gradient carries a graph (second-order autograd), candle's ops are used.

use candle::{Shape, Tensor};

use super::cpu::{apply3, avx2_fma, eval1, eval2, fusable, fusable_grad, Kernel, Real};

/// `x = (y − free ⊙ h[:, d..]) ⊙ e^{−s}`: the coupling's inverse given the
/// masked log-scale `s` and the conditioner's raw output `h` (its last `d`
/// columns are the shift before masking).
///
/// # Shapes
/// - `y`, `s`: `(b, d)`; `h`: `(b, 2d)`; `free`: `d` values (0 or 1) → `(b, d)`
pub(crate) fn affine_inverse(y: &Tensor, s: &Tensor, h: &Tensor, free: &[f64]) -> candle::Result<Tensor> {
    if fusable(&[y, s, h]) {
        apply3(AffineInverse(free.to_vec()), y, s, h)
    } else {
        affine_inverse_by_ops(y, s, h, free)
    }
}

/// [`affine_inverse`] from candle's ops: the reference and the fallback.
pub(crate) fn affine_inverse_by_ops(
    y: &Tensor,
    s: &Tensor,
    h: &Tensor,
    free: &[f64],
) -> candle::Result<Tensor> {
    let d = free.len();
    let t = h.narrow(1, d, d)?.broadcast_mul(&free_row(free, y)?)?;
    (y - t)? * s.neg()?.exp()?
}

/// `free` as a `(1, d)` tensor on `like`'s device, in its dtype.
fn free_row(free: &[f64], like: &Tensor) -> candle::Result<Tensor> {
    Tensor::new(free, like.device())?.to_dtype(like.dtype())?.unsqueeze(0)
}

/// The mask `free` in the kernels' element type.
fn mask<T: Real>(free: &[f64]) -> Vec<T> {
    free.iter().map(|&f| T::from_f64(f)).collect()
}

/// Forward: `(y, s, h)` → `x`.
struct AffineInverse(Vec<f64>);

/// `(g, s)` → `g e^{−s}` (the gradient of `y`).
struct GradY;

/// `dy` → `(b, 2d)`: zeros, then `−free ⊙ dy` (the gradient of `h`).
struct GradH(Vec<f64>);

#[inline(always)]
fn forward_rows<T: Real>(y: &[T], s: &[T], h: &[T], free: &[T], out: &mut [T]) {
    let d = free.len();
    for (((o, y), s), h) in
        out.chunks_exact_mut(d).zip(y.chunks_exact(d)).zip(s.chunks_exact(d)).zip(h.chunks_exact(2 * d))
    {
        let shift = &h[d..];
        for j in 0..d {
            o[j] = (y[j] - shift[j] * free[j]) * (-s[j]).exp_fast();
        }
    }
}

#[inline(always)]
fn grad_y_loop<T: Real>(g: &[T], s: &[T], out: &mut [T]) {
    for ((o, &g), &s) in out.iter_mut().zip(g).zip(s) {
        *o = g * (-s).exp_fast();
    }
}

avx2_fma! {
    /// [`forward_rows`] in f32, vectorised where the CPU allows.
    fn forward_rows_f32(y: &[f32], s: &[f32], h: &[f32], free: &[f32], out: &mut [f32]) => forward_rows;
}

avx2_fma! {
    /// [`grad_y_loop`] in f32, vectorised where the CPU allows.
    fn grad_y_f32(g: &[f32], s: &[f32], out: &mut [f32]) => grad_y_loop;
}

impl Kernel<3> for AffineInverse {
    type Dims = ();

    fn name(&self) -> &'static str {
        "fm-affine-inverse"
    }

    fn check(&self, [y, s, h]: [&Shape; 3]) -> candle::Result<((), Shape)> {
        let d = self.0.len();
        let (b, dy) = y.dims2()?;
        if dy != d || s.dims() != [b, d] || h.dims() != [b, 2 * d] {
            candle::bail!(
                "{}: y {:?}, s {:?}, h {:?} for {d} coordinates",
                self.name(),
                y.dims(),
                s.dims(),
                h.dims()
            );
        }
        Ok(((), Shape::from((b, d))))
    }

    fn run<T: Real>(&self, [y, s, h]: [&[T]; 3], (): ()) -> Vec<T> {
        let mut out = vec![T::ZERO; y.len()];
        forward_rows(y, s, h, &mask(&self.0), &mut out);
        out
    }

    fn run_f32(&self, [y, s, h]: [&[f32]; 3], (): ()) -> Vec<f32> {
        let mut out = vec![0.0f32; y.len()];
        forward_rows_f32(y, s, h, &mask(&self.0), &mut out);
        out
    }

    fn backward(&self, [y, s, _h]: [&Tensor; 3], x: &Tensor, grad: &Tensor) -> candle::Result<[Tensor; 3]> {
        if !fusable_grad(grad, y) {
            // x = (y − t) e^{−s}: dy = g e^{−s}, ds = −g x, dt = −dy.
            let dy = (grad * s.neg()?.exp()?)?;
            let ds = (grad * x)?.neg()?;
            let dt = dy.broadcast_mul(&free_row(&self.0, y)?)?.neg()?;
            let dh = Tensor::cat(&[&dt.zeros_like()?, &dt], 1)?;
            return Ok([dy, ds, dh]);
        }
        let grad = grad.contiguous()?;
        let dy = eval2(GradY, &grad, s)?;
        let ds = (&grad * &x.detach())?.neg()?;
        let dh = eval1(GradH(self.0.clone()), &dy)?;
        Ok([dy, ds, dh])
    }
}

impl Kernel<2> for GradY {
    type Dims = ();

    fn name(&self) -> &'static str {
        "fm-affine-inverse-grad-y"
    }

    fn check(&self, [g, s]: [&Shape; 2]) -> candle::Result<((), Shape)> {
        if g != s {
            candle::bail!("{}: gradient {:?}, s {:?}", self.name(), g.dims(), s.dims());
        }
        Ok(((), g.clone()))
    }

    fn run<T: Real>(&self, [g, s]: [&[T]; 2], (): ()) -> Vec<T> {
        let mut out = vec![T::ZERO; g.len()];
        grad_y_loop(g, s, &mut out);
        out
    }

    fn run_f32(&self, [g, s]: [&[f32]; 2], (): ()) -> Vec<f32> {
        let mut out = vec![0.0f32; g.len()];
        grad_y_f32(g, s, &mut out);
        out
    }
}

impl Kernel<1> for GradH {
    type Dims = ();

    fn name(&self) -> &'static str {
        "fm-affine-inverse-grad-h"
    }

    fn check(&self, [g]: [&Shape; 1]) -> candle::Result<((), Shape)> {
        let d = self.0.len();
        let (b, dd) = g.dims2()?;
        if dd != d {
            candle::bail!("{}: gradient {:?} for {d} coordinates", self.name(), g.dims());
        }
        Ok(((), Shape::from((b, 2 * d))))
    }

    fn run<T: Real>(&self, [dy]: [&[T]; 1], (): ()) -> Vec<T> {
        let free: Vec<T> = mask(&self.0);
        let d = free.len();
        let mut out = vec![T::ZERO; 2 * dy.len()];
        for (o, dy) in out.chunks_exact_mut(2 * d).zip(dy.chunks_exact(d)) {
            for ((o, &g), &f) in o[d..].iter_mut().zip(dy).zip(&free) {
                *o = -(g * f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_against, var};
    use candle::DType;

    /// The op equals the composed ops, value and the gradients of `y`, `s`
    /// and `h`, in f32 and f64.
    #[test]
    fn matches_the_composed_ops() -> candle::Result<()> {
        for (dtype, tol) in [(DType::F64, 1e-14), (DType::F32, 2e-6)] {
            let (b, d) = (5, 7);
            let free: Vec<f64> = (0..d).map(|j| (j % 2) as f64).collect();
            let (y, s, h) =
                (var(&[b, d], 0.0, dtype), var(&[b, d], 3.0, dtype), var(&[b, 2 * d], 5.0, dtype));
            let ours = affine_inverse(&y, &s, &h, &free)?;
            let theirs = affine_inverse_by_ops(&y, &s, &h, &free)?;
            let probe = var(&[b, d], 9.0, dtype);
            let params = [("y", &y), ("s", &s), ("h", &h)];
            check_against(&ours, &theirs, &probe, &params, tol, &format!("{dtype:?} x"))?;
        }
        Ok(())
    }
}
