//! Dense products and sums on slices: one `gemm` call with explicit strides,
//! and rows added in order.

use gemm::Parallelism;

use super::cpu::Real;

/// `dst (m, n) = [dst +] lhs (m, k) · rhs (k, n)`, strides given as
/// (column stride, row stride).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    dst_s: (usize, usize),
    accumulate: bool,
    lhs: &[T],
    lhs_s: (usize, usize),
    rhs: &[T],
    rhs_s: (usize, usize),
    parallelism: Parallelism,
) {
    let extent = |rows: usize, cols: usize, (cs, rs): (usize, usize)| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    assert!(
        dst.len() >= extent(m, n, dst_s)
            && lhs.len() >= extent(m, k, lhs_s)
            && rhs.len() >= extent(k, n, rhs_s),
        "gemm_into: operand too short for its strides"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every element the strides address lies inside its slice
    // (asserted above), and `dst` is a `&mut` distinct from the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_s.0 as isize,
            dst_s.1 as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_s.0 as isize,
            lhs_s.1 as isize,
            rhs.as_ptr(),
            rhs_s.0 as isize,
            rhs_s.1 as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `acc[j] += Σ_i rows[i, j]` over the rows of `acc.len()` values in
/// `rows`, added in order (a bias gradient, partial sums).
pub(crate) fn add_rows<T: Real>(acc: &mut [T], rows: &[T]) {
    if acc.is_empty() {
        return;
    }
    for row in rows.chunks_exact(acc.len()) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
    }
}
