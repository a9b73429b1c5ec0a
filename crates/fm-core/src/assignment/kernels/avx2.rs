//! The row kernels in AVX2 intrinsics, with the portable kernels'
//! arithmetic (bit-identical results).
//!
//! The compiler left the portable loops scalar (the Dijkstra scan) or
//! half-width with branchy lane reductions (the auction's best-two scan).
//! These keep two independent sets of lanes to halve the dependency chains
//! through the running minima, reduce across lanes without branches, and
//! hide one load from the optimiser so that it cannot turn load–blend–store
//! into `vmaskmovpd`.

use super::{best_two_tail, relax_tail, RowKernels, NONE};
use std::arch::x86_64::*;

/// AVX2 kernels; a value of this type exists only where the CPU has AVX2.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// The kernels, if this CPU supports AVX2.
    pub(crate) fn detect() -> Option<Self> {
        crate::simd::has_avx2().then_some(Avx2(()))
    }
}

row_kernels_from_module_fns!(Avx2);

/// `_mm256_loadu_pd(p)` hidden from the optimiser, which would otherwise
/// fuse a load, blend and store back to the same address into a masked
/// store (`vmaskmovpd`: microcoded, and several times slower on AMD cores).
///
/// # Safety
/// `p` must be valid for reading four `f64`; the CPU must support AVX.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_opaque(p: *const f64) -> __m256d {
    let x: __m256d;
    // SAFETY: the caller's contract; the asm only reads 32 bytes at `p`.
    unsafe {
        std::arch::asm!("vmovupd {x}, [{p}]", x = out(ymm_reg) x, p = in(reg) p, options(pure, readonly, nostack, preserves_flags));
    }
    x
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
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
    // Two sets of four lanes (columns j..j+4 and j+4..j+8); column
    // indices as f64 (exact below 2⁵³).
    let split = n - n % 8;
    let base4 = _mm256_set1_pd(base);
    let row4 = _mm256_castsi256_pd(_mm256_set1_epi64x(i as i64));
    let inf = _mm256_set1_pd(f64::INFINITY);
    let (mut la, mut sa, mut lb, mut sb) = (inf, inf, inf, inf);
    let (mut ja, mut jb) = (inf, inf);
    let mut cols = _mm256_set_pd(3.0, 2.0, 1.0, 0.0);
    let four = _mm256_set1_pd(4.0);
    let mut j = 0;
    while j < split {
        let colsb = _mm256_add_pd(cols, four);
        // SAFETY: j + 8 ≤ n ≤ every slice's length.
        let (s_a, s_b) = unsafe {
            (
                relax4(
                    row.as_ptr().add(j),
                    v.as_ptr().add(j),
                    shortest.as_mut_ptr().add(j),
                    path.as_mut_ptr().add(j),
                    base4,
                    row4,
                ),
                relax4(
                    row.as_ptr().add(j + 4),
                    v.as_ptr().add(j + 4),
                    shortest.as_mut_ptr().add(j + 4),
                    path.as_mut_ptr().add(j + 4),
                    base4,
                    row4,
                ),
            )
        };
        sa = _mm256_min_pd(sa, _mm256_max_pd(s_a, la));
        sb = _mm256_min_pd(sb, _mm256_max_pd(s_b, lb));
        ja = _mm256_blendv_pd(ja, cols, _mm256_cmp_pd::<_CMP_LT_OQ>(s_a, la));
        jb = _mm256_blendv_pd(jb, colsb, _mm256_cmp_pd::<_CMP_LT_OQ>(s_b, lb));
        la = _mm256_min_pd(la, s_a);
        lb = _mm256_min_pd(lb, s_b);
        cols = _mm256_add_pd(colsb, four);
        j += 8;
    }
    let take_b = _mm256_or_pd(
        _mm256_cmp_pd::<_CMP_LT_OQ>(lb, la),
        _mm256_and_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(lb, la), _mm256_cmp_pd::<_CMP_LT_OQ>(jb, ja)),
    );
    let second = _mm256_min_pd(_mm256_min_pd(sa, sb), _mm256_max_pd(la, lb));
    let at = _mm256_blendv_pd(ja, jb, take_b);
    let low = _mm256_min_pd(la, lb);
    let b1 = hmin_pd(low);
    let at_min = _mm256_cmp_pd::<_CMP_EQ_OQ>(low, b1);
    let bj = hmin_pd(_mm256_blendv_pd(inf, at, at_min));
    let chosen = _mm256_and_pd(at_min, _mm256_cmp_pd::<_CMP_EQ_OQ>(at, bj));
    let b2 = hmin_pd(_mm256_min_pd(second, _mm256_blendv_pd(low, inf, chosen)));
    let bj = _mm256_cvtsd_f64(bj);
    let bj = if bj < f64::INFINITY { bj as usize } else { NONE };
    relax_tail(row, base, i, v, shortest, path, split, (_mm256_cvtsd_f64(b1), bj, _mm256_cvtsd_f64(b2)))
}

/// Relaxes four columns and returns their new shortest path lengths.
///
/// # Safety
/// Each pointer must be valid for four elements; the CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn relax4(
    c: *const f64,
    v: *const f64,
    s: *mut f64,
    p: *mut usize,
    base4: __m256d,
    row4: __m256d,
) -> __m256d {
    // SAFETY: the caller's contract.
    unsafe {
        let r = _mm256_sub_pd(_mm256_add_pd(base4, _mm256_loadu_pd(c)), _mm256_loadu_pd(v));
        let old = load_opaque(s);
        let better = _mm256_cmp_pd::<_CMP_LT_OQ>(r, old);
        let new = _mm256_blendv_pd(old, r, better);
        _mm256_storeu_pd(s, new);
        let p = p as *mut f64;
        _mm256_storeu_pd(p, _mm256_blendv_pd(load_opaque(p), row4, better));
        new
    }
}

/// The minimum of the four lanes, in every lane.
#[target_feature(enable = "avx2")]
#[inline]
fn hmin_pd(x: __m256d) -> __m256d {
    let y = _mm256_min_pd(x, _mm256_permute2f128_pd::<1>(x, x));
    _mm256_min_pd(y, _mm256_permute_pd::<0b0101>(y))
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn best_two(row: &[f32], v: &[f32]) -> (f32, usize, f32) {
    let n = row.len().min(v.len());
    // Two independent sets of eight lanes (columns j..j+8 and j+8..j+16)
    // halve the dependency chains through the running minima. Column
    // indices are kept as f32 (exact below 2²⁴).
    let split = n - n % 16;
    let inf = _mm256_set1_ps(f32::INFINITY);
    let (mut h1a, mut h2a, mut h1b, mut h2b) = (inf, inf, inf, inf);
    let (mut j1a, mut j1b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut cols = _mm256_set_ps(7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0);
    let eight = _mm256_set1_ps(8.0);
    let mut j = 0;
    while j < split {
        // SAFETY: j + 16 ≤ n ≤ both slices' lengths.
        let (ha, hb) = unsafe {
            (
                _mm256_sub_ps(_mm256_loadu_ps(row.as_ptr().add(j)), _mm256_loadu_ps(v.as_ptr().add(j))),
                _mm256_sub_ps(
                    _mm256_loadu_ps(row.as_ptr().add(j + 8)),
                    _mm256_loadu_ps(v.as_ptr().add(j + 8)),
                ),
            )
        };
        let colsb = _mm256_add_ps(cols, eight);
        h2a = _mm256_min_ps(h2a, _mm256_max_ps(ha, h1a));
        h2b = _mm256_min_ps(h2b, _mm256_max_ps(hb, h1b));
        j1a = _mm256_blendv_ps(j1a, cols, _mm256_cmp_ps::<_CMP_LT_OQ>(ha, h1a));
        j1b = _mm256_blendv_ps(j1b, colsb, _mm256_cmp_ps::<_CMP_LT_OQ>(hb, h1b));
        h1a = _mm256_min_ps(h1a, ha);
        h1b = _mm256_min_ps(h1b, hb);
        cols = _mm256_add_ps(colsb, eight);
        j += 16;
    }
    // Merge the two sets lane by lane: the lower value wins, the lower
    // column on ties; the loser's best joins the second bests.
    let take_b = _mm256_or_ps(
        _mm256_cmp_ps::<_CMP_LT_OQ>(h1b, h1a),
        _mm256_and_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(h1b, h1a), _mm256_cmp_ps::<_CMP_LT_OQ>(j1b, j1a)),
    );
    let h2 = _mm256_min_ps(_mm256_min_ps(h2a, h2b), _mm256_max_ps(h1a, h1b));
    let j1 = _mm256_blendv_ps(j1a, j1b, take_b);
    let h1 = _mm256_min_ps(h1a, h1b);
    // Across lanes, branch-free: the minimum, the lowest column attaining
    // it, and the smallest of everything else.
    let b1 = hmin_ps(h1);
    let at_min = _mm256_cmp_ps::<_CMP_EQ_OQ>(h1, b1);
    let bj = hmin_ps(_mm256_blendv_ps(inf, j1, at_min));
    let chosen = _mm256_and_ps(at_min, _mm256_cmp_ps::<_CMP_EQ_OQ>(j1, bj));
    let b2 = hmin_ps(_mm256_min_ps(h2, _mm256_blendv_ps(h1, inf, chosen)));
    let partial = (_mm256_cvtss_f32(b1), _mm256_cvtss_f32(bj) as usize, _mm256_cvtss_f32(b2));
    best_two_tail(row, v, split, partial)
}

/// The minimum of the eight lanes, in every lane.
#[target_feature(enable = "avx2")]
#[inline]
fn hmin_ps(x: __m256) -> __m256 {
    let y = _mm256_min_ps(x, _mm256_permute2f128_ps::<1>(x, x));
    let y = _mm256_min_ps(y, _mm256_permute_ps::<0b0100_1110>(y));
    _mm256_min_ps(y, _mm256_permute_ps::<0b1011_0001>(y))
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn min_reduced(row: &[f64], v: &[f64]) -> f64 {
    let n = row.len().min(v.len());
    let split = n - n % 4;
    let mut low = _mm256_set1_pd(f64::INFINITY);
    let mut j = 0;
    while j < split {
        // SAFETY: j + 4 ≤ n ≤ both slices' lengths.
        let h = unsafe {
            _mm256_sub_pd(_mm256_loadu_pd(row.as_ptr().add(j)), _mm256_loadu_pd(v.as_ptr().add(j)))
        };
        low = _mm256_min_pd(low, h);
        j += 4;
    }
    let mut lanes = [0.0f64; 4];
    // SAFETY: four 64-bit lanes.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), low) };
    let mut m = lanes.iter().copied().fold(f64::INFINITY, f64::min);
    for k in split..n {
        m = m.min(row[k] - v[k]);
    }
    m
}
