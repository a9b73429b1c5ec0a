//! Work spread over threads: candle's own CPU worker pool for the ops whose
//! products are `gemm` calls, rayon's for the per-sample loops.

use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu::Real;

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

/// Runs `f(sample, out_block)` over the `n` blocks of `out`: spread over
/// samples on candle's CPU worker pool when there are at least as many
/// samples as threads, otherwise sample by sample with `gemm` itself threaded.
pub(crate) fn per_sample<T: Send>(out: &mut [T], n: usize, f: impl Fn(usize, &mut [T], Parallelism) + Sync) {
    if n == 0 {
        return;
    }
    let len = out.len() / n;
    let threads = candle::utils::get_num_threads();
    if threads > 1 && n < threads {
        for (s, o) in out.chunks_mut(len).enumerate() {
            f(s, o, Parallelism::Rayon(threads));
        }
    } else {
        let rows = RowsOut::new(out, len);
        par_items(n, |r| {
            for s in r {
                // SAFETY: par_items hands out disjoint ranges of samples.
                f(s, unsafe { rows.rows(s..s + 1) }, Parallelism::None);
            }
        });
    }
}

/// `f(input, output)` on each of `batch` samples of `in_len` input and
/// `out_len` output values, on rayon's pool; the outputs start at zero.
pub(crate) fn par_samples<T: Real>(
    src: &[T],
    (batch, in_len, out_len): (usize, usize, usize),
    f: impl Fn(&[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::ZERO; batch * out_len];
    out.par_chunks_mut(out_len).zip(src.par_chunks(in_len)).for_each(|(o, i)| f(i, o));
    out
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
