//! The row kernels in AVX-512 intrinsics, with the portable kernels'
//! arithmetic (bit-identical results): the AVX2 forms' structure on eight
//! f64 or sixteen f32 lanes, blends through mask registers, and the
//! predecessors written by one masked store.

use super::{best_two_tail, relax_tail, RowKernels, NONE};
use std::arch::x86_64::*;

/// AVX-512 kernels; a value of this type exists only where the CPU has
/// AVX-512F.
#[derive(Clone, Copy)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The kernels, if this CPU supports AVX-512F.
    pub(crate) fn detect() -> Option<Self> {
        crate::simd::has_avx512f().then_some(Avx512(()))
    }
}

row_kernels_from_module_fns!(Avx512);

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn relax_row(
    row: &[f64],
    base: f64,
    i: usize,
    v: &[f64],
    shortest: &mut [f64],
    path: &mut [usize],
) -> (f64, usize, f64) {
    let n = row.len().min(v.len()).min(shortest.len()).min(path.len());
    // Two sets of eight lanes (columns j..j+8 and j+8..j+16); column indices
    // as f64 (exact below 2⁵³).
    let split = n - n % 16;
    let base8 = _mm512_set1_pd(base);
    let row8 = _mm512_set1_epi64(i as i64);
    let inf = _mm512_set1_pd(f64::INFINITY);
    let (mut la, mut sa, mut lb, mut sb) = (inf, inf, inf, inf);
    let (mut ja, mut jb) = (inf, inf);
    let mut cols = _mm512_set_pd(7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0);
    let eight = _mm512_set1_pd(8.0);
    let mut j = 0;
    while j < split {
        let colsb = _mm512_add_pd(cols, eight);
        // SAFETY: j + 16 ≤ n ≤ every slice's length.
        let (s_a, s_b) = unsafe {
            (
                relax8(
                    row.as_ptr().add(j),
                    v.as_ptr().add(j),
                    shortest.as_mut_ptr().add(j),
                    path.as_mut_ptr().add(j),
                    base8,
                    row8,
                ),
                relax8(
                    row.as_ptr().add(j + 8),
                    v.as_ptr().add(j + 8),
                    shortest.as_mut_ptr().add(j + 8),
                    path.as_mut_ptr().add(j + 8),
                    base8,
                    row8,
                ),
            )
        };
        sa = _mm512_min_pd(sa, _mm512_max_pd(s_a, la));
        sb = _mm512_min_pd(sb, _mm512_max_pd(s_b, lb));
        ja = _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_LT_OQ>(s_a, la), ja, cols);
        jb = _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_LT_OQ>(s_b, lb), jb, colsb);
        la = _mm512_min_pd(la, s_a);
        lb = _mm512_min_pd(lb, s_b);
        cols = _mm512_add_pd(colsb, eight);
        j += 16;
    }
    // Merge the two sets lane by lane (the lower value wins, the lower column
    // on ties; the loser's best joins the second bests), then across lanes.
    let take_b = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(lb, la)
        | (_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(lb, la) & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(jb, ja));
    let second = _mm512_min_pd(_mm512_min_pd(sa, sb), _mm512_max_pd(la, lb));
    let at = _mm512_mask_blend_pd(take_b, ja, jb);
    let low = _mm512_min_pd(la, lb);
    let b1 = _mm512_reduce_min_pd(low);
    let at_min = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(low, _mm512_set1_pd(b1));
    let bj = _mm512_reduce_min_pd(_mm512_mask_blend_pd(at_min, inf, at));
    let chosen = at_min & _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(at, _mm512_set1_pd(bj));
    let b2 = _mm512_reduce_min_pd(_mm512_min_pd(second, _mm512_mask_blend_pd(chosen, low, inf)));
    let bj = if bj < f64::INFINITY { bj as usize } else { NONE };
    relax_tail(row, base, i, v, shortest, path, split, (b1, bj, b2))
}

/// Relaxes eight columns and returns their new shortest path lengths.
///
/// # Safety
/// Each pointer must be valid for eight elements; the CPU must support
/// AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn relax8(
    c: *const f64,
    v: *const f64,
    s: *mut f64,
    p: *mut usize,
    base8: __m512d,
    row8: __m512i,
) -> __m512d {
    // SAFETY: the caller's contract.
    unsafe {
        let r = _mm512_sub_pd(_mm512_add_pd(base8, _mm512_loadu_pd(c)), _mm512_loadu_pd(v));
        let old = _mm512_loadu_pd(s);
        let better = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(r, old);
        let new = _mm512_mask_blend_pd(better, old, r);
        _mm512_storeu_pd(s, new);
        _mm512_mask_storeu_epi64(p as *mut i64, better, row8);
        new
    }
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn best_two(row: &[f32], v: &[f32]) -> (f32, usize, f32) {
    let n = row.len().min(v.len());
    // Two independent sets of sixteen lanes (columns j..j+16 and
    // j+16..j+32); column indices as f32 (exact below 2²⁴).
    let split = n - n % 32;
    let inf = _mm512_set1_ps(f32::INFINITY);
    let (mut h1a, mut h2a, mut h1b, mut h2b) = (inf, inf, inf, inf);
    let (mut j1a, mut j1b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut cols =
        _mm512_set_ps(15.0, 14.0, 13.0, 12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0);
    let sixteen = _mm512_set1_ps(16.0);
    let mut j = 0;
    while j < split {
        // SAFETY: j + 32 ≤ n ≤ both slices' lengths.
        let (ha, hb) = unsafe {
            (
                _mm512_sub_ps(_mm512_loadu_ps(row.as_ptr().add(j)), _mm512_loadu_ps(v.as_ptr().add(j))),
                _mm512_sub_ps(
                    _mm512_loadu_ps(row.as_ptr().add(j + 16)),
                    _mm512_loadu_ps(v.as_ptr().add(j + 16)),
                ),
            )
        };
        let colsb = _mm512_add_ps(cols, sixteen);
        h2a = _mm512_min_ps(h2a, _mm512_max_ps(ha, h1a));
        h2b = _mm512_min_ps(h2b, _mm512_max_ps(hb, h1b));
        j1a = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(ha, h1a), j1a, cols);
        j1b = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(hb, h1b), j1b, colsb);
        h1a = _mm512_min_ps(h1a, ha);
        h1b = _mm512_min_ps(h1b, hb);
        cols = _mm512_add_ps(colsb, sixteen);
        j += 32;
    }
    let take_b = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(h1b, h1a)
        | (_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(h1b, h1a) & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(j1b, j1a));
    let h2 = _mm512_min_ps(_mm512_min_ps(h2a, h2b), _mm512_max_ps(h1a, h1b));
    let j1 = _mm512_mask_blend_ps(take_b, j1a, j1b);
    let h1 = _mm512_min_ps(h1a, h1b);
    let b1 = _mm512_reduce_min_ps(h1);
    let at_min = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(h1, _mm512_set1_ps(b1));
    let bj = _mm512_reduce_min_ps(_mm512_mask_blend_ps(at_min, inf, j1));
    let chosen = at_min & _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(j1, _mm512_set1_ps(bj));
    let b2 = _mm512_reduce_min_ps(_mm512_min_ps(h2, _mm512_mask_blend_ps(chosen, h1, inf)));
    best_two_tail(row, v, split, (b1, bj as usize, b2))
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn min_reduced(row: &[f64], v: &[f64]) -> f64 {
    let n = row.len().min(v.len());
    let split = n - n % 8;
    let mut low = _mm512_set1_pd(f64::INFINITY);
    let mut j = 0;
    while j < split {
        // SAFETY: j + 8 ≤ n ≤ both slices' lengths.
        let h = unsafe {
            _mm512_sub_pd(_mm512_loadu_pd(row.as_ptr().add(j)), _mm512_loadu_pd(v.as_ptr().add(j)))
        };
        low = _mm512_min_pd(low, h);
        j += 8;
    }
    let mut m = _mm512_reduce_min_pd(low);
    for k in split..n {
        m = m.min(row[k] - v[k]);
    }
    m
}
