//! The streaming pass of [`super::EmpiricalVelocity`] for f32 data on the
//! CPU, on raw slices: per chunk of training points one `gemm` for the
//! logits, one fused pass over them (add the norm term, running max,
//! rescale, vectorised `exp`, row sums) and one `gemm` accumulating the
//! weighted sum. The tensor version runs seven elementwise candle ops per
//! chunk, allocates each result afresh, and calls libm's `expf` (which takes
//! a slow path on every underflow) — a quarter of its time on the benchmark
//! (`n = 10 000`, `d = 784`, `b = 256`). On several threads the training
//! points (or, for small training sets, the queries) are split into one
//! group per thread, each streamed on its own and the partial sums merged:
//! the fused pass would otherwise run on one core while `gemm` uses all.

use gemm::Parallelism;

use crate::simd::exp_f32;

/// Training points per chunk: the `(b, CHUNK)` logits of a batch of 256
/// queries take 256 KiB, which stay in a core's L2 cache, beside `gemm`'s
/// packed panels, between the pass that writes them and the product that
/// reads them (measured against 512 and 1024 on the benchmark, `n = 10 000`,
/// `d = 784`, `b = 256`: as fast on one thread, 5–10 % faster on two).
const CHUNK: usize = 256;

/// The weighted sums of one pass: `acc (b, d) = Σᵢ exp(Lᵢ − m) x⁽ⁱ⁾` and
/// `sum (b) = Σᵢ exp(Lᵢ − m)`, with `m (b)` each row's largest logit (while
/// the pass runs: over the points streamed so far).
pub(super) struct StreamedF32 {
    pub(super) acc: Vec<f32>,
    pub(super) sum: Vec<f32>,
    max: Vec<f32>,
}

/// Training points per thread from which the points are split between
/// threads (each group then streams at least one full chunk).
const MIN_POINTS_PER_THREAD: usize = CHUNK;

/// Query rows per thread from which, with too few points to split, the
/// queries are split between threads (below it `gemm` shares out each
/// product instead).
const MIN_ROWS_PER_THREAD: usize = 64;

/// Streams the training set once.
///
/// # Shapes
/// - `data`: `(n, d)` row-major; `sq_norms`: `(n,)`, `‖x⁽ⁱ⁾‖²`
/// - `xq_scaled`: `(b, d)` row-major, the queries times `a = α/σ²`
/// - `c`: `(b,)`, `−α²/2σ²`; the logits are `L_qi = xq_scaled_q · x⁽ⁱ⁾ + c_q rᵢ`
///
/// `chunk` bounds the points per step (the smaller of it and 256 is used).
/// With `threads > 1` and at least 256 points per thread, the points are
/// split into `threads` contiguous groups, each streamed for all queries on
/// candle's CPU worker pool, and the partial sums merged (log-sum-exp
/// style); each group reads only its share of the data, and the elementwise
/// pass runs in parallel too. Failing that, with at least 64 queries per
/// thread, the queries are split instead; otherwise `gemm` gets the threads.
pub(super) fn stream(
    data: &[f32],
    sq_norms: &[f32],
    d: usize,
    xq_scaled: &[f32],
    c: &[f32],
    chunk: usize,
    threads: usize,
) -> StreamedF32 {
    let (n, b) = (sq_norms.len(), c.len());
    assert!(data.len() >= n * d && xq_scaled.len() >= b * d, "stream: slices shorter than their shapes");
    if threads > 1 && n / threads >= MIN_POINTS_PER_THREAD {
        let per = n.div_ceil(threads);
        let parts = in_groups(threads, |g| {
            let points = g * per..((g + 1) * per).min(n);
            stream_rows(
                &data[points.start * d..points.end * d],
                &sq_norms[points],
                d,
                xq_scaled,
                c,
                chunk,
                Parallelism::None,
            )
        });
        let mut parts = parts.into_iter();
        let mut out = parts.next().expect("at least two groups");
        parts.for_each(|part| merge(&mut out, &part, d));
        return out;
    }
    let groups = threads.min(b / MIN_ROWS_PER_THREAD).max(1);
    if groups == 1 {
        let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        return stream_rows(data, sq_norms, d, xq_scaled, c, chunk, parallelism);
    }
    let per = b.div_ceil(groups);
    let parts = in_groups(groups, |g| {
        let rows = g * per..((g + 1) * per).min(b);
        stream_rows(
            data,
            sq_norms,
            d,
            &xq_scaled[rows.start * d..rows.end * d],
            &c[rows],
            chunk,
            Parallelism::None,
        )
    });
    let mut out = StreamedF32 {
        acc: Vec::with_capacity(b * d),
        sum: Vec::with_capacity(b),
        max: Vec::with_capacity(b),
    };
    for part in parts {
        out.acc.extend_from_slice(&part.acc);
        out.sum.extend_from_slice(&part.sum);
        out.max.extend_from_slice(&part.max);
    }
    out
}

/// `f(0), …, f(groups − 1)`, run on candle's CPU worker pool.
fn in_groups(groups: usize, f: impl Fn(usize) -> StreamedF32 + Sync) -> Vec<StreamedF32> {
    let slots: Vec<std::sync::Mutex<Option<StreamedF32>>> = (0..groups).map(|_| Default::default()).collect();
    candle::utils::barrier_pool().execute_chunked(groups, |range| {
        for g in range {
            let part = f(g);
            if let Ok(mut slot) = slots[g].lock() {
                *slot = Some(part);
            }
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.into_inner().ok().flatten().expect("the pool runs every group"))
        .collect()
}

/// Adds the sums of `other` (the same queries, other points) to `into`,
/// both rescaled to the larger of the two maxima.
fn merge(into: &mut StreamedF32, other: &StreamedF32, d: usize) {
    for (q, (m_into, &m_other)) in into.max.iter_mut().zip(&other.max).enumerate() {
        let m = m_into.max(m_other);
        if m == f32::NEG_INFINITY {
            continue;
        }
        let scale = |m_part: f32| if m_part == f32::NEG_INFINITY { 0.0 } else { (m_part - m).exp() };
        let (a, b) = (scale(*m_into), scale(m_other));
        into.sum[q] = into.sum[q] * a + other.sum[q] * b;
        let rows = q * d..(q + 1) * d;
        for (x, &y) in into.acc[rows.clone()].iter_mut().zip(&other.acc[rows]) {
            *x = *x * a + y * b;
        }
        *m_into = m;
    }
}

/// [`stream`] in one pass (over one group of points or queries), with
/// `gemm` on `parallelism`.
fn stream_rows(
    data: &[f32],
    sq_norms: &[f32],
    d: usize,
    xq_scaled: &[f32],
    c: &[f32],
    chunk: usize,
    parallelism: Parallelism,
) -> StreamedF32 {
    let n = sq_norms.len();
    let b = c.len();
    assert!(data.len() >= n * d && xq_scaled.len() >= b * d, "stream: slices shorter than their shapes");
    let chunk = chunk.clamp(1, CHUNK).min(n.max(1));
    let mut logits = vec![0.0f32; b * chunk];
    let mut state =
        StreamedF32 { acc: vec![0.0f32; b * d], sum: vec![0.0f32; b], max: vec![f32::NEG_INFINITY; b] };
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let points = &data[start * d..(start + len) * d];
        let g = &mut logits[..b * len];
        // g (b, len) = xq_scaled (b, d) · pointsᵀ (d, len).
        // SAFETY: `g` holds b·len elements, `xq_scaled` b·d and `points`
        // len·d (asserted above), at the strides given; `g` is a distinct
        // `&mut`, so nothing aliases it.
        unsafe {
            gemm::gemm(
                b,
                len,
                d,
                g.as_mut_ptr(),
                1,
                len as isize,
                false,
                xq_scaled.as_ptr(),
                1,
                d as isize,
                points.as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        weigh_chunk(g, len, &sq_norms[start..start + len], c, &mut state, d);
        // acc (b, d) += g (b, len) · points (len, d).
        // SAFETY: as above, with `acc` holding b·d elements.
        unsafe {
            gemm::gemm(
                b,
                d,
                len,
                state.acc.as_mut_ptr(),
                1,
                d as isize,
                true,
                g.as_ptr(),
                1,
                len as isize,
                points.as_ptr(),
                1,
                d as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        start += len;
    }
    state
}

/// `eˣ` for `x ≤ 0`, and exactly 0 where it would be subnormal or underflow
/// (where [`exp_f32`] stops at `f32::MIN_POSITIVE`).
#[inline(always)]
fn weight(x: f32) -> f32 {
    let e = exp_f32(x);
    if x < -87.3 {
        0.0
    } else {
        e
    }
}

/// Turns one chunk's raw products `g (b, len)` into weights in place:
/// `Lᵢ = gᵢ + c_q rᵢ`, the row max `m` of `state` raised to cover them
/// (rescaling the row's `sum` and `acc` by `exp(m_old − m_new)`), then
/// `gᵢ ← exp(Lᵢ − m)` and `sum += Σᵢ gᵢ`.
fn weigh_chunk(g: &mut [f32], len: usize, r: &[f32], c: &[f32], state: &mut StreamedF32, d: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx512f_fma() {
        // SAFETY: the features were detected on this CPU just above.
        unsafe { weigh_chunk_avx512(g, len, r, c, state, d) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the features were detected on this CPU just above.
        unsafe { weigh_chunk_avx2(g, len, r, c, state, d) };
        return;
    }
    weigh_chunk_loop(g, len, r, c, state, d)
}

/// [`weigh_chunk_loop`] compiled with AVX2 and FMA (bit-identical results:
/// the same operations, `mul_add` exactly rounded either way).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weigh_chunk_avx2(
    g: &mut [f32],
    len: usize,
    r: &[f32],
    c: &[f32],
    state: &mut StreamedF32,
    d: usize,
) {
    weigh_chunk_loop(g, len, r, c, state, d)
}

/// [`weigh_chunk_loop`] compiled with AVX-512 and FMA (bit-identical
/// results, as for [`weigh_chunk_avx2`]).
///
/// # Safety
/// The CPU must support AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn weigh_chunk_avx512(
    g: &mut [f32],
    len: usize,
    r: &[f32],
    c: &[f32],
    state: &mut StreamedF32,
    d: usize,
) {
    weigh_chunk_loop(g, len, r, c, state, d)
}

/// Independent lanes of the running maxima and sums: one AVX-512 register,
/// two AVX2 registers.
const LANES: usize = 16;

#[inline(always)]
fn weigh_chunk_loop(g: &mut [f32], len: usize, r: &[f32], c: &[f32], state: &mut StreamedF32, d: usize) {
    let StreamedF32 { acc, sum, max } = state;
    let r = &r[..len];
    for (q, row) in g.chunks_exact_mut(len).enumerate() {
        let cq = c[q];
        // Partial maxima per lane, so that the loop vectorises.
        let mut lane_max = [f32::NEG_INFINITY; LANES];
        let mut blocks = row.chunks_exact_mut(LANES);
        let mut rs = r.chunks_exact(LANES);
        for (lg, lr) in (&mut blocks).zip(&mut rs) {
            for k in 0..LANES {
                lg[k] = lr[k].mul_add(cq, lg[k]);
                lane_max[k] = lane_max[k].max(lg[k]);
            }
        }
        let mut chunk_max = lane_max.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for (lg, &lr) in blocks.into_remainder().iter_mut().zip(rs.remainder()) {
            *lg = lr.mul_add(cq, *lg);
            chunk_max = chunk_max.max(*lg);
        }
        let m_new = max[q].max(chunk_max);
        if m_new > max[q] {
            if max[q] > f32::NEG_INFINITY {
                let scale = exp_f32(max[q] - m_new);
                sum[q] *= scale;
                acc[q * d..(q + 1) * d].iter_mut().for_each(|a| *a *= scale);
            }
            max[q] = m_new;
        }
        let mut lane_sum = [0.0f32; LANES];
        let mut blocks = row.chunks_exact_mut(LANES);
        for lg in &mut blocks {
            for k in 0..LANES {
                lg[k] = weight(lg[k] - m_new);
                lane_sum[k] += lg[k];
            }
        }
        let mut s = lane_sum.iter().sum::<f32>();
        for lg in blocks.into_remainder() {
            *lg = weight(*lg - m_new);
            s += *lg;
        }
        sum[q] += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededRng;

    /// Splitting the points (two groups of 350, merged) or the queries
    /// (three groups, the last uneven) between threads gives the sums of
    /// one pass over everything, to f32 rounding, over several chunks.
    #[test]
    fn thread_groups_give_the_single_pass_result() {
        let mut rng = SeededRng::new(21);
        let (n, d, b) = (700, 9, 197);
        let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let data = f32s(rng.uniform_vec(n * d, -1.0, 1.0));
        let sq_norms: Vec<f32> = data.chunks_exact(d).map(|p| p.iter().map(|x| x * x).sum()).collect();
        let xq = f32s(rng.normal_vec(b * d));
        let c = f32s(rng.uniform_vec(b, -3.0, -0.5));
        let single = stream(&data, &sq_norms, d, &xq, &c, 256, 1);
        // Two threads split the points, three the queries.
        assert!(n / 2 >= MIN_POINTS_PER_THREAD && n / 3 < MIN_POINTS_PER_THREAD);
        assert!(b / 3 >= MIN_ROWS_PER_THREAD);
        for threads in [2, 3] {
            let split = stream(&data, &sq_norms, d, &xq, &c, 256, threads);
            assert_eq!(split.sum.len(), b);
            assert_eq!(split.acc.len(), b * d);
            // Sums relative to different maxima: compare the normalised means
            // and the sums rescaled to the single pass's maxima.
            for q in 0..b {
                let rescale = (split.max[q] - single.max[q]).exp();
                let (s, t) = (split.sum[q] * rescale, single.sum[q]);
                assert!((s - t).abs() <= 1e-5 * t.abs(), "{threads} threads, sum {q}: {s} vs {t}");
                for k in q * d..(q + 1) * d {
                    let (x, y) = (split.acc[k] / split.sum[q], single.acc[k] / single.sum[q]);
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{threads} threads, acc {k}: {x} vs {y}"
                    );
                }
            }
        }
    }
}
