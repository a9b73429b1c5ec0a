//! A fully connected layer with bias, `y = x · Wᵀ + b`, as one candle custom
//! op with its own backward pass.
//!
//! With candle's `Linear`, the bias is a broadcast add whose backward pass
//! sums the gradient over the batch through candle's generic strided
//! reduction (an index division per element): for RealNVP's image
//! conditioners (`64 → 1568`, batch 256) those sums took a sixth of a
//! training step. Here the forward pass writes the bias and lets `gemm`
//! accumulate `x · Wᵀ` onto it; the backward pass is two `gemm` calls
//! (`dx = g · W`, `dW = gᵀ · x`) and one pass over the rows of `g` for `db`.
//!
//! When the incoming gradient itself carries a graph (second-order autograd,
//! `CANDLE_GRAD_DO_NOT_DETACH`), off the CPU, or for other dtypes than f32
//! and f64, the composed ops are used.

use candle::{Shape, Tensor};
use gemm::Parallelism;

use super::cpu::{apply3, eval1, eval2, fusable, fusable_grad, Kernel, Real};
use super::dense::{add_rows, gemm_into};
use super::pool::{par_row_blocks, RowsOut};

/// `x · Wᵀ + b`.
///
/// # Shapes
/// - `x`: `(n, K)`, `weight`: `(O, K)`, `bias`: `(O,)` → `(n, O)`
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle::Result<Tensor> {
    if x.rank() == 2 && fusable(&[x, weight, bias]) {
        apply3(FusedLinear, x, weight, bias)
    } else {
        linear_by_ops(x, weight, bias)
    }
}

/// [`linear`] from candle's tensor ops (as `candle_nn::Linear`): the
/// reference, and the path on other devices.
pub(crate) fn linear_by_ops(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle::Result<Tensor> {
    x.matmul(&weight.t()?)?.broadcast_add(bias)
}

/// Forward: `(x (n, K), W (O, K), b (O,))` → `(n, O)`.
struct FusedLinear;

/// The products of the backward pass, `(g (n, O), ·)`: `dx = g · W`
/// (`W (O, K)` → `(n, K)`) or `dW = gᵀ · x` (`x (n, K)` → `(O, K)`).
#[derive(Clone, Copy)]
enum Grad {
    Input,
    Weight,
}

/// The bias gradient `Σ_{n, t} g[n, ·, t]`: `g (n, O)` or `(n, O, T)` →
/// `(O,)`, summed per sample in position order, then over samples in order
/// (shared with the channel-wise linear map).
pub(crate) struct GradBias;

impl Kernel<3> for FusedLinear {
    type Dims = (usize, usize);

    fn name(&self) -> &'static str {
        "fm-linear"
    }

    fn check(&self, [x, w, b]: [&Shape; 3]) -> candle::Result<(Self::Dims, Shape)> {
        let (n, k) = x.dims2()?;
        let (o, kw) = w.dims2()?;
        if kw != k || b.dims() != [o] {
            candle::bail!("{}: x {:?}, weight {:?}, bias {:?}", self.name(), x.dims(), w.dims(), b.dims());
        }
        Ok(((n, k), Shape::from((n, o))))
    }

    fn run<T: Real>(&self, [x, w, b]: [&[T]; 3], (n, k): Self::Dims) -> Vec<T> {
        let o = b.len();
        let mut y = Vec::with_capacity(n * o);
        for _ in 0..n {
            y.extend_from_slice(b);
        }
        let out = RowsOut::new(&mut y, o);
        par_row_blocks(n, |r| {
            // SAFETY: par_row_blocks hands out disjoint row ranges.
            let y = unsafe { out.rows(r.clone()) };
            gemm_into(
                (r.len(), o, k),
                y,
                (1, o),
                true,
                &x[r.start * k..],
                (1, k),
                w,
                (k, 1),
                Parallelism::None,
            );
        });
        y
    }

    fn backward(
        &self,
        [x, weight, _]: [&Tensor; 3],
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<[Tensor; 3]> {
        if !fusable_grad(grad, x) {
            return Ok([grad.matmul(weight)?, grad.t()?.matmul(x)?, grad.sum(0)?]);
        }
        Ok([eval2(Grad::Input, grad, weight)?, eval2(Grad::Weight, grad, x)?, eval1(GradBias, grad)?])
    }
}

impl Kernel<2> for Grad {
    type Dims = (usize, usize, usize);

    fn name(&self) -> &'static str {
        match self {
            Grad::Input => "fm-linear-grad-input",
            Grad::Weight => "fm-linear-grad-weight",
        }
    }

    fn check(&self, [g, other]: [&Shape; 2]) -> candle::Result<(Self::Dims, Shape)> {
        let (n, o) = g.dims2()?;
        let (rows, k) = other.dims2()?;
        let (need, out) = match self {
            Grad::Input => (o, Shape::from((n, k))),
            Grad::Weight => (n, Shape::from((o, k))),
        };
        if rows != need {
            candle::bail!("{}: gradient {:?}, operand {:?}", self.name(), g.dims(), other.dims());
        }
        Ok(((n, o, k), out))
    }

    fn run<T: Real>(&self, [g, other]: [&[T]; 2], (n, o, k): Self::Dims) -> Vec<T> {
        match self {
            Grad::Input => {
                let w = other;
                let mut dx = vec![T::ZERO; n * k];
                let out = RowsOut::new(&mut dx, k);
                par_row_blocks(n, |r| {
                    // SAFETY: par_row_blocks hands out disjoint row ranges.
                    let dx = unsafe { out.rows(r.clone()) };
                    let g = &g[r.start * o..];
                    gemm_into((r.len(), k, o), dx, (1, k), false, g, (1, o), w, (1, k), Parallelism::None);
                });
                dx
            }
            // In blocks of rows of dW (so no partial sums to add).
            Grad::Weight => {
                let x = other;
                let mut dw = vec![T::ZERO; o * k];
                let out = RowsOut::new(&mut dw, k);
                par_row_blocks(o, |r| {
                    // SAFETY: par_row_blocks hands out disjoint row ranges.
                    let dw = unsafe { out.rows(r.clone()) };
                    let g = &g[r.start..];
                    gemm_into((r.len(), k, n), dw, (1, k), false, g, (o, 1), x, (1, k), Parallelism::None);
                });
                dw
            }
        }
    }
}

impl Kernel<1> for GradBias {
    type Dims = (usize, usize, usize);

    fn name(&self) -> &'static str {
        "fm-linear-grad-bias"
    }

    fn check(&self, [g]: [&Shape; 1]) -> candle::Result<(Self::Dims, Shape)> {
        let (n, o, t) = match *g.dims() {
            [n, o] => (n, o, 1),
            [n, o, t] => (n, o, t),
            _ => candle::bail!("{}: the gradient must be 2-D or 3-D, got {:?}", self.name(), g.dims()),
        };
        Ok(((n, o, t), Shape::from(o)))
    }

    fn run<T: Real>(&self, [g]: [&[T]; 1], (n, o, t): Self::Dims) -> Vec<T> {
        let mut out = vec![T::ZERO; o];
        if t == 1 {
            // The rows added in order.
            add_rows(&mut out, &g[..n * o]);
            return out;
        }
        for s in 0..n {
            for (acc, row) in out.iter_mut().zip(g[s * o * t..(s + 1) * o * t].chunks_exact(t)) {
                *acc += row.iter().fold(T::ZERO, |a, &v| a + v);
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

    /// The custom op equals `x · Wᵀ + b` from candle's ops, values and the
    /// gradients of `x`, `W` and `b`, in f32 and f64, from one row up.
    #[test]
    fn matches_the_composed_ops() -> candle::Result<()> {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            for &(n, k, o) in &[(1, 3, 2), (5, 7, 4), (33, 18, 70)] {
                let (x, w, b) = (var(&[n, k], 0.0, dtype), var(&[o, k], 1.5, dtype), var(&[o], 2.5, dtype));
                let ours = linear(&x, &w, &b)?;
                let theirs = linear_by_ops(&x, &w, &b)?;
                let what = format!("{dtype:?} n{n} k{k} o{o}");
                assert_eq!(ours.dims(), [n, o], "{what}");
                let probe = var(&[n, o], 7.0, dtype);
                let params = [("x", &x), ("weight", &w), ("bias", &b)];
                check_against(&ours, &theirs, &probe, &params, tol, &what)?;
            }
        }
        Ok(())
    }
}
