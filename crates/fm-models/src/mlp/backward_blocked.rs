//! The MLP's loss gradients on f32 CPU tensors, in row blocks and on several
//! threads.
//!
//! Every row block of [`TRAIN_BLOCK_ROWS`] goes forward through the whole
//! network and straight back (bias written first and the product accumulated
//! onto it by `gemm`, the activation and its derivative applied while the
//! block is in cache), adding its share to the weight and bias gradients.
//! The blocks are grouped into at most [`PARTITIONS`] contiguous partitions,
//! each with its own gradient accumulators, summed in partition order at the
//! end; the partitions are shared out among the threads. Because the
//! partitioning does not depend on the thread count, neither does the result.

use candle::Tensor;
use gemm::Parallelism;

use crate::ops::cpu::cpu_values;
use crate::ops::dense::{add_rows, gemm_into};
use crate::ops::pool::par_items;
use crate::{Activation, MlpGradients};

/// Rows per block.
pub const TRAIN_BLOCK_ROWS: usize = 128;
/// The most partitions (and so threads) a batch is split into.
pub const PARTITIONS: usize = 4;

/// A layer's weights, borrowed: `w` `(out, inp)` row-major, `b` `(out,)`.
pub(crate) struct Layer<'a> {
    pub w: &'a [f32],
    pub b: &'a [f32],
    pub out: usize,
    pub inp: usize,
}

/// One partition's sums: squared error and, per layer, `dW` and `db`.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Partial {
    sq: f64,
    dw: Vec<Vec<f32>>,
    db: Vec<Vec<f32>>,
}

#[cfg(test)]
impl crate::VelocityMlp {
    /// The loss and its gradients (as [`VelocityMlp::mse_gradients`]) by the blocked path, or
    /// `None` where it does not apply (not f32 on the CPU, an activation
    /// without a kernel here, a layer without bias). The loss is
    /// `mean((MLP(input) − target)²)`.
    ///
    /// # Shapes
    /// - `input`: `(b, d + 1)`, `target`: `(b, d)`
    pub(crate) fn mse_gradients_blocked(
        &self,
        input: &Tensor,
        target: &Tensor,
    ) -> candle::Result<Option<MlpGradients>> {
        mse_gradients_blocked(self.layers(), self.config().activation, input, target)
    }
}

/// [`VelocityMlp::mse_gradients_blocked`] for any stack of linear `layers`
/// with `act` between them (the MeanFlow MLP shares it).
pub(crate) fn mse_gradients_blocked(
    layers: &[candle_nn::Linear],
    act: Activation,
    input: &Tensor,
    target: &Tensor,
) -> candle::Result<Option<MlpGradients>> {
    {
        let all_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle::DType::F32;
        let eligible = all_f32(input)
            && all_f32(target)
            && matches!(act, Activation::Silu | Activation::Elu | Activation::Relu | Activation::Tanh)
            && layers.iter().all(|l| all_f32(l.weight()) && l.bias().is_some_and(all_f32));
        if !eligible {
            return Ok(None);
        }
        let (rows, inp) = input.dims2()?;
        let (trows, d) = target.dims2()?;
        if trows != rows || rows == 0 {
            return Ok(None);
        }
        let input = input.detach().contiguous()?;
        let target = target.detach().contiguous()?;
        let weights: Vec<(Tensor, Tensor)> = layers
            .iter()
            .map(|l| -> candle::Result<_> {
                let b = l.bias().map_or_else(|| l.weight().zeros_like(), |b| Ok(b.detach()))?;
                Ok((l.weight().detach().contiguous()?, b.contiguous()?))
            })
            .collect::<candle::Result<_>>()?;
        let guards: Vec<_> =
            weights.iter().map(|(w, b)| (w.storage_and_layout(), b.storage_and_layout())).collect();
        let mut net = Vec::with_capacity(layers.len());
        for ((w, _), ((ws, wl), (bs, bl))) in weights.iter().zip(&guards) {
            let (out, k) = w.dims2()?;
            let (Some(w), Some(b)) = (cpu_values(ws, wl), cpu_values(bs, bl)) else { return Ok(None) };
            net.push(Layer { w, b, out, inp: k });
        }
        if net.first().map(|l| l.inp) != Some(inp) || net.last().map(|l| l.out) != Some(d) {
            return Ok(None);
        }
        let (is, il) = input.storage_and_layout();
        let (ts, tl) = target.storage_and_layout();
        let (Some(x), Some(y)) = (cpu_values(&is, il), cpu_values(&ts, tl)) else { return Ok(None) };
        let scale = 2.0 / (rows * d) as f32;
        let Some(partials) = gradients_in_partitions(&net, act, x, y, rows, scale) else {
            return Ok(None);
        };
        // Sum the partitions in order.
        let mut iter = partials.into_iter();
        let Some(mut total) = iter.next() else { return Ok(None) };
        for p in iter {
            total.sq += p.sq;
            for (a, b) in total.dw.iter_mut().zip(&p.dw).chain(total.db.iter_mut().zip(&p.db)) {
                add_rows(a, b);
            }
        }
        let loss = total.sq / (rows * d) as f64;
        let mut grads = Vec::with_capacity(2 * layers.len());
        let dev = input.device();
        for (k, (dw, db)) in total.dw.into_iter().zip(total.db).enumerate().rev() {
            let (l, layer) = (&net[k], &layers[k]);
            grads.push((layer.weight().clone(), Tensor::from_vec(dw, (l.out, l.inp), dev)?));
            if let Some(b) = layer.bias() {
                grads.push((b.clone(), Tensor::from_vec(db, l.out, dev)?));
            }
        }
        Ok(Some(MlpGradients { loss, grads }))
    }
}

/// The partitions' sums, computed on candle's CPU worker pool (persistent
/// threads with warm allocator heaps; a thread spawned per step cost more),
/// each into its own slot so that they stay in partition order.
fn gradients_in_partitions(
    net: &[Layer],
    act: Activation,
    x: &[f32],
    y: &[f32],
    rows: usize,
    scale: f32,
) -> Option<Vec<Partial>> {
    let (inp, d) = (net.first()?.inp, net.last()?.out);
    let ranges = partition_ranges(rows);
    let run = |&(a, b): &(usize, usize)| partition(net, act, &x[a * inp..b * inp], &y[a * d..b * d], scale);
    let slots: Vec<std::sync::Mutex<Option<Partial>>> = ranges.iter().map(|_| Default::default()).collect();
    par_items(ranges.len(), |items| {
        for p in items {
            let partial = run(&ranges[p]);
            if let Ok(mut slot) = slots[p].lock() {
                *slot = partial;
            }
        }
    });
    slots.into_iter().map(|slot| slot.into_inner().ok().flatten()).collect()
}

/// The row ranges of the partitions of a batch of `rows`: at most
/// [`PARTITIONS`], each a whole number of blocks (but the last).
pub(crate) fn partition_ranges(rows: usize) -> Vec<(usize, usize)> {
    let blocks = rows.div_ceil(TRAIN_BLOCK_ROWS);
    let parts = blocks.clamp(1, PARTITIONS);
    let per = blocks.div_ceil(parts) * TRAIN_BLOCK_ROWS;
    (0..parts).map(|p| (p * per, ((p + 1) * per).min(rows))).filter(|(a, b)| a < b).collect()
}

/// The sums of one partition's rows, block by block.
fn partition(net: &[Layer], act: Activation, x: &[f32], y: &[f32], scale: f32) -> Option<Partial> {
    let (inp, d) = (net.first()?.inp, net.last()?.out);
    let rows = x.len() / inp;
    let last = net.len() - 1;
    let mut dw: Vec<Vec<f32>> = net.iter().map(|l| vec![0f32; l.out * l.inp]).collect();
    let mut db: Vec<Vec<f32>> = net.iter().map(|l| vec![0f32; l.out]).collect();
    // Per layer k: its input h_k (block, inp_k) and pre-activation z_k (block, out_k).
    let mut hs: Vec<Vec<f32>> = net.iter().map(|l| vec![0f32; TRAIN_BLOCK_ROWS * l.inp]).collect();
    let mut zs: Vec<Vec<f32>> = net.iter().map(|l| vec![0f32; TRAIN_BLOCK_ROWS * l.out]).collect();
    let width = net.iter().map(|l| l.out.max(l.inp)).max().unwrap_or(0);
    let mut dz = vec![0f32; TRAIN_BLOCK_ROWS * width];
    let mut dh = vec![0f32; TRAIN_BLOCK_ROWS * width];
    let mut sq = 0f64;
    for (block, r0) in (0..rows).step_by(TRAIN_BLOCK_ROWS).enumerate() {
        let m = TRAIN_BLOCK_ROWS.min(rows - r0);
        let accumulate = block > 0;
        hs[0][..m * inp].copy_from_slice(&x[r0 * inp..(r0 + m) * inp]);
        // Forward.
        for (k, l) in net.iter().enumerate() {
            let (h_now, rest) = hs.split_at_mut(k + 1);
            let z = &mut zs[k][..m * l.out];
            dense_forward(l, &h_now[k][..m * l.inp], z, m);
            if k < last {
                activate(act, z, &mut rest[0][..m * l.out]);
            }
        }
        // Loss and the output gradient dz = scale · (out − y).
        let out = &zs[last][..m * d];
        let dz_out = &mut dz[..m * d];
        for ((g, &o), &t) in dz_out.iter_mut().zip(out).zip(&y[r0 * d..(r0 + m) * d]) {
            let e = o - t;
            sq += f64::from(e * e);
            *g = scale * e;
        }
        // Backward.
        for k in (0..=last).rev() {
            let l = &net[k];
            let g = &dz[..m * l.out];
            let dhk = &mut dh[..m * l.inp];
            dense_backward(
                l,
                g,
                &hs[k][..m * l.inp],
                m,
                (&mut dw[k], &mut db[k]),
                accumulate,
                (k > 0).then_some(&mut *dhk),
            );
            if k > 0 {
                // dz ← dh ⊙ σ'(z_{k−1}).
                let (z, h) = (&zs[k - 1][..m * l.inp], &hs[k][..m * l.inp]);
                derivative(act, dhk, z, h, &mut dz[..m * l.inp]);
            }
        }
    }
    Some(Partial { sq, dw, db })
}

/// `z = b + h Wᵀ` for the `m` rows of `h` (bias written first, the product
/// accumulated onto it by `gemm`).
pub(crate) fn dense_forward(l: &Layer, h: &[f32], z: &mut [f32], m: usize) {
    z.chunks_exact_mut(l.out).for_each(|row| row.copy_from_slice(&l.b[..l.out]));
    gemm_into((m, l.out, l.inp), z, (1, l.out), true, h, (1, l.inp), l.w, (l.inp, 1), Parallelism::None);
}

/// The backward pass of [`dense_forward`] for `m` rows of output gradient
/// `g`: `dW (+)= gᵀ h` (accumulated when `accumulate`), `db += Σ_rows g`,
/// and, when asked, `dh = g W`.
pub(crate) fn dense_backward(
    l: &Layer,
    g: &[f32],
    h: &[f32],
    m: usize,
    (dw, db): (&mut [f32], &mut [f32]),
    accumulate: bool,
    dh: Option<&mut [f32]>,
) {
    gemm_into((l.out, l.inp, m), dw, (1, l.inp), accumulate, g, (l.out, 1), h, (1, l.inp), Parallelism::None);
    add_rows(db, g);
    if let Some(dh) = dh {
        gemm_into(
            (m, l.inp, l.out),
            dh,
            (1, l.inp),
            false,
            g,
            (1, l.out),
            l.w,
            (1, l.inp),
            Parallelism::None,
        );
    }
}

/// `h = σ(z)`.
pub(crate) fn activate(act: Activation, z: &[f32], h: &mut [f32]) {
    match act {
        Activation::Silu => crate::ops::silu_forward(z, h),
        Activation::Elu => {
            h.iter_mut().zip(z).for_each(|(h, &v)| *h = if v.is_sign_positive() { v } else { v.exp() - 1.0 })
        }
        Activation::Relu => h.iter_mut().zip(z).for_each(|(h, &v)| *h = v.max(0.0)),
        Activation::Tanh => h.iter_mut().zip(z).for_each(|(h, &v)| *h = v.tanh()),
        _ => unreachable!("the blocked paths check the activation"),
    }
}

/// `out = g ⊙ σ'(z)`, given `h = σ(z)`.
pub(crate) fn derivative(act: Activation, g: &[f32], z: &[f32], h: &[f32], out: &mut [f32]) {
    let each = |f: &dyn Fn(f32, f32, f32) -> f32, out: &mut [f32]| {
        out.iter_mut().zip(g.iter().zip(z.iter().zip(h))).for_each(|(o, (&g, (&z, &h)))| *o = f(g, z, h))
    };
    match act {
        Activation::Silu => crate::ops::silu_backward(g, z, h, out),
        Activation::Elu => each(&|g, z, h| g * if z > 0.0 { 1.0 } else { h + 1.0 }, out),
        Activation::Relu => each(&|g, z, _| if z > 0.0 { g } else { 0.0 }, out),
        Activation::Tanh => each(&|g, _, h| g * (1.0 - h * h), out),
        _ => unreachable!("the blocked paths check the activation"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MlpConfig, VelocityMlp};
    use candle::{DType, Device};
    use fm_core::SeededRng;

    /// The blocked f32 gradients agree with the f64 tensor path on the same
    /// weights, for every supported activation and batch sizes around the
    /// block and partition sizes; the worker pool changes nothing.
    #[test]
    fn blocked_gradients_match_the_tensor_path() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for act in [Activation::Silu, Activation::Elu, Activation::Relu, Activation::Tanh] {
            let config = MlpConfig { dim: 2, hidden: vec![24, 17], activation: act };
            let (m64, _) = VelocityMlp::init(&config, &mut SeededRng::new(2), DType::F64, &dev)?;
            let (m32, _) = VelocityMlp::init(&config, &mut SeededRng::new(2), DType::F32, &dev)?;
            for rows in [1, TRAIN_BLOCK_ROWS + 3, 5 * TRAIN_BLOCK_ROWS + 1] {
                let mut rng = SeededRng::new(rows as u64);
                let input = rng.normal((rows, 3), DType::F64, &dev)?;
                let target = rng.normal((rows, 2), DType::F64, &dev)?;
                let reference = m64.mse_gradients(&input, &target)?;
                let (i32_, t32) = (input.to_dtype(DType::F32)?, target.to_dtype(DType::F32)?);
                let MlpGradients { loss, grads } = m32.mse_gradients_blocked(&i32_, &t32)?.expect("eligible");
                assert!((loss - reference.loss).abs() <= 1e-5 * reference.loss, "{act} {rows}: loss");
                assert_eq!(grads.len(), reference.grads.len());
                for ((_, g), (_, r)) in grads.iter().zip(&reference.grads) {
                    let g = g.to_dtype(DType::F64)?;
                    let err = (&g - r)?.abs()?.max_all()?.to_scalar::<f64>()?;
                    let scale = r.abs()?.max_all()?.to_scalar::<f64>()?;
                    assert!(err <= 1e-4 * scale.max(1e-3), "{act} {rows}: {err} vs {scale}");
                }
                // On the worker pool or one partition after another: the same bits.
                let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32");
                let (x, y) = (flat(&i32_), flat(&t32));
                let weights: Vec<_> = m32
                    .layers()
                    .iter()
                    .map(|l| {
                        (flat(l.weight()), flat(l.bias().expect("bias")), l.weight().dims2().expect("2-d"))
                    })
                    .collect();
                let net: Vec<Layer> =
                    weights.iter().map(|(w, b, (out, inp))| Layer { w, b, out: *out, inp: *inp }).collect();
                let pooled = gradients_in_partitions(&net, act, &x, &y, rows, 0.5).expect("shapes");
                let in_turn: Vec<Partial> = partition_ranges(rows)
                    .iter()
                    .map(|&(a, b)| {
                        partition(&net, act, &x[a * 3..b * 3], &y[a * 2..b * 2], 0.5).expect("shapes")
                    })
                    .collect();
                assert_eq!(pooled, in_turn);
            }
        }
        Ok(())
    }
}
