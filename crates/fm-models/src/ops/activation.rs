//! SiLU and ELU as single candle custom ops with a fused backward pass.
//!
//! candle's own backward of SiLU is five tensor ops (and of ELU nine), each
//! allocating a temporary; here the forward is one pass and the backward one
//! more pass computing `grad · σ'(x)` directly. In f64, and for ELU, both
//! evaluate exactly the same floating-point expressions as candle's ops, so
//! results are bit-identical to `Tensor::silu` and `Tensor::elu`. In f32,
//! SiLU uses the vectorised kernels of [`super::silu`] (AVX2/FMA
//! where available) and agrees with candle's op to a few ulp.
//!
//! When the incoming gradient itself carries a graph (second-order autograd,
//! `CANDLE_GRAD_DO_NOT_DETACH`), the backward falls back to differentiable
//! tensor ops, so higher derivatives stay correct.

use candle::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};

use super::silu;

/// Which fused activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fused {
    /// `x · sigmoid(x)`.
    Silu,
    /// `x` for `x ≥ 0`, else `α (eˣ − 1)`.
    Elu(f64),
}

impl Fused {
    /// Applies the activation; non-CPU devices, non-contiguous inputs and
    /// other dtypes than f32/f64 use candle's ops (same values).
    pub(crate) fn forward(self, x: &Tensor) -> candle::Result<Tensor> {
        let fusable = x.device().is_cpu()
            && x.is_contiguous()
            && matches!(x.dtype(), candle::DType::F32 | candle::DType::F64);
        match (self, fusable) {
            (_, true) => x.apply_op1(self),
            (Fused::Silu, false) => x.silu(),
            (Fused::Elu(alpha), false) => x.elu(alpha),
        }
    }

    /// `grad · σ'(x)` in one pass, given `y = σ(x)` (no autograd graph).
    pub(crate) fn backward(self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle::Result<Tensor> {
        let fusable = grad.is_contiguous()
            && x.is_contiguous()
            && y.is_contiguous()
            && grad.dtype() == x.dtype()
            && grad.device().is_cpu()
            && matches!(x.dtype(), candle::DType::F32 | candle::DType::F64);
        if fusable {
            grad.apply_op3_no_bwd(x, y, &Backward(self))
        } else {
            self.backward_ops(x, y, grad)
        }
    }

    /// `grad · σ'(x)` from tensor ops (differentiable; candle's own formulas).
    fn backward_ops(self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle::Result<Tensor> {
        match self {
            Fused::Silu => {
                let s = (x.neg()?.exp()? + 1.)?.recip()?;
                grad * ((&s * (1. - y)?)? + y)?
            }
            Fused::Elu(alpha) => {
                let zeros = x.zeros_like()?;
                let pos = x.gt(&zeros)?.to_dtype(x.dtype())?;
                let neg = x.le(&zeros)?.to_dtype(x.dtype())?;
                grad * (pos + (neg * (y + alpha)?)?)?
            }
        }
    }
}

fn slice<'a, T>(v: &'a [T], l: &Layout) -> candle::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle::bail!("fused activation: non-contiguous operand"),
    }
}

macro_rules! silu_fwd {
    ($x:expr) => {
        $x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
    };
}

macro_rules! elu_fwd {
    ($x:expr, $alpha:expr) => {
        $x.iter().map(|&v| if v.is_sign_positive() { v } else { (v.exp() - 1.0) * $alpha }).collect()
    };
}

impl CustomOp1 for Fused {
    fn name(&self) -> &'static str {
        match self {
            Fused::Silu => "fm-silu",
            Fused::Elu(_) => "fm-elu",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let out = match (self, s) {
            (Fused::Silu, CpuStorage::F32(v)) => {
                let x = slice(v, l)?;
                let mut out = vec![0f32; x.len()];
                silu::silu_forward(x, &mut out);
                CpuStorage::F32(out)
            }
            (Fused::Silu, CpuStorage::F64(v)) => CpuStorage::F64(silu_fwd!(slice(v, l)?)),
            (Fused::Elu(a), CpuStorage::F32(v)) => CpuStorage::F32(elu_fwd!(slice(v, l)?, *a as f32)),
            (Fused::Elu(a), CpuStorage::F64(v)) => CpuStorage::F64(elu_fwd!(slice(v, l)?, *a)),
            _ => candle::bail!("fused activation: f32 or f64 only"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let fusable = !grad.track_op()
            && grad.is_contiguous()
            && x.is_contiguous()
            && y.is_contiguous()
            && grad.dtype() == x.dtype()
            && grad.device().is_cpu();
        if fusable {
            Ok(Some(self.backward(x, y, grad)?))
        } else {
            Ok(Some(self.backward_ops(x, y, grad)?))
        }
    }
}

/// `(grad, x, y) ↦ grad · σ'(x)` in one pass (`y = σ(x)`).
struct Backward(Fused);

macro_rules! silu_bwd {
    ($g:expr, $x:expr, $y:expr) => {
        $g.iter()
            .zip($x.iter().zip($y.iter()))
            .map(|(&g, (&x, &y))| {
                // As candle: s = recip(exp(−x)·1 + 1); g · (s · (y·(−1) + 1) + y)
                // (multiplying by ±1 is exact, so the factors are dropped).
                let s = 1.0 / ((-x).exp() + 1.0);
                g * (s * (-y + 1.0) + y)
            })
            .collect()
    };
}

macro_rules! elu_bwd {
    ($g:expr, $x:expr, $y:expr, $alpha:expr) => {
        $g.iter()
            .zip($x.iter().zip($y.iter()))
            .map(|(&g, (&x, &y))| g * if x > 0.0 { 1.0 } else { y + $alpha })
            .collect()
    };
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "fm-activation-backward"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        lg: &Layout,
        x: &CpuStorage,
        lx: &Layout,
        y: &CpuStorage,
        ly: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let out = match (self.0, g, x, y) {
            (Fused::Silu, CpuStorage::F32(g), CpuStorage::F32(x), CpuStorage::F32(y)) => {
                let g = slice(g, lg)?;
                let mut out = vec![0f32; g.len()];
                silu::silu_backward(g, slice(x, lx)?, slice(y, ly)?, &mut out);
                CpuStorage::F32(out)
            }
            (Fused::Silu, CpuStorage::F64(g), CpuStorage::F64(x), CpuStorage::F64(y)) => {
                CpuStorage::F64(silu_bwd!(slice(g, lg)?, slice(x, lx)?, slice(y, ly)?))
            }
            (Fused::Elu(a), CpuStorage::F32(g), CpuStorage::F32(x), CpuStorage::F32(y)) => {
                CpuStorage::F32(elu_bwd!(slice(g, lg)?, slice(x, lx)?, slice(y, ly)?, a as f32))
            }
            (Fused::Elu(a), CpuStorage::F64(g), CpuStorage::F64(x), CpuStorage::F64(y)) => {
                CpuStorage::F64(elu_bwd!(slice(g, lg)?, slice(x, lx)?, slice(y, ly)?, a))
            }
            _ => candle::bail!("fused activation backward: mismatched dtypes"),
        };
        Ok((out, lg.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device, Var};

    /// Values and gradients equal candle's own ops bit for bit, in f64 and
    /// for ELU; f32 SiLU (vectorised exponential) to a few ulp.
    #[test]
    fn matches_candle_ops() -> candle::Result<()> {
        let dev = Device::Cpu;
        let raw: Vec<f64> =
            (0..301).map(|i| (i as f64 - 150.0) * 0.071 + if i == 150 { 0.0 } else { 0.003 }).collect();
        for dtype in [DType::F32, DType::F64] {
            for op in [Fused::Silu, Fused::Elu(1.0), Fused::Elu(1.6732632423543772)] {
                let x = Var::from_tensor(&Tensor::from_vec(raw.clone(), (7, 43), &dev)?.to_dtype(dtype)?)?;
                let w = Tensor::from_vec(
                    (0..301).map(|i| (i as f64 * 0.37).sin()).collect::<Vec<_>>(),
                    (7, 43),
                    &dev,
                )?
                .to_dtype(dtype)?;
                let ours = op.forward(&x)?;
                let theirs = match op {
                    Fused::Silu => x.silu()?,
                    Fused::Elu(a) => x.elu(a)?,
                };
                let f64s = |t: &Tensor| -> candle::Result<Vec<f64>> {
                    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()
                };
                let exact = !(op == Fused::Silu && dtype == DType::F32);
                let same = |a: &[f64], b: &[f64], what: &str| {
                    if exact {
                        assert_eq!(a, b, "{op:?} {dtype:?} {what}");
                    } else {
                        for (p, q) in a.iter().zip(b) {
                            // Relative, plus an absolute floor for the cancellation where σ' crosses 0.
                            assert!((p - q).abs() <= 5e-7 * q.abs() + 1e-7, "{op:?} {what}: {p} vs {q}");
                        }
                        assert_ne!(a, b, "f32 SiLU should use its own exponential");
                    }
                };
                same(&f64s(&ours)?, &f64s(&theirs)?, "forward");
                let g_ours = (ours * &w)?.sum_all()?.backward()?;
                let g_theirs = (theirs * &w)?.sum_all()?.backward()?;
                let (a, b) = (g_ours.get(&x).expect("gradient"), g_theirs.get(&x).expect("gradient"));
                same(&f64s(a)?, &f64s(b)?, "backward");
                // And the composite fallback agrees with the fused pass.
                let y = op.forward(&x)?;
                let fallback = op.backward_ops(&x, &y, &w)?;
                same(&f64s(&fallback)?, &f64s(a)?, "fallback");
            }
        }
        Ok(())
    }
}
