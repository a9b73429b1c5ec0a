//! Graph-free f32 velocity and exact divergence of a [`VelocityMlp`] on the
//! CPU, in row blocks (the forward-mode pass of
//! [`VelocityMlp::velocity_and_divergence`] without candle ops).
//!
//! Per block of [`BLOCK_ROWS`] (128) rows the `d` tangents `∂h/∂x_i` are stacked
//! into one `(d·m, width)` matrix, so each layer is two `gemm` calls (the
//! activations and all tangents), then the activation's slope scales the
//! tangents in place. The blocks are shared out between scoped threads in
//! contiguous ranges, so the result does not depend on the thread count.

use candle::Tensor;

use super::backward_blocked::{activate, derivative};
use super::inference::{dense_block, in_row_shares, with_f32, Dense};

/// Rows per block: with `q` tangents a block holds `2q + 3` buffers of
/// `(rows, width)`; 128 rows keep them near L2 for width 256.
pub(crate) const BLOCK_ROWS: usize = 128;
use crate::{Activation, VelocityMlp};

impl VelocityMlp {
    /// `(u, ∇·u)` at `(x, t)` by the blocked f32 path, or `None` where it
    /// does not apply (as [`VelocityMlp::velocity_blocked`]: not f32 on the
    /// CPU, tensors tracking gradients, an activation without a kernel).
    ///
    /// # Shapes
    /// - `x`: `(b, d)`, `t`: `(b,)` (f32) → `(b, d)` and `(b,)`
    pub(crate) fn velocity_and_divergence_blocked(
        &self,
        x: &Tensor,
        t: &Tensor,
    ) -> candle::Result<Option<(Tensor, Tensor)>> {
        let (rows, d) = x.dims2()?;
        let (x, t) = (x.contiguous()?, t.contiguous()?);
        let threads = candle::utils::get_num_threads().max(1);
        let act = self.config().activation;
        let (mut u, mut div) = (vec![0f32; rows * d], vec![0f32; rows]);
        let done = self.with_dense_layers(&x, &t, |dense| {
            with_f32(&x, |xs| {
                with_f32(&t, |ts| {
                    forward_mode_rows(dense, act, ts, xs, d, Mode::Divergence, &mut u, &mut div, threads)
                })
            })
        })?;
        if done.flatten().flatten().flatten().is_none() {
            return Ok(None);
        }
        Ok(Some((Tensor::from_vec(u, (rows, d), x.device())?, Tensor::from_vec(div, rows, x.device())?)))
    }
}

impl VelocityMlp {
    /// `(u, J v)` for `k` tangents per row by the blocked f32 path, or `None`
    /// where it does not apply (as [`VelocityMlp::velocity_and_divergence_blocked`]).
    ///
    /// # Shapes
    /// - `x`: `(b, d)`, `t`: `(b,)`, `v`: `(k, b, d)` (f32) → `(b, d)` and `(k, b, d)`
    pub(crate) fn velocity_and_jvp_blocked(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> candle::Result<Option<(Tensor, Tensor)>> {
        let (rows, d) = x.dims2()?;
        let (k, vb, vd) = v.dims3()?;
        if (vb, vd) != (rows, d) || v.dtype() != candle::DType::F32 || v.track_op() || !v.device().is_cpu() {
            return Ok(None);
        }
        let (x, t) = (x.contiguous()?, t.contiguous()?);
        // Tangents row-major per point, (b, k, d), so that each thread owns a contiguous share.
        let v = v.permute((1, 0, 2))?.contiguous()?;
        let threads = candle::utils::get_num_threads().max(1);
        let act = self.config().activation;
        let (mut u, mut jv) = (vec![0f32; rows * d], vec![0f32; rows * k * d]);
        let done = self.with_dense_layers(&x, &t, |dense| {
            with_f32(&x, |xs| {
                with_f32(&t, |ts| {
                    with_f32(&v, |vs| {
                        let mode = Mode::Jvp { v: vs, k };
                        forward_mode_rows(dense, act, ts, xs, d, mode, &mut u, &mut jv, threads)
                    })
                })
            })
        })?;
        if done.flatten().flatten().flatten().flatten().is_none() {
            return Ok(None);
        }
        let jv = Tensor::from_vec(jv, (rows, k, d), x.device())?.permute((1, 0, 2))?.contiguous()?;
        Ok(Some((Tensor::from_vec(u, (rows, d), x.device())?, jv)))
    }
}

/// Which tangents the forward-mode pass pushes through the network.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// The `d` basis directions; the output is the trace `∇·u`, one value a row.
    Divergence,
    /// `k` given tangents a row, `v` laid out `(b, k, d)`; the output is `J v`, `(b, k, d)`.
    Jvp { v: &'a [f32], k: usize },
}

impl Mode<'_> {
    /// Tangents per row.
    fn count(&self, d: usize) -> usize {
        match self {
            Mode::Divergence => d,
            Mode::Jvp { k, .. } => *k,
        }
    }

    /// Output values per row.
    fn out_per_row(&self, d: usize) -> usize {
        match self {
            Mode::Divergence => 1,
            Mode::Jvp { k, .. } => k * d,
        }
    }
}

/// `u` and the mode's output for all rows, whole blocks split over `threads`
/// in contiguous shares.
#[allow(clippy::too_many_arguments)]
fn forward_mode_rows(
    layers: &[Dense],
    act: Activation,
    t: &[f32],
    x: &[f32],
    d: usize,
    mode: Mode,
    u: &mut [f32],
    out: &mut [f32],
    threads: usize,
) -> Option<()> {
    let rows = t.len();
    let per_row = mode.out_per_row(d);
    let tangents_ok = match mode {
        Mode::Divergence => true,
        Mode::Jvp { v, k } => v.len() == rows * k * d,
    };
    if x.len() != rows * d
        || u.len() != rows * d
        || out.len() != rows * per_row
        || layers.len() < 2
        || !tangents_ok
    {
        return None;
    }
    in_row_shares(rows, BLOCK_ROWS, threads, [(u, d), (out, per_row)], |r, [u, out]| {
        let mode = match mode {
            Mode::Divergence => Mode::Divergence,
            Mode::Jvp { v, k } => Mode::Jvp { v: &v[r.start * k * d..r.end * k * d], k },
        };
        forward_mode_range(layers, act, &t[r.clone()], &x[r.start * d..r.end * d], d, mode, u, out)
    })
}

/// The forward-mode pass on rows `t.len()`, block by block, on this thread.
#[allow(clippy::too_many_arguments)]
fn forward_mode_range(
    layers: &[Dense],
    act: Activation,
    t: &[f32],
    x: &[f32],
    d: usize,
    mode: Mode,
    u: &mut [f32],
    out: &mut [f32],
) {
    let q = mode.count(d);
    let per_row = mode.out_per_row(d);
    let width = layers.iter().map(|l| l.out.max(l.inp)).max().unwrap_or(0);
    let mut h = vec![0f32; BLOCK_ROWS * width];
    let mut pre = vec![0f32; BLOCK_ROWS * width];
    let mut next = vec![0f32; BLOCK_ROWS * width];
    let mut tangent = vec![0f32; q * BLOCK_ROWS * width];
    let mut tangent_pre = vec![0f32; q * BLOCK_ROWS * width];
    let last = layers.len() - 1;
    for (block, tb) in t.chunks(BLOCK_ROWS).enumerate() {
        let m = tb.len();
        let r0 = block * BLOCK_ROWS;
        for (i, &ti) in tb.iter().enumerate() {
            let row = &mut h[i * (d + 1)..(i + 1) * (d + 1)];
            row[0] = ti;
            row[1..].copy_from_slice(&x[(r0 + i) * d..(r0 + i + 1) * d]);
        }
        for (k, layer) in layers.iter().enumerate() {
            let (width_out, inp) = (layer.out, layer.inp);
            if k == last {
                dense_block(layer, &h[..m * inp], m, &mut u[r0 * d..(r0 + m) * d]);
                let dst = &mut out[r0 * per_row..(r0 + m) * per_row];
                match mode {
                    Mode::Divergence => {
                        // ∇·u = Σ_i ∂u_i/∂x_i = Σ_i ⟨tangent_i(row), w_last[i, :]⟩.
                        for (r, dv) in dst.iter_mut().enumerate() {
                            *dv = (0..d)
                                .map(|i| {
                                    let tr = &tangent[(i * m + r) * inp..(i * m + r + 1) * inp];
                                    tr.iter()
                                        .zip(&layer.w[i * inp..(i + 1) * inp])
                                        .map(|(a, b)| a * b)
                                        .sum::<f32>()
                                })
                                .sum();
                        }
                    }
                    Mode::Jvp { k: kt, .. } => {
                        // J v_i = tangent_i · w_lastᵀ, written row-major as (row, i, c).
                        let linear = Dense { w: layer.w, b: None, out: width_out, inp };
                        let mut jv = vec![0f32; kt * m * d];
                        dense_block(&linear, &tangent[..kt * m * inp], kt * m, &mut jv);
                        for i in 0..kt {
                            for r in 0..m {
                                dst[(r * kt + i) * d..(r * kt + i + 1) * d]
                                    .copy_from_slice(&jv[(i * m + r) * d..(i * m + r + 1) * d]);
                            }
                        }
                    }
                }
                break;
            }
            dense_block(layer, &h[..m * inp], m, &mut pre[..m * width_out]);
            if k == 0 {
                match mode {
                    // ∂pre/∂x_i is weight column 1 + i (after t's), the same in every row.
                    Mode::Divergence => {
                        for i in 0..d {
                            for r in 0..m {
                                let dst =
                                    &mut tangent_pre[(i * m + r) * width_out..(i * m + r + 1) * width_out];
                                for (j, v) in dst.iter_mut().enumerate() {
                                    *v = layer.w[j * inp + 1 + i];
                                }
                            }
                        }
                    }
                    // ∂pre · v_i = Σ_c w[j, 1 + c] v_i[c] (t has no tangent).
                    Mode::Jvp { v, k: kt } => {
                        for i in 0..kt {
                            for r in 0..m {
                                let vr = &v[((r0 + r) * kt + i) * d..((r0 + r) * kt + i + 1) * d];
                                let dst =
                                    &mut tangent_pre[(i * m + r) * width_out..(i * m + r + 1) * width_out];
                                for (j, o) in dst.iter_mut().enumerate() {
                                    let w = &layer.w[j * inp + 1..j * inp + 1 + d];
                                    *o = w.iter().zip(vr).map(|(a, b)| a * b).sum();
                                }
                            }
                        }
                    }
                }
            } else {
                let linear = Dense { w: layer.w, b: None, out: width_out, inp };
                dense_block(&linear, &tangent[..q * m * inp], q * m, &mut tangent_pre[..q * m * width_out]);
            }
            // y = σ(pre), then tangent = σ'(pre) ⊙ tangent_pre (the MLP training kernels).
            let (p, y) = (&pre[..m * width_out], &mut next[..m * width_out]);
            activate(act, p, y);
            for i in 0..q {
                let span = i * m * width_out..(i + 1) * m * width_out;
                derivative(act, &tangent_pre[span.clone()], p, y, &mut tangent[span]);
            }
            std::mem::swap(&mut h, &mut next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MlpConfig;
    use candle::{DType, Device};
    use fm_core::SeededRng;

    /// The blocked pass agrees with the tensor pass for every activation with
    /// a kernel, around the block size and with several layers.
    #[test]
    fn blocked_divergence_matches_tensor_path() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for act in [Activation::Silu, Activation::Elu, Activation::Relu, Activation::Tanh] {
            for (dim, hidden) in [(2usize, vec![40, 33, 17]), (3, vec![24])] {
                let config = MlpConfig { dim, hidden, activation: act };
                let (model, _) = VelocityMlp::init(&config, &mut SeededRng::new(9), DType::F32, &dev)?;
                let model = model.detached()?;
                for rows in [1, BLOCK_ROWS - 1, 2 * BLOCK_ROWS + 7] {
                    let mut rng = SeededRng::new(rows as u64);
                    let x = rng.normal((rows, dim), DType::F32, &dev)?;
                    let t = rng.uniform(rows, 0.0, 1.0, DType::F32, &dev)?;
                    let (u, div) = model.velocity_and_divergence_blocked(&x, &t)?.expect("eligible");
                    let (u_ref, div_ref) = model.velocity_and_divergence_tensors(&x, &t)?;
                    let err = |a: &Tensor, b: &Tensor| -> anyhow::Result<f32> {
                        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
                    };
                    assert!(err(&u, &u_ref)? < 1e-5, "{act} rows {rows}: velocity");
                    assert!(err(&div, &div_ref)? < 1e-4, "{act} rows {rows}: divergence");
                    // One thread or three: bit-identical.
                    let (xs, ts) = (x.flatten_all()?.to_vec1::<f32>()?, t.to_vec1::<f32>()?);
                    let run = |threads: usize| {
                        let (mut u, mut div) = (vec![0f32; rows * dim], vec![0f32; rows]);
                        model
                            .with_dense_layers(&x, &t, |dense| {
                                forward_mode_rows(
                                    dense,
                                    act,
                                    &ts,
                                    &xs,
                                    dim,
                                    Mode::Divergence,
                                    &mut u,
                                    &mut div,
                                    threads,
                                )
                            })
                            .expect("layers")
                            .flatten()
                            .expect("eligible");
                        (u, div)
                    };
                    let (one, three) = (run(1), run(3));
                    assert_eq!(one, three, "{act} rows {rows}: thread count");
                    assert_eq!(one.1, div.to_vec1::<f32>()?);
                }
            }
        }
        // J v for k = 3 tangents: blocked against the tensor path.
        for act in [Activation::Silu, Activation::Tanh] {
            let config = MlpConfig { dim: 2, hidden: vec![40, 33], activation: act };
            let (model, _) = VelocityMlp::init(&config, &mut SeededRng::new(5), DType::F32, &dev)?;
            let model = model.detached()?;
            for rows in [3, 2 * BLOCK_ROWS + 7] {
                let mut rng = SeededRng::new(rows as u64 + 1);
                let x = rng.normal((rows, 2), DType::F32, &dev)?;
                let t = rng.uniform(rows, 0.0, 1.0, DType::F32, &dev)?;
                let v = rng.normal((3, rows, 2), DType::F32, &dev)?;
                let (u, jv) = model.velocity_and_jvp_blocked(&x, &t, &v)?.expect("eligible");
                let (u_ref, jv_ref) = model.velocity_and_jvp_tensors(&x, &t, &v)?;
                assert_eq!(jv.dims(), &[3, rows, 2]);
                let err = |a: &Tensor, b: &Tensor| -> anyhow::Result<f32> {
                    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
                };
                assert!(err(&u, &u_ref)? < 1e-5, "{act} rows {rows}: velocity");
                assert!(err(&jv, &jv_ref)? < 1e-4, "{act} rows {rows}: J v");
            }
        }
        // Tracked weights keep the tensor path (CNF training backpropagates through it).
        let (model, _) = VelocityMlp::init(&MlpConfig::guide(2), &mut SeededRng::new(0), DType::F32, &dev)?;
        let x = Tensor::zeros((4, 2), DType::F32, &dev)?;
        assert!(model.velocity_and_divergence_blocked(&x, &Tensor::zeros(4, DType::F32, &dev)?)?.is_none());
        Ok(())
    }
}
