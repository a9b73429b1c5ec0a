//! The matrix product and bias of every U-Net convolution as one custom op:
//! `y[n, o, t] = Σ_k W[o, k] · x[n, k, t] + b[o]`.
//!
//! Composed from candle's ops (`W.broadcast_matmul(x) + b`), the backward
//! pass materialises the weight gradient once per sample, `(n, O, K)`, and
//! then sums it over the batch, and sums the bias gradient over the batch and
//! positions, both through candle's generic strided reduction (an index
//! division per element). On MNIST shapes those two sums took about a sixth
//! of a U-Net training step. Here the forward pass writes the bias and lets
//! `gemm` accumulate the product onto it, and the backward pass is one `gemm`
//! per sample for the input gradient, `gemm` accumulation over the batch for
//! the weight gradient (in a fixed number of partitions, summed in order, so
//! the result does not depend on the thread count) and one contiguous pass
//! for the bias gradient.
//!
//! When the incoming gradient itself carries a graph (second-order autograd,
//! `CANDLE_GRAD_DO_NOT_DETACH`), or off the CPU, the composed ops are used.

use candle::{Shape, Tensor};
use gemm::Parallelism;

use super::cpu::{apply3, eval1, eval2, fusable, fusable_grad, Kernel, Real};
use super::dense::{add_rows, gemm_into};
use super::linear::GradBias;
use super::pool::{par_items, per_sample, RowsOut};

/// Partitions of the batch whose weight-gradient sums are added in order.
const PARTITIONS: usize = 4;

/// `W · x + b` over the channel axis.
///
/// # Shapes
/// - `x`: `(n, K, T)`, `weight`: `(O, K)`, `bias`: `(O,)` → `(n, O, T)`
pub(crate) fn channel_linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle::Result<Tensor> {
    if fusable(&[x, weight, bias]) {
        apply3(ChannelLinear, x, weight, bias)
    } else {
        channel_linear_by_ops(x, weight, bias)
    }
}

/// [`channel_linear`] from candle's tensor ops: the reference, and the path
/// on other devices.
pub(crate) fn channel_linear_by_ops(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle::Result<Tensor> {
    let o = weight.dim(0)?;
    weight.broadcast_matmul(x)?.broadcast_add(&bias.reshape((1, o, 1))?)
}

/// Forward: `(x (n, K, T), W (O, K), b (O,))` → `(n, O, T)`.
struct ChannelLinear;

/// `Wᵀ · g` per sample: `(W (O, K), g (n, O, T))` → `(n, K, T)`.
struct GradInput;

/// `Σ_n g[n] · x[n]ᵀ`: `(g (n, O, T), x (n, K, T))` → `(O, K)`.
struct GradWeight;

fn dims3(s: &Shape, what: &str) -> candle::Result<(usize, usize, usize)> {
    s.dims3()
        .map_err(|_| candle::Error::Msg(format!("fm-channel-linear: {what} must be 3-D, got {:?}", s.dims())))
}

impl Kernel<3> for ChannelLinear {
    type Dims = (usize, usize, usize);

    fn name(&self) -> &'static str {
        "fm-channel-linear"
    }

    fn check(&self, [x, w, b]: [&Shape; 3]) -> candle::Result<(Self::Dims, Shape)> {
        let (n, k, t) = dims3(x, "x")?;
        let (o, kw) = w.dims2()?;
        if kw != k || b.dims() != [o] {
            candle::bail!("{}: x {:?}, weight {:?}, bias {:?}", self.name(), x.dims(), w.dims(), b.dims());
        }
        Ok(((n, k, t), Shape::from((n, o, t))))
    }

    fn run<T: Real>(&self, [x, w, b]: [&[T]; 3], (n, k, t): Self::Dims) -> Vec<T> {
        let o = b.len();
        let mut out = vec![T::ZERO; n * o * t];
        per_sample(&mut out, n, |s, y, par| {
            for (row, &bias) in y.chunks_exact_mut(t).zip(b) {
                row.fill(bias);
            }
            gemm_into((o, t, k), y, (1, t), true, w, (1, k), &x[s * k * t..(s + 1) * k * t], (1, t), par);
        });
        out
    }

    fn backward(
        &self,
        [x, weight, _]: [&Tensor; 3],
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<[Tensor; 3]> {
        if !fusable_grad(grad, x) {
            let dx = weight.t()?.broadcast_matmul(grad)?;
            let dw = grad.matmul(&x.t()?)?.sum(0)?;
            let db = grad.sum(2)?.sum(0)?;
            return Ok([dx, dw, db]);
        }
        Ok([eval2(GradInput, weight, grad)?, eval2(GradWeight, grad, x)?, eval1(GradBias, grad)?])
    }
}

impl Kernel<2> for GradInput {
    type Dims = (usize, usize, usize, usize);

    fn name(&self) -> &'static str {
        "fm-channel-linear-grad-input"
    }

    fn check(&self, [w, g]: [&Shape; 2]) -> candle::Result<(Self::Dims, Shape)> {
        let (o, k) = w.dims2()?;
        let (n, og, t) = dims3(g, "gradient")?;
        if og != o {
            candle::bail!("{}: weight {:?}, gradient {:?}", self.name(), w.dims(), g.dims());
        }
        Ok(((n, o, t, k), Shape::from((n, k, t))))
    }

    fn run<T: Real>(&self, [w, g]: [&[T]; 2], (n, o, t, k): Self::Dims) -> Vec<T> {
        let mut out = vec![T::ZERO; n * k * t];
        per_sample(&mut out, n, |s, dx, par| {
            gemm_into((k, t, o), dx, (1, t), false, w, (k, 1), &g[s * o * t..(s + 1) * o * t], (1, t), par);
        });
        out
    }
}

impl Kernel<2> for GradWeight {
    type Dims = (usize, usize, usize, usize);

    fn name(&self) -> &'static str {
        "fm-channel-linear-grad-weight"
    }

    fn check(&self, [g, x]: [&Shape; 2]) -> candle::Result<(Self::Dims, Shape)> {
        let (n, o, t) = dims3(g, "gradient")?;
        let (nx, k, tx) = dims3(x, "x")?;
        if (nx, tx) != (n, t) {
            candle::bail!("{}: gradient {:?}, x {:?}", self.name(), g.dims(), x.dims());
        }
        Ok(((n, o, t, k), Shape::from((o, k))))
    }

    fn run<T: Real>(&self, [g, x]: [&[T]; 2], (n, o, t, k): Self::Dims) -> Vec<T> {
        let per = n.div_ceil(PARTITIONS).max(1);
        let parts = n.div_ceil(per);
        if parts == 0 {
            return vec![T::ZERO; o * k];
        }
        let threads = candle::utils::get_num_threads();
        let inner =
            if threads > 1 && parts < threads { Parallelism::Rayon(threads) } else { Parallelism::None };
        let mut buf = vec![T::ZERO; parts * o * k];
        let out = RowsOut::new(&mut buf, o * k);
        par_items(parts, |r| {
            for p in r {
                // SAFETY: par_items hands out disjoint ranges of partitions.
                let acc = unsafe { out.rows(p..p + 1) };
                for s in p * per..((p + 1) * per).min(n) {
                    let (gs, xs) = (&g[s * o * t..(s + 1) * o * t], &x[s * k * t..(s + 1) * k * t]);
                    gemm_into((o, k, t), acc, (1, k), s > p * per, gs, (1, t), xs, (t, 1), inner);
                }
            }
        });
        // The partitions' sums, added in order.
        let size = o * k;
        let (total, rest) = buf.split_at_mut(size.min(parts * size));
        add_rows(total, rest);
        buf.truncate(size);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_against, var};
    use candle::DType;

    /// The custom op equals the composed ops, values and the gradients of
    /// `x`, `W` and `b`, in f32 and f64, for batches below, at and above the
    /// partition count.
    #[test]
    fn matches_the_composed_ops() -> candle::Result<()> {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            for &(n, k, o, t) in &[(1, 3, 2, 5), (4, 7, 5, 9), (9, 18, 6, 13)] {
                let (x, w, b) =
                    (var(&[n, k, t], 0.0, dtype), var(&[o, k], 1.5, dtype), var(&[o], 2.5, dtype));
                let ours = channel_linear(&x, &w, &b)?;
                let theirs = channel_linear_by_ops(&x, &w, &b)?;
                let what = format!("{dtype:?} n{n} k{k} o{o} t{t}");
                assert_eq!(ours.dims(), [n, o, t], "{what}");
                let probe = var(&[n, o, t], 7.0, dtype);
                let params = [("x", &x), ("weight", &w), ("bias", &b)];
                check_against(&ours, &theirs, &probe, &params, tol, &what)?;
            }
        }
        Ok(())
    }
}
