//! Adam(W)'s update as one fused, in-place pass over each parameter on the CPU.
//!
//! candle's op-by-op update allocates a dozen temporaries per parameter and
//! step; this does `θ, m, v ← update(θ, m, v, g)` in a single loop over
//! contiguous slices, writing the three tensors in place. It evaluates the same
//! floating-point operations, in the same order and precision, as the op-by-op
//! version (candle's `AdamW`), so the results are bit-identical to it.

use std::cell::RefCell;

use candle::{CpuStorage, InplaceOp1, Layout, Storage, Tensor};

/// The scalars of one Adam step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamCoefficients {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub lr: f64,
    pub weight_decay: f64,
    /// `1 / (1 − β₁ᵗ)`.
    pub scale_m: f64,
    /// `1 / (1 − β₂ᵗ)`.
    pub scale_v: f64,
}

type Body<'a> = Box<dyn FnOnce(&mut CpuStorage, &Layout) -> candle::Result<()> + 'a>;

/// An in-place op that hands the CPU storage of its tensor to a closure.
struct WithStorage<'a>(RefCell<Option<Body<'a>>>);

impl InplaceOp1 for WithStorage<'_> {
    fn name(&self) -> &'static str {
        "fm-fused-adam"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle::Result<()> {
        let body =
            self.0.borrow_mut().take().ok_or_else(|| candle::Error::Msg("fused adam: reentered".into()))?;
        body(storage, layout)
    }
}

fn with_storage<'a>(
    t: &Tensor,
    body: impl FnOnce(&mut CpuStorage, &Layout) -> candle::Result<()> + 'a,
) -> candle::Result<()> {
    t.inplace_op1(&WithStorage(RefCell::new(Some(Box::new(body)))))
}

fn range(l: &Layout, n: usize) -> Option<(usize, usize)> {
    l.contiguous_offsets().filter(|(a, b)| b - a == n)
}

macro_rules! adam_loop {
    ($ty:ty, $theta:expr, $m:expr, $v:expr, $g:expr, $c:expr) => {{
        let c: AdamCoefficients = $c;
        // As candle's affine op: `x * mul + add`, with the scalars cast to the dtype first.
        let (b1, one_b1) = (c.beta1 as $ty, (1.0 - c.beta1) as $ty);
        let (b2, one_b2) = (c.beta2 as $ty, (1.0 - c.beta2) as $ty);
        let (sm, sv, eps, lr) = (c.scale_m as $ty, c.scale_v as $ty, c.eps as $ty, c.lr as $ty);
        let decay = (1.0 - c.lr * c.weight_decay) as $ty;
        let zero: $ty = 0.0;
        let one: $ty = 1.0;
        let decayed = c.weight_decay != 0.0;
        for (((th, m), v), &g) in $theta.iter_mut().zip($m.iter_mut()).zip($v.iter_mut()).zip($g.iter()) {
            let next_m = (*m * b1 + zero) + (g * one_b1 + zero);
            let next_v = (*v * b2 + zero) + ((g * g) * one_b2 + zero);
            let m_hat = next_m * sm + zero;
            let v_hat = next_v * sv + zero;
            let theta = if decayed { *th * decay + zero } else { *th };
            let update = (m_hat / (v_hat.sqrt() * one + eps)) * lr + zero;
            *m = next_m;
            *v = next_v;
            *th = theta - update;
        }
    }};
}

/// Updates `theta`, `m` and `v` in place from the gradient `g`, if all four are
/// contiguous CPU tensors of the same float dtype (f32 or f64) and shape;
/// returns `false` (touching nothing) otherwise, so the caller falls back to tensor ops.
pub(crate) fn adam_step_cpu(
    theta: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    c: AdamCoefficients,
) -> candle::Result<bool> {
    let n = theta.elem_count();
    let same = |t: &Tensor| t.device().is_cpu() && t.dtype() == theta.dtype() && t.dims() == theta.dims();
    if !(theta.device().is_cpu() && same(m) && same(v) && same(g)) {
        return Ok(false);
    }
    let (g_storage, g_layout) = g.storage_and_layout();
    let Some((g0, g1)) = range(g_layout, n) else { return Ok(false) };
    let (Some(_), Some(_), Some(_)) = (range(theta.layout(), n), range(m.layout(), n), range(v.layout(), n))
    else {
        return Ok(false);
    };
    let mut done = false;
    with_storage(m, |ms, ml| {
        with_storage(v, |vs, vl| {
            with_storage(theta, |ts, tl| {
                let (Some((m0, m1)), Some((v0, v1)), Some((t0, t1))) =
                    (range(ml, n), range(vl, n), range(tl, n))
                else {
                    return Ok(());
                };
                match (ts, ms, vs, &*g_storage) {
                    (
                        CpuStorage::F32(th),
                        CpuStorage::F32(mm),
                        CpuStorage::F32(vv),
                        Storage::Cpu(CpuStorage::F32(gg)),
                    ) => {
                        adam_loop!(f32, th[t0..t1], mm[m0..m1], vv[v0..v1], gg[g0..g1], c);
                        done = true;
                    }
                    (
                        CpuStorage::F64(th),
                        CpuStorage::F64(mm),
                        CpuStorage::F64(vv),
                        Storage::Cpu(CpuStorage::F64(gg)),
                    ) => {
                        adam_loop!(f64, th[t0..t1], mm[m0..m1], vv[v0..v1], gg[g0..g1], c);
                        done = true;
                    }
                    _ => {}
                }
                Ok(())
            })
        })
    })?;
    Ok(done)
}
