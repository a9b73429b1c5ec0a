//! What fm's CPU custom ops share: a contiguous operand's values, one `gemm`
//! call on slices with explicit strides (f32 and f64), and work spread over
//! candle's own CPU worker pool.

use candle::{CpuStorage, Layout};
use gemm::Parallelism;

/// The values of a contiguous operand (`op` names the custom op in the error).
pub(crate) fn values<'a, T>(v: &'a [T], l: &Layout, op: &str) -> candle::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle::bail!("{op}: non-contiguous operand"),
    }
}

/// The element types the kernels run in.
pub(crate) trait Elem: Copy + Send + Sync + Default + std::ops::Add<Output = Self> + 'static {
    const ONE: Self;
}
impl Elem for f32 {
    const ONE: Self = 1.0;
}
impl Elem for f64 {
    const ONE: Self = 1.0;
}

/// `dst (m, n) = [dst +] lhs (m, k) · rhs (k, n)`, strides given as
/// (column stride, row stride).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Elem>(
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

/// Rows per work item of [`par_row_blocks`].
const ROW_BLOCK: usize = 32;

/// Runs `f(items)` over `0..n_items` in ranges, on candle's own CPU worker
/// pool (the one its elementwise ops use) when candle runs more than one
/// thread, so that the products of the custom ops and candle's ops share one
/// set of threads instead of two pools competing for the cores.
pub(crate) fn par_items(n_items: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    if candle::utils::get_num_threads() <= 1 || n_items <= 1 {
        f(0..n_items);
        return;
    }
    candle::utils::barrier_pool().execute_chunked(n_items, f);
}

/// [`par_items`] over `0..n_rows` in blocks of [`ROW_BLOCK`] rows.
pub(crate) fn par_row_blocks(n_rows: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    par_items(n_rows.div_ceil(ROW_BLOCK), |r| f(r.start * ROW_BLOCK..(r.end * ROW_BLOCK).min(n_rows)));
}

/// A mutable buffer written in disjoint row ranges from several threads.
pub(crate) struct RowsOut<T> {
    ptr: *mut T,
    len: usize,
    row_len: usize,
}

// SAFETY: `rows` hands out slices of disjoint row ranges only (its caller
// guarantees each range is taken once), so sharing the pointer is sound.
unsafe impl<T: Send> Sync for RowsOut<T> {}

impl<T> RowsOut<T> {
    /// Wraps `buf`, made of rows of `row_len` values.
    pub(crate) fn new(buf: &mut [T], row_len: usize) -> Self {
        Self { ptr: buf.as_mut_ptr(), len: buf.len(), row_len }
    }

    /// The rows `rows` of the buffer.
    ///
    /// # Safety
    /// No two live slices may overlap: each row range is taken once.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn rows(&self, rows: std::ops::Range<usize>) -> &mut [T] {
        let (a, b) = (rows.start * self.row_len, rows.end * self.row_len);
        assert!(a <= b && b <= self.len, "RowsOut: rows out of range");
        // SAFETY: in bounds (asserted) and disjoint from every other live
        // slice (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(a), b - a) }
    }
}

/// The error for operands that are not all f32 or all f64.
pub(crate) fn bad_dtypes(op: &str) -> candle::Error {
    candle::Error::Msg(format!("{op}: needs f32 or f64 operands of one dtype"))
}

/// A custom op's forward pass on one contiguous f32 or f64 operand: `f32` or
/// `f64` maps its values to the result's.
pub(crate) fn map1(
    op: &str,
    (s, l): (&CpuStorage, &Layout),
    f32: impl FnOnce(&[f32]) -> Vec<f32>,
    f64: impl FnOnce(&[f64]) -> Vec<f64>,
) -> candle::Result<CpuStorage> {
    Ok(match s {
        CpuStorage::F32(a) => CpuStorage::F32(f32(values(a, l, op)?)),
        CpuStorage::F64(a) => CpuStorage::F64(f64(values(a, l, op)?)),
        _ => return Err(bad_dtypes(op)),
    })
}

/// [`map1`] for two operands of one dtype.
pub(crate) fn map2(
    op: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f32: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> candle::Result<CpuStorage> {
    Ok(match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(f32(values(a, l1, op)?, values(b, l2, op)?))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            CpuStorage::F64(f64(values(a, l1, op)?, values(b, l2, op)?))
        }
        _ => return Err(bad_dtypes(op)),
    })
}

/// The three operands of [`map3`]: storage and layout of each.
pub(crate) type Operands3<'a> = [(&'a CpuStorage, &'a Layout); 3];

/// [`map1`] for three operands of one dtype.
pub(crate) fn map3(
    op: &str,
    [(s1, l1), (s2, l2), (s3, l3)]: Operands3,
    f32: impl FnOnce(&[f32], &[f32], &[f32]) -> Vec<f32>,
    f64: impl FnOnce(&[f64], &[f64], &[f64]) -> Vec<f64>,
) -> candle::Result<CpuStorage> {
    Ok(match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
            CpuStorage::F32(f32(values(a, l1, op)?, values(b, l2, op)?, values(c, l3, op)?))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
            CpuStorage::F64(f64(values(a, l1, op)?, values(b, l2, op)?, values(c, l3, op)?))
        }
        _ => return Err(bad_dtypes(op)),
    })
}
