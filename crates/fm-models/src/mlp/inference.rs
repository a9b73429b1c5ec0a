//! Graph-free f32 inference of a [`VelocityMlp`] on the CPU, in row blocks.
//!
//! The tensor path of [`VelocityMlp::forward_raw`] makes, per layer, a
//! `(b, width)` product, a second `(b, width)` tensor for the bias and a
//! third for the activation: for 10,000 points and width 256 that is three
//! 10 MB passes through memory per layer. Here the rows go through the whole
//! network in blocks of [`BLOCK_ROWS`]: each layer writes its bias into a
//! small buffer, `gemm` accumulates the product onto it, and the activation
//! runs in place while the block is still in cache. The blocks are shared
//! out between `threads` scoped threads (contiguous ranges of rows, so the
//! result does not depend on the thread count), and the extra memory is two
//! block buffers per thread instead of three full-batch activations.

use candle::Tensor;
use gemm::Parallelism;

use crate::ops::cpu::cpu_values;
use crate::ops::dense::gemm_into;
use crate::{Activation, VelocityMlp};

/// Rows per block: a `(256, 256)` f32 activation is 256 KiB, which stays in L2.
pub const BLOCK_ROWS: usize = 256;

/// One dense layer's parameters, borrowed: `w` is `(out, inp)` row-major, `b` is `(out,)`.
pub(crate) struct Dense<'a> {
    pub(crate) w: &'a [f32],
    pub(crate) b: Option<&'a [f32]>,
    pub(crate) out: usize,
    pub(crate) inp: usize,
}

/// Borrows the f32 data of a contiguous CPU tensor for the duration of `f`.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    cpu_values(&storage, layout).map(f)
}

impl VelocityMlp {
    /// The velocity at `(x, t)` by the blocked f32 path, or `None` where it
    /// does not apply (not f32 on the CPU, tensors that track gradients, an
    /// activation without an in-place kernel); the caller then uses the
    /// tensor path. Uses candle's thread count (`RAYON_NUM_THREADS`).
    ///
    /// # Shapes
    /// - `x`: `(b, d)`, `t`: `(b,)` (f32) → `(b, d)`
    pub(crate) fn velocity_blocked(&self, x: &Tensor, t: &Tensor) -> candle::Result<Option<Tensor>> {
        let (rows, d) = x.dims2()?;
        let (x, t) = (x.contiguous()?, t.contiguous()?);
        let threads = candle::utils::get_num_threads().max(1);
        let act = self.config().activation;
        let mut out = vec![0f32; rows * d];
        let done = self.with_dense_layers(&x, &t, |dense| {
            with_f32(&x, |xs| with_f32(&t, |ts| forward_rows(dense, act, ts, xs, d, &mut out, threads)))
        })?;
        if done.flatten().flatten().flatten().is_none() {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(out, (rows, d), x.device())?))
    }

    /// Runs `f` on the layers borrowed as f32 slices if the blocked path
    /// applies to `(x, t)`: f32 on the CPU, no tensor tracking gradients, an
    /// activation with an in-place kernel, a first layer taking `d + 1`
    /// inputs. `None` where it does not apply.
    pub(crate) fn with_dense_layers<R>(
        &self,
        x: &Tensor,
        t: &Tensor,
        f: impl FnOnce(&[Dense]) -> R,
    ) -> candle::Result<Option<R>> {
        let layers = self.layers();
        let eligible = x.device().is_cpu()
            && x.dtype() == candle::DType::F32
            && t.dtype() == candle::DType::F32
            && !x.track_op()
            && !t.track_op()
            && matches!(
                self.config().activation,
                Activation::Silu | Activation::Elu | Activation::Relu | Activation::Tanh
            )
            && layers.iter().all(|l| {
                !l.weight().track_op()
                    && l.weight().dtype() == candle::DType::F32
                    && l.weight().is_contiguous()
                    && l.bias().is_none_or(|b| !b.track_op() && b.is_contiguous())
            });
        if !eligible {
            return Ok(None);
        }
        let (_, d) = x.dims2()?;
        // Hold the weights' storage guards while `f` runs.
        let guards: Vec<_> = layers
            .iter()
            .map(|l| (l.weight().storage_and_layout(), l.bias().map(|b| b.storage_and_layout())))
            .collect();
        let mut dense = Vec::with_capacity(layers.len());
        for (layer, ((ws, wl), bias)) in layers.iter().zip(&guards) {
            let (out, inp) = layer.weight().dims2()?;
            let Some(w) = cpu_values(ws, wl) else { return Ok(None) };
            let b = match bias {
                Some((bs, bl)) => match cpu_values(bs, bl) {
                    Some(b) => Some(b),
                    None => return Ok(None),
                },
                None => None,
            };
            dense.push(Dense { w, b, out, inp });
        }
        if dense.first().map(|l| l.inp) != Some(d + 1) {
            return Ok(None);
        }
        Ok(Some(f(&dense)))
    }
}

/// `out = MLP(concat(t, x))` for all rows, blocks split over `threads`.
fn forward_rows(
    layers: &[Dense],
    act: Activation,
    t: &[f32],
    x: &[f32],
    d: usize,
    out: &mut [f32],
    threads: usize,
) -> Option<()> {
    let rows = t.len();
    if x.len() != rows * d || out.len() != rows * d {
        return None;
    }
    in_row_shares(rows, BLOCK_ROWS, threads, [(out, d)], |r, [mine]| {
        forward_range(layers, act, &t[r.clone()], &x[r.start * d..r.end * d], d, mine)
    })
}

/// Runs `f(rows, outputs)` on contiguous shares of whole `block`-row blocks
/// out of `rows` rows, one share per thread (at most `threads`; the last on
/// the calling thread, in scoped threads). Output `i` holds `outs[i].1`
/// values a row and is split with the rows. The blocks, and so the results
/// of a block-wise `f`, do not depend on the thread count.
///
/// # Panics
/// If an output holds fewer than `rows · outs[i].1` values (callers check).
pub(crate) fn in_row_shares<const N: usize, F>(
    rows: usize,
    block: usize,
    threads: usize,
    outs: [(&mut [f32], usize); N],
    f: F,
) -> Option<()>
where
    F: Fn(std::ops::Range<usize>, [&mut [f32]; N]) + Sync,
{
    let blocks = rows.div_ceil(block).max(1);
    let per = blocks.div_ceil(threads.min(blocks).max(1)) * block;
    let per_row: [usize; N] = outs.each_ref().map(|o| o.1);
    let mut rest: [&mut [f32]; N] = outs.map(|o| o.0);
    std::thread::scope(|s| {
        let f = &f;
        let mut start = 0;
        let mut handles = Vec::new();
        while start < rows {
            let n = per.min(rows - start);
            let mine: [&mut [f32]; N] = std::array::from_fn(|i| {
                let (head, tail) = std::mem::take(&mut rest[i]).split_at_mut(n * per_row[i]);
                rest[i] = tail;
                head
            });
            let range = start..start + n;
            if start + n < rows {
                handles.push(s.spawn(move || f(range, mine)));
            } else {
                f(range, mine);
            }
            start += n;
        }
        handles.into_iter().all(|h| h.join().is_ok()).then_some(())
    })
}

/// The network on rows `t.len()`, block by block, on this thread.
fn forward_range(layers: &[Dense], act: Activation, t: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    let width = layers.iter().map(|l| l.out.max(l.inp)).max().unwrap_or(0);
    let mut a = vec![0f32; BLOCK_ROWS * width];
    let mut b = vec![0f32; BLOCK_ROWS * width];
    let last = layers.len() - 1;
    for (block, tb) in t.chunks(BLOCK_ROWS).enumerate() {
        let m = tb.len();
        let r0 = block * BLOCK_ROWS;
        // The input block: concat(t, x), (m, d + 1).
        for (i, &ti) in tb.iter().enumerate() {
            let row = &mut a[i * (d + 1)..(i + 1) * (d + 1)];
            row[0] = ti;
            row[1..].copy_from_slice(&x[(r0 + i) * d..(r0 + i + 1) * d]);
        }
        for (k, layer) in layers.iter().enumerate() {
            let dst: &mut [f32] =
                if k == last { &mut out[r0 * d..(r0 + m) * d] } else { &mut b[..m * layer.out] };
            dense_block(layer, &a[..m * layer.inp], m, dst);
            if k < last {
                activate_in_place(act, dst);
                std::mem::swap(&mut a, &mut b);
            }
        }
    }
}

/// `dst (m, out) = h (m, inp) · wᵀ + bias`, bias first, product accumulated by `gemm`.
pub(crate) fn dense_block(layer: &Dense, h: &[f32], m: usize, dst: &mut [f32]) {
    let (out, inp) = (layer.out, layer.inp);
    assert!(h.len() >= m * inp && dst.len() >= m * out && layer.w.len() >= out * inp);
    match layer.b {
        Some(bias) => dst.chunks_exact_mut(out).for_each(|row| row.copy_from_slice(&bias[..out])),
        None => dst.fill(0.0),
    }
    gemm_into((m, out, inp), dst, (1, out), true, h, (1, inp), layer.w, (inp, 1), Parallelism::None);
}

fn activate_in_place(act: Activation, v: &mut [f32]) {
    match act {
        Activation::Silu => crate::ops::silu_in_place(v),
        Activation::Elu => v.iter_mut().for_each(|z| {
            if !z.is_sign_positive() {
                *z = z.exp() - 1.0;
            }
        }),
        Activation::Relu => v.iter_mut().for_each(|z| *z = z.max(0.0)),
        Activation::Tanh => v.iter_mut().for_each(|z| *z = z.tanh()),
        _ => unreachable!("velocity_blocked checks the activation"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MlpConfig;
    use candle::{DType, Device};
    use fm_core::SeededRng;

    /// The blocked path agrees with the tensor path, for several activations
    /// and batch sizes around the block size, and on 1 or 3 threads alike.
    #[test]
    fn blocked_matches_tensor_path() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for act in [Activation::Silu, Activation::Elu, Activation::Relu, Activation::Tanh] {
            let config = MlpConfig { dim: 3, hidden: vec![40, 33], activation: act };
            let (model, _) = VelocityMlp::init(&config, &mut SeededRng::new(4), DType::F32, &dev)?;
            let model = model.detached()?;
            for rows in [1, BLOCK_ROWS - 1, 2 * BLOCK_ROWS + 7] {
                let mut rng = SeededRng::new(rows as u64);
                let x = rng.normal((rows, 3), DType::F32, &dev)?;
                let t = rng.uniform(rows, 0.0, 1.0, DType::F32, &dev)?;
                let fast = model.velocity_blocked(&x, &t)?.expect("eligible");
                let input = Tensor::cat(&[&t.reshape((rows, 1))?, &x], 1)?;
                let slow = model.forward_raw(&input)?;
                let err = (&fast - &slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(err < 1e-5, "{act} rows {rows}: {err}");
                // Thread count does not change the result.
                let (xs, ts) = (x.flatten_all()?.to_vec1::<f32>()?, t.to_vec1::<f32>()?);
                let dense: Vec<_> = model
                    .layers()
                    .iter()
                    .map(|l| {
                        let (out, inp) = l.weight().dims2().expect("2-d weight");
                        let w = l.weight().flatten_all().and_then(|w| w.to_vec1::<f32>()).expect("f32");
                        let b = l.bias().map(|b| b.to_vec1::<f32>().expect("f32"));
                        (w, b, out, inp)
                    })
                    .collect();
                let layers: Vec<Dense> = dense
                    .iter()
                    .map(|(w, b, out, inp)| Dense { w, b: b.as_deref(), out: *out, inp: *inp })
                    .collect();
                let mut one = vec![0f32; rows * 3];
                let mut three = vec![0f32; rows * 3];
                forward_rows(&layers, act, &ts, &xs, 3, &mut one, 1).expect("shapes");
                forward_rows(&layers, act, &ts, &xs, 3, &mut three, 3).expect("shapes");
                assert_eq!(one, three);
                assert_eq!(one, fast.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        // Tracked (trainable) weights are not eligible: autograd needs the tensor path.
        let (model, _) = VelocityMlp::init(&MlpConfig::guide(2), &mut SeededRng::new(0), DType::F32, &dev)?;
        let x = Tensor::zeros((4, 2), DType::F32, &dev)?;
        let t = Tensor::zeros(4, DType::F32, &dev)?;
        assert!(model.velocity_blocked(&x, &t)?.is_none());
        Ok(())
    }
}
