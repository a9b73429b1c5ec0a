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

use candle::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use fm_core::simd::exp_f32;

use super::cpu::{map1, map2, map3};

/// `x = (y − free ⊙ h[:, d..]) ⊙ e^{−s}`: the coupling's inverse given the
/// masked log-scale `s` and the conditioner's raw output `h` (its last `d`
/// columns are the shift before masking).
///
/// # Shapes
/// - `y`, `s`: `(b, d)`; `h`: `(b, 2d)`; `free`: `d` values (0 or 1) → `(b, d)`
pub(crate) fn affine_inverse(y: &Tensor, s: &Tensor, h: &Tensor, free: &[f64]) -> candle::Result<Tensor> {
    let cpu = y.device().is_cpu() && s.device().is_cpu() && h.device().is_cpu();
    let same = matches!(y.dtype(), candle::DType::F32 | candle::DType::F64)
        && s.dtype() == y.dtype()
        && h.dtype() == y.dtype();
    if cpu && same {
        y.contiguous()?.apply_op3(&s.contiguous()?, &h.contiguous()?, AffineInverse(free.to_vec()))
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

/// `e^{−v}` in each dtype (f32 vectorisable).
trait NegExp: Copy + Send + Sync {
    fn neg_exp(self) -> Self;
}
impl NegExp for f32 {
    #[inline(always)]
    fn neg_exp(self) -> Self {
        exp_f32(-self)
    }
}
impl NegExp for f64 {
    #[inline(always)]
    fn neg_exp(self) -> Self {
        (-self).exp()
    }
}

/// Forward: `(y, s, h)` → `x`.
struct AffineInverse(Vec<f64>);

impl AffineInverse {
    /// The mask `free` in f32.
    fn free_f32(&self) -> Vec<f32> {
        self.0.iter().map(|&f| f as f32).collect()
    }
}

/// `(g, s)` → `g e^{−s}` (the gradient of `y`).
struct GradY;

/// `dy` → `(b, 2d)`: zeros, then `−free ⊙ dy` (the gradient of `h`).
struct GradH(Vec<f64>);

#[inline(always)]
fn forward_rows<T>(y: &[T], s: &[T], h: &[T], free: &[T], out: &mut [T])
where
    T: NegExp + std::ops::Sub<Output = T> + std::ops::Mul<Output = T>,
{
    let d = free.len();
    for (((o, y), s), h) in
        out.chunks_exact_mut(d).zip(y.chunks_exact(d)).zip(s.chunks_exact(d)).zip(h.chunks_exact(2 * d))
    {
        let shift = &h[d..];
        for j in 0..d {
            o[j] = (y[j] - shift[j] * free[j]) * s[j].neg_exp();
        }
    }
}

#[inline(always)]
fn grad_y_loop<T>(g: &[T], s: &[T], out: &mut [T])
where
    T: NegExp + std::ops::Mul<Output = T>,
{
    for ((o, &g), &s) in out.iter_mut().zip(g).zip(s) {
        *o = g * s.neg_exp();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward_rows(y: &[f32], s: &[f32], h: &[f32], free: &[f32], out: &mut [f32]) {
        super::forward_rows(y, s, h, free, out)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn grad_y(g: &[f32], s: &[f32], out: &mut [f32]) {
        super::grad_y_loop(g, s, out)
    }
}

fn forward_f32(y: &[f32], s: &[f32], h: &[f32], free: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; y.len()];
    #[cfg(target_arch = "x86_64")]
    if fm_core::simd::has_avx2_fma() {
        // SAFETY: the features were detected on this CPU just above.
        unsafe { avx2::forward_rows(y, s, h, free, &mut out) };
        return out;
    }
    forward_rows(y, s, h, free, &mut out);
    out
}

fn grad_y_f32(g: &[f32], s: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; g.len()];
    #[cfg(target_arch = "x86_64")]
    if fm_core::simd::has_avx2_fma() {
        // SAFETY: the features were detected on this CPU just above.
        unsafe { avx2::grad_y(g, s, &mut out) };
        return out;
    }
    grad_y_loop(g, s, &mut out);
    out
}

fn grad_h<T>(dy: &[T], free: &[T]) -> Vec<T>
where
    T: NegExp + Default + std::ops::Neg<Output = T> + std::ops::Mul<Output = T>,
{
    let d = free.len();
    let mut out = vec![T::default(); 2 * dy.len()];
    for (o, dy) in out.chunks_exact_mut(2 * d).zip(dy.chunks_exact(d)) {
        for ((o, &g), &f) in o[d..].iter_mut().zip(dy).zip(free) {
            *o = -(g * f);
        }
    }
    out
}

impl CustomOp3 for AffineInverse {
    fn name(&self) -> &'static str {
        "fm-affine-inverse"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (name, d) = (self.name(), self.0.len());
        let (b, dy) = l1.shape().dims2()?;
        if dy != d || l2.dims() != [b, d] || l3.dims() != [b, 2 * d] {
            candle::bail!(
                "{name}: y {:?}, s {:?}, h {:?} for {d} coordinates",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let out = map3(
            name,
            [(s1, l1), (s2, l2), (s3, l3)],
            |y, s, h| forward_f32(y, s, h, &self.free_f32()),
            |y, s, h| {
                let mut out = vec![0.0f64; y.len()];
                forward_rows(y, s, h, &self.0, &mut out);
                out
            },
        )?;
        Ok((out, Shape::from((b, d))))
    }

    fn bwd(
        &self,
        y: &Tensor,
        s: &Tensor,
        _h: &Tensor,
        x: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if grad.track_op() || !grad.device().is_cpu() || grad.dtype() != y.dtype() {
            // x = (y − t) e^{−s}: dy = g e^{−s}, ds = −g x, dt = −dy.
            let dy = (grad * s.neg()?.exp()?)?;
            let ds = (grad * x)?.neg()?;
            let dt = dy.broadcast_mul(&free_row(&self.0, y)?)?.neg()?;
            let dh = Tensor::cat(&[&dt.zeros_like()?, &dt], 1)?;
            return Ok((Some(dy), Some(ds), Some(dh)));
        }
        let grad = grad.contiguous()?;
        let dy = grad.apply_op2_no_bwd(&s.detach(), &GradY)?;
        let ds = (&grad * &x.detach())?.neg()?;
        let dh = dy.apply_op1_no_bwd(&GradH(self.0.clone()))?;
        Ok((Some(dy), Some(ds), Some(dh)))
    }
}

impl CustomOp2 for GradY {
    fn name(&self) -> &'static str {
        "fm-affine-inverse-grad-y"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let name = self.name();
        if l1.shape() != l2.shape() {
            candle::bail!("{name}: gradient {:?}, s {:?}", l1.dims(), l2.dims());
        }
        let out = map2(name, (s1, l1), (s2, l2), grad_y_f32, |g, s| {
            let mut out = vec![0.0f64; g.len()];
            grad_y_loop(g, s, &mut out);
            out
        })?;
        Ok((out, l1.shape().clone()))
    }
}

impl CustomOp1 for GradH {
    fn name(&self) -> &'static str {
        "fm-affine-inverse-grad-h"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let (name, d) = (self.name(), self.0.len());
        let (b, dd) = l.shape().dims2()?;
        if dd != d {
            candle::bail!("{name}: gradient {:?} for {d} coordinates", l.dims());
        }
        let free32: Vec<f32> = self.0.iter().map(|&f| f as f32).collect();
        let out = map1(name, (s, l), |g| grad_h(g, &free32), |g| grad_h(g, &self.0))?;
        Ok((out, Shape::from((b, 2 * d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, flat, var};
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
            let g_ours = (&ours * probe.as_tensor())?.sum_all()?.backward()?;
            let g_theirs = (&theirs * probe.as_tensor())?.sum_all()?.backward()?;
            close(&flat(&ours), &flat(&theirs), tol, &format!("{dtype:?} x"));
            for (name, p) in [("y", &y), ("s", &s), ("h", &h)] {
                let (a, c) = (g_ours.get(p).expect("gradient"), g_theirs.get(p).expect("gradient"));
                assert_eq!(a.dims(), p.dims(), "d{name}");
                close(&flat(a), &flat(c), tol, &format!("{dtype:?} d{name}"));
            }
        }
        Ok(())
    }
}
