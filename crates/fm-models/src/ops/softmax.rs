//! Softmax over the last dimension as one candle custom op with a one-pass
//! backward (candle's `softmax_last_dim` passes no gradient, and
//! `candle_nn::ops::softmax` is five tensor ops forward and more backward, each
//! a pass over the attention matrix: at 784 tokens and batch 128 that matrix
//! is 315 MB).
//!
//! Forward per row: `y = exp(x − max x) / Σ exp(x − max x)`; backward:
//! `ẋ = y · (ẏ − Σ ẏ y)`.

use candle::{Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu::{apply1, eval2, fusable, fusable_grad, Kernel, Real};
use super::pool::par_samples;

/// Softmax over the last dimension, with gradients: one custom op on the CPU
/// (f32, f64), `candle_nn::ops::softmax` elsewhere.
///
/// # Shapes
/// - `(…, n)` → `(…, n)`
pub(crate) fn softmax_last_dim(x: &Tensor) -> candle::Result<Tensor> {
    if x.rank() > 0 && fusable(&[x]) {
        apply1(Softmax, x)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// `x` → `y`, row by row.
struct Softmax;

/// `(ẏ, y)` → `ẋ`, row by row.
struct SoftmaxBackward;

/// The length of the rows (the last dimension).
fn last_dim(s: &Shape) -> usize {
    s.dims().last().copied().unwrap_or(1).max(1)
}

impl Kernel<1> for Softmax {
    /// The row length.
    type Dims = usize;

    fn name(&self) -> &'static str {
        "fm-softmax"
    }

    fn check(&self, [x]: [&Shape; 1]) -> candle::Result<(usize, Shape)> {
        Ok((last_dim(x), x.clone()))
    }

    fn run<T: Real>(&self, [x]: [&[T]; 1], n: usize) -> Vec<T> {
        par_samples(x, (x.len() / n, n, n), |xr, yr| {
            let max = xr.iter().copied().fold(xr[0], |m, v| if v > m { v } else { m });
            let mut sum = T::ZERO;
            for (o, &v) in yr.iter_mut().zip(xr) {
                *o = (v - max).exp();
                sum += *o;
            }
            for o in yr.iter_mut() {
                *o = *o / sum;
            }
        })
    }

    fn backward(&self, _x: [&Tensor; 1], y: &Tensor, grad: &Tensor) -> candle::Result<[Tensor; 1]> {
        if !fusable_grad(grad, y) {
            // Second order: differentiable tensor ops.
            let dot = (grad * y)?.sum_keepdim(D::Minus1)?;
            return Ok([(y * grad.broadcast_sub(&dot)?)?]);
        }
        Ok([eval2(SoftmaxBackward, grad, y)?])
    }
}

impl Kernel<2> for SoftmaxBackward {
    /// The row length.
    type Dims = usize;

    fn name(&self) -> &'static str {
        "fm-softmax-backward"
    }

    fn check(&self, [g, y]: [&Shape; 2]) -> candle::Result<(usize, Shape)> {
        if g.dims() != y.dims() {
            candle::bail!("{}: gradient {:?} and output {:?} differ", self.name(), g.dims(), y.dims());
        }
        Ok((last_dim(g), g.clone()))
    }

    fn run<T: Real>(&self, [dy, y]: [&[T]; 2], n: usize) -> Vec<T> {
        let mut dx = vec![T::ZERO; y.len()];
        dx.par_chunks_mut(n).zip(dy.par_chunks(n).zip(y.par_chunks(n))).for_each(|(dr, (gr, yr))| {
            let mut dot = T::ZERO;
            for (&g, &v) in gr.iter().zip(yr) {
                dot += g * v;
            }
            for (o, (&g, &v)) in dr.iter_mut().zip(gr.iter().zip(yr)) {
                *o = v * (g - dot);
            }
        });
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::flat;
    use candle::{DType, Device, Var};

    /// Values and gradient agree with `candle_nn::ops::softmax`, in f32 and f64.
    #[test]
    fn matches_candle_nn_softmax_and_its_gradient() -> candle::Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let raw: Vec<f64> = (0..3 * 4 * 9).map(|i| (i as f64 * 0.61).sin() * 4.0).collect();
            let x = Var::from_tensor(&Tensor::from_vec(raw, (3, 4, 9), &dev)?.to_dtype(dtype)?)?;
            let w: Vec<f64> = (0..3 * 4 * 9).map(|i| (i as f64 * 0.29).cos()).collect();
            let w = Tensor::from_vec(w, (3, 4, 9), &dev)?.to_dtype(dtype)?;
            let ours = softmax_last_dim(&x)?;
            let theirs = candle_nn::ops::softmax(&x, D::Minus1)?;
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
            for (u, v) in flat(&ours).iter().zip(flat(&theirs)) {
                assert!((u - v).abs() < tol, "{dtype:?} forward: {u} vs {v}");
            }
            let a = flat((ours * &w)?.sum_all()?.backward()?.get(&x).expect("gradient"));
            let b = flat((theirs * &w)?.sum_all()?.backward()?.get(&x).expect("gradient"));
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < tol, "{dtype:?} backward: {u} vs {v}");
            }
        }
        Ok(())
    }
}
