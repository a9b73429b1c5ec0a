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

use candle::{Shape, Tensor};

use super::cpu::{apply1, eval3, fusable, Kernel, Real};
use super::silu::{silu_backward, silu_forward};

/// SiLU, `x · sigmoid(x)`, with the fused backward pass.
pub(crate) fn silu(x: &Tensor) -> candle::Result<Tensor> {
    Fused::Silu.forward(x)
}

/// ELU with scale `alpha`, with the fused backward pass.
pub(crate) fn elu(x: &Tensor, alpha: f64) -> candle::Result<Tensor> {
    Fused::Elu(alpha).forward(x)
}

/// `grad · silu'(x)` in one pass, given `y = silu(x)` (no autograd graph).
pub(crate) fn silu_grad(x: &Tensor, y: &Tensor, grad: &Tensor) -> candle::Result<Tensor> {
    Fused::Silu.backward(x, y, grad)
}

/// `grad · elu'(x)` in one pass, given `y = elu(x)` (no autograd graph).
pub(crate) fn elu_grad(x: &Tensor, y: &Tensor, grad: &Tensor, alpha: f64) -> candle::Result<Tensor> {
    Fused::Elu(alpha).backward(x, y, grad)
}

/// Which fused activation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fused {
    /// `x · sigmoid(x)`.
    Silu,
    /// `x` for `x ≥ 0`, else `α (eˣ − 1)`.
    Elu(f64),
}

impl Fused {
    /// Applies the activation; non-CPU devices, non-contiguous inputs and
    /// other dtypes than f32/f64 use candle's ops (same values).
    fn forward(self, x: &Tensor) -> candle::Result<Tensor> {
        match (self, x.is_contiguous() && fusable(&[x])) {
            (_, true) => apply1(self, x),
            (Fused::Silu, false) => x.silu(),
            (Fused::Elu(alpha), false) => x.elu(alpha),
        }
    }

    /// `grad · σ'(x)` in one pass, given `y = σ(x)` (no autograd graph).
    fn backward(self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle::Result<Tensor> {
        let operands = [grad, x, y];
        if operands.iter().all(|t| t.is_contiguous()) && fusable(&operands) {
            eval3(Backward(self), grad, x, y)
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

impl Kernel<1> for Fused {
    type Dims = ();

    fn name(&self) -> &'static str {
        match self {
            Fused::Silu => "fm-silu",
            Fused::Elu(_) => "fm-elu",
        }
    }

    fn check(&self, [x]: [&Shape; 1]) -> candle::Result<((), Shape)> {
        Ok(((), x.clone()))
    }

    fn run<T: Real>(&self, [x]: [&[T]; 1], (): ()) -> Vec<T> {
        match *self {
            Fused::Silu => x.iter().map(|&v| v / (T::ONE + (-v).exp())).collect(),
            Fused::Elu(alpha) => {
                let alpha = T::from_f64(alpha);
                x.iter().map(|&v| if v.is_sign_positive() { v } else { (v.exp() - T::ONE) * alpha }).collect()
            }
        }
    }

    fn run_f32(&self, [x]: [&[f32]; 1], (): ()) -> Vec<f32> {
        match self {
            Fused::Silu => {
                let mut out = vec![0f32; x.len()];
                silu_forward(x, &mut out);
                out
            }
            Fused::Elu(_) => self.run([x], ()),
        }
    }

    fn backward(&self, [x]: [&Tensor; 1], y: &Tensor, grad: &Tensor) -> candle::Result<[Tensor; 1]> {
        // A gradient with a graph of its own needs the differentiable ops;
        // otherwise [`Fused::backward`] picks the fused pass where it applies.
        if grad.track_op() {
            return Ok([self.backward_ops(x, y, grad)?]);
        }
        Ok([Fused::backward(*self, x, y, grad)?])
    }
}

/// `f(g[i], x[i], y[i])` for every `i`.
fn zip3<T: Real>(g: &[T], x: &[T], y: &[T], f: impl Fn(T, T, T) -> T) -> Vec<T> {
    g.iter().zip(x.iter().zip(y)).map(|(&g, (&x, &y))| f(g, x, y)).collect()
}

/// `(grad, x, y) ↦ grad · σ'(x)` in one pass (`y = σ(x)`).
struct Backward(Fused);

impl Kernel<3> for Backward {
    type Dims = ();

    fn name(&self) -> &'static str {
        "fm-activation-backward"
    }

    fn check(&self, [g, _, _]: [&Shape; 3]) -> candle::Result<((), Shape)> {
        Ok(((), g.clone()))
    }

    fn run<T: Real>(&self, [g, x, y]: [&[T]; 3], (): ()) -> Vec<T> {
        match self.0 {
            // As candle: s = recip(exp(−x)·1 + 1); g · (s · (y·(−1) + 1) + y)
            // (multiplying by ±1 is exact, so the factors are dropped).
            Fused::Silu => zip3(g, x, y, |g, x, y| {
                let s = T::ONE / ((-x).exp() + T::ONE);
                g * (s * (-y + T::ONE) + y)
            }),
            Fused::Elu(alpha) => {
                let alpha = T::from_f64(alpha);
                zip3(g, x, y, |g, x, y| g * if x > T::ZERO { T::ONE } else { y + alpha })
            }
        }
    }

    fn run_f32(&self, [g, x, y]: [&[f32]; 3], (): ()) -> Vec<f32> {
        match self.0 {
            Fused::Silu => {
                let mut out = vec![0f32; g.len()];
                silu_backward(g, x, y, &mut out);
                out
            }
            Fused::Elu(_) => self.run([g, x, y], ()),
        }
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
