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

use candle::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;

use super::cpu::{gemm_into, map1, map2, map3, par_items, Elem, RowsOut};
use super::cpu_kernel::fusable;

/// Partitions of the batch whose weight-gradient sums are added in order.
const PARTITIONS: usize = 4;

/// `W · x + b` over the channel axis.
///
/// # Shapes
/// - `x`: `(n, K, T)`, `weight`: `(O, K)`, `bias`: `(O,)` → `(n, O, T)`
pub(crate) fn channel_linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle::Result<Tensor> {
    let same = x.dtype() == weight.dtype() && x.dtype() == bias.dtype();
    if fusable(x) && same && weight.device().is_cpu() && bias.device().is_cpu() {
        x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, ChannelLinear)
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

/// Runs `f(sample, out_block)` over the `n` blocks of `out`: spread over
/// samples on candle's CPU worker pool when there are at least as many
/// samples as threads, otherwise sample by sample with `gemm` itself threaded.
fn per_sample<T: Elem>(out: &mut [T], n: usize, f: impl Fn(usize, &mut [T], Parallelism) + Sync) {
    if n == 0 {
        return;
    }
    let len = out.len() / n;
    let threads = candle::utils::get_num_threads();
    if threads > 1 && n < threads {
        for (s, o) in out.chunks_mut(len).enumerate() {
            f(s, o, Parallelism::Rayon(threads));
        }
    } else {
        let rows = RowsOut::new(out, len);
        par_items(n, |r| {
            for s in r {
                // SAFETY: par_items hands out disjoint ranges of samples.
                f(s, unsafe { rows.rows(s..s + 1) }, Parallelism::None);
            }
        });
    }
}

/// Forward: `(x (n, K, T), W (O, K), b (O,))` → `(n, O, T)`.
struct ChannelLinear;

/// `Wᵀ · g` per sample: `(W (O, K), g (n, O, T))` → `(n, K, T)`.
struct GradInput;

/// `Σ_n g[n] · x[n]ᵀ`: `(g (n, O, T), x (n, K, T))` → `(O, K)`.
struct GradWeight;

/// `Σ_{n, t} g[n, ·, t]`: `g (n, O, T)` → `(O,)`.
struct GradBias;

fn forward<T: Elem>(x: &[T], w: &[T], b: &[T], (n, k, t): (usize, usize, usize)) -> Vec<T> {
    let o = b.len();
    let mut out = vec![T::default(); n * o * t];
    per_sample(&mut out, n, |s, y, par| {
        for (row, &bias) in y.chunks_exact_mut(t).zip(b) {
            row.fill(bias);
        }
        gemm_into((o, t, k), y, (1, t), true, w, (1, k), &x[s * k * t..(s + 1) * k * t], (1, t), par);
    });
    out
}

fn grad_input<T: Elem>(w: &[T], g: &[T], (n, o, t): (usize, usize, usize)) -> Vec<T> {
    let k = w.len() / o;
    let mut out = vec![T::default(); n * k * t];
    per_sample(&mut out, n, |s, dx, par| {
        gemm_into((k, t, o), dx, (1, t), false, w, (k, 1), &g[s * o * t..(s + 1) * o * t], (1, t), par);
    });
    out
}

fn grad_weight<T: Elem>(g: &[T], x: &[T], (n, o, t): (usize, usize, usize), k: usize) -> Vec<T> {
    let per = n.div_ceil(PARTITIONS).max(1);
    let parts = n.div_ceil(per);
    if parts == 0 {
        return vec![T::default(); o * k];
    }
    let threads = candle::utils::get_num_threads();
    let inner = if threads > 1 && parts < threads { Parallelism::Rayon(threads) } else { Parallelism::None };
    let mut buf = vec![T::default(); parts * o * k];
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
    for part in rest.chunks_exact(size.max(1)) {
        total.iter_mut().zip(part).for_each(|(a, &b)| *a = *a + b);
    }
    buf.truncate(size);
    buf
}

/// The bias gradient `Σ_{n, t} g[n, o, t]`, summed per sample in position
/// order, then over samples in order.
fn grad_bias<T: Elem>(g: &[T], (n, o, t): (usize, usize, usize)) -> Vec<T> {
    let mut out = vec![T::default(); o];
    for s in 0..n {
        for (acc, row) in out.iter_mut().zip(g[s * o * t..(s + 1) * o * t].chunks_exact(t)) {
            *acc = *acc + row.iter().fold(T::default(), |a, &v| a + v);
        }
    }
    out
}

fn dims3(l: &Layout, what: &str) -> candle::Result<(usize, usize, usize)> {
    l.shape()
        .dims3()
        .map_err(|_| candle::Error::Msg(format!("fm-channel-linear: {what} must be 3-D, got {:?}", l.dims())))
}

impl CustomOp3 for ChannelLinear {
    fn name(&self) -> &'static str {
        "fm-channel-linear"
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
        let (n, k, t) = dims3(l1, "x")?;
        let (o, kw) = l2.shape().dims2()?;
        if kw != k || l3.dims() != [o] {
            candle::bail!(
                "fm-channel-linear: x {:?}, weight {:?}, bias {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let out = map3(
            self.name(),
            [(s1, l1), (s2, l2), (s3, l3)],
            |x, w, b| forward(x, w, b, (n, k, t)),
            |x, w, b| forward(x, w, b, (n, k, t)),
        )?;
        Ok((out, Shape::from((n, o, t))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let fusable = !grad.track_op() && grad.device().is_cpu() && grad.dtype() == x.dtype();
        if !fusable {
            let dx = weight.t()?.broadcast_matmul(grad)?;
            let dw = grad.matmul(&x.t()?)?.sum(0)?;
            let db = grad.sum(2)?.sum(0)?;
            return Ok((Some(dx), Some(dw), Some(db)));
        }
        let grad = grad.contiguous()?;
        let (weight, x) = (weight.detach(), x.detach());
        let dx = weight.apply_op2_no_bwd(&grad, &GradInput)?;
        let dw = grad.apply_op2_no_bwd(&x, &GradWeight)?;
        let db = grad.apply_op1_no_bwd(&GradBias)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "fm-channel-linear-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (o, k) = l1.shape().dims2()?;
        let (n, og, t) = dims3(l2, "gradient")?;
        if og != o {
            candle::bail!("{}: weight {:?}, gradient {:?}", self.name(), l1.dims(), l2.dims());
        }
        let dims = (n, o, t);
        let out = map2(
            self.name(),
            (s1, l1),
            (s2, l2),
            |w, g| grad_input(w, g, dims),
            |w, g| grad_input(w, g, dims),
        )?;
        Ok((out, Shape::from((n, k, t))))
    }
}

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "fm-channel-linear-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let (n, o, t) = dims3(l1, "gradient")?;
        let (nx, k, tx) = dims3(l2, "x")?;
        if (nx, tx) != (n, t) {
            candle::bail!("{}: gradient {:?}, x {:?}", self.name(), l1.dims(), l2.dims());
        }
        let dims = (n, o, t);
        let out = map2(
            self.name(),
            (s1, l1),
            (s2, l2),
            |g, x| grad_weight(g, x, dims, k),
            |g, x| grad_weight(g, x, dims, k),
        )?;
        Ok((out, Shape::from((o, k))))
    }
}

impl CustomOp1 for GradBias {
    fn name(&self) -> &'static str {
        "fm-channel-linear-grad-bias"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let (n, o, t) = dims3(l, "gradient")?;
        let out = map1(self.name(), (s, l), |g| grad_bias(g, (n, o, t)), |g| grad_bias(g, (n, o, t)))?;
        Ok((out, Shape::from(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, flat, var};
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
                close(&flat(&ours), &flat(&theirs), tol, &what);
                let probe = var(&[n, o, t], 7.0, dtype);
                let g_ours = (ours * probe.as_tensor())?.sum_all()?.backward()?;
                let g_theirs = (theirs * probe.as_tensor())?.sum_all()?.backward()?;
                for (name, p) in [("x", &x), ("weight", &w), ("bias", &b)] {
                    let (a, c) = (g_ours.get(p).expect("gradient"), g_theirs.get(p).expect("gradient"));
                    assert_eq!(a.dims(), p.dims(), "{what} d{name}");
                    close(&flat(a), &flat(c), tol, &format!("{what} d{name}"));
                }
            }
        }
        Ok(())
    }
}
