//! Softmax over the last dimension as one candle custom op with a one-pass
//! backward (candle's `softmax_last_dim` passes no gradient, and
//! `candle_nn::ops::softmax` is five tensor ops forward and more backward, each
//! a pass over the attention matrix: at 784 tokens and batch 128 that matrix
//! is 315 MB).
//!
//! Forward per row: `y = exp(x − max x) / Σ exp(x − max x)`; backward:
//! `ẋ = y · (ẏ − Σ ẏ y)`.

use candle::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu_kernel::{fusable, values, Real};

struct Softmax;

struct SoftmaxBackward;

fn forward_rows<T: Real>(x: &[T], n: usize) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(yr, xr)| {
        let max = xr.iter().copied().fold(xr[0], |m, v| if v > m { v } else { m });
        let mut sum = T::ZERO;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - max).exp();
            sum += *o;
        }
        for o in yr.iter_mut() {
            *o = *o / sum;
        }
    });
    y
}

fn backward_rows<T: Real>(dy: &[T], y: &[T], n: usize) -> Vec<T> {
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

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fm-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let n = last_dim(l);
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(forward_rows(values(v, l, "fm-softmax")?, n)),
            CpuStorage::F64(v) => CpuStorage::F64(forward_rows(values(v, l, "fm-softmax")?, n)),
            _ => candle::bail!("fm-softmax: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        if grad.track_op() {
            // Second order: differentiable tensor ops.
            let dot = (grad * y)?.sum_keepdim(D::Minus1)?;
            return Ok(Some((y * grad.broadcast_sub(&dot)?)?));
        }
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(y, &SoftmaxBackward)?))
    }
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "fm-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        lg: &Layout,
        y: &CpuStorage,
        ly: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let name = self.name();
        if lg.dims() != ly.dims() {
            candle::bail!("{name}: gradient {:?} and output {:?} differ", lg.dims(), ly.dims());
        }
        let n = last_dim(lg);
        let out = match (g, y) {
            (CpuStorage::F32(g), CpuStorage::F32(y)) => {
                CpuStorage::F32(backward_rows(values(g, lg, name)?, values(y, ly, name)?, n))
            }
            (CpuStorage::F64(g), CpuStorage::F64(y)) => {
                CpuStorage::F64(backward_rows(values(g, lg, name)?, values(y, ly, name)?, n))
            }
            _ => candle::bail!("{name}: f32 or f64 operands of one dtype only"),
        };
        Ok((out, lg.shape().clone()))
    }
}

/// Softmax over the last dimension, with gradients: one custom op on the CPU
/// (f32, f64), `candle_nn::ops::softmax` elsewhere.
///
/// # Shapes
/// - `(…, n)` → `(…, n)`
pub(crate) fn softmax_last_dim(x: &Tensor) -> candle::Result<Tensor> {
    if fusable(x) && x.rank() > 0 {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device, Var};

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("values")
    }

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
