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

use candle::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;

use super::cpu::{gemm_into, map1, map2, map3, par_row_blocks, Elem, RowsOut};

/// `x · Wᵀ + b`.
///
/// # Shapes
/// - `x`: `(n, K)`, `weight`: `(O, K)`, `bias`: `(O,)` → `(n, O)`
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle::Result<Tensor> {
    let fusable = x.device().is_cpu()
        && weight.device().is_cpu()
        && bias.device().is_cpu()
        && x.rank() == 2
        && matches!(x.dtype(), candle::DType::F32 | candle::DType::F64)
        && weight.dtype() == x.dtype()
        && bias.dtype() == x.dtype();
    if fusable {
        x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, FusedLinear)
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

/// `g · W`: `(g (n, O), W (O, K))` → `(n, K)`.
struct GradInput;

/// `gᵀ · x`: `(g (n, O), x (n, K))` → `(O, K)`.
struct GradWeight;

/// `Σ_i g[i, ·]`: `g (n, O)` → `(O,)`.
struct GradBias;

fn forward<T: Elem>(x: &[T], w: &[T], b: &[T], (n, k): (usize, usize)) -> Vec<T> {
    let o = b.len();
    let mut y = Vec::with_capacity(n * o);
    for _ in 0..n {
        y.extend_from_slice(b);
    }
    let out = RowsOut::new(&mut y, o);
    par_row_blocks(n, |r| {
        // SAFETY: par_row_blocks hands out disjoint row ranges.
        let y = unsafe { out.rows(r.clone()) };
        gemm_into((r.len(), o, k), y, (1, o), true, &x[r.start * k..], (1, k), w, (k, 1), Parallelism::None);
    });
    y
}

fn grad_input<T: Elem>(g: &[T], w: &[T], (n, o, k): (usize, usize, usize)) -> Vec<T> {
    let mut dx = vec![T::default(); n * k];
    let out = RowsOut::new(&mut dx, k);
    par_row_blocks(n, |r| {
        // SAFETY: par_row_blocks hands out disjoint row ranges.
        let dx = unsafe { out.rows(r.clone()) };
        gemm_into(
            (r.len(), k, o),
            dx,
            (1, k),
            false,
            &g[r.start * o..],
            (1, o),
            w,
            (1, k),
            Parallelism::None,
        );
    });
    dx
}

/// `dW = gᵀ · x`, in blocks of rows of `dW` (so no partial sums to add).
fn grad_weight<T: Elem>(g: &[T], x: &[T], (n, o, k): (usize, usize, usize)) -> Vec<T> {
    let mut dw = vec![T::default(); o * k];
    let out = RowsOut::new(&mut dw, k);
    par_row_blocks(o, |r| {
        // SAFETY: par_row_blocks hands out disjoint row ranges.
        let dw = unsafe { out.rows(r.clone()) };
        gemm_into((r.len(), k, n), dw, (1, k), false, &g[r.start..], (o, 1), x, (1, k), Parallelism::None);
    });
    dw
}

/// `Σ_i g[i, o]`, rows added in order.
fn grad_bias<T: Elem>(g: &[T], o: usize) -> Vec<T> {
    let mut db = vec![T::default(); o];
    for row in g.chunks_exact(o) {
        db.iter_mut().zip(row).for_each(|(a, &v)| *a = *a + v);
    }
    db
}

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "fm-linear"
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
        let name = self.name();
        let (n, k) = l1.shape().dims2()?;
        let (o, kw) = l2.shape().dims2()?;
        if kw != k || l3.dims() != [o] {
            candle::bail!("{name}: x {:?}, weight {:?}, bias {:?}", l1.dims(), l2.dims(), l3.dims());
        }
        let out = map3(
            name,
            [(s1, l1), (s2, l2), (s3, l3)],
            |x, w, b| forward(x, w, b, (n, k)),
            |x, w, b| forward(x, w, b, (n, k)),
        )?;
        Ok((out, Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if grad.track_op() || !grad.device().is_cpu() || grad.dtype() != x.dtype() {
            let dx = grad.matmul(weight)?;
            let dw = grad.t()?.matmul(x)?;
            let db = grad.sum(0)?;
            return Ok((Some(dx), Some(dw), Some(db)));
        }
        let grad = grad.contiguous()?;
        let (weight, x) = (weight.detach(), x.detach());
        let dx = grad.apply_op2_no_bwd(&weight, &GradInput)?;
        let dw = grad.apply_op2_no_bwd(&x, &GradWeight)?;
        let db = grad.apply_op1_no_bwd(&GradBias)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "fm-linear-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (n, o) = l1.shape().dims2()?;
        let (ow, k) = l2.shape().dims2()?;
        if ow != o {
            candle::bail!("{name}: gradient {:?}, weight {:?}", l1.dims(), l2.dims());
        }
        let dims = (n, o, k);
        let out =
            map2(name, (s1, l1), (s2, l2), |g, w| grad_input(g, w, dims), |g, w| grad_input(g, w, dims))?;
        Ok((out, Shape::from((n, k))))
    }
}

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "fm-linear-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (n, o) = l1.shape().dims2()?;
        let (nx, k) = l2.shape().dims2()?;
        if nx != n {
            candle::bail!("{name}: gradient {:?}, x {:?}", l1.dims(), l2.dims());
        }
        let dims = (n, o, k);
        let out =
            map2(name, (s1, l1), (s2, l2), |g, x| grad_weight(g, x, dims), |g, x| grad_weight(g, x, dims))?;
        Ok((out, Shape::from((o, k))))
    }
}

impl CustomOp1 for GradBias {
    fn name(&self) -> &'static str {
        "fm-linear-grad-bias"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        let (_, o) = l.shape().dims2()?;
        let out = map1(self.name(), (s, l), |g| grad_bias(g, o), |g| grad_bias(g, o))?;
        Ok((out, Shape::from(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, flat, var};
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
                close(&flat(&ours), &flat(&theirs), tol, &what);
                let probe = var(&[n, o], 7.0, dtype);
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
