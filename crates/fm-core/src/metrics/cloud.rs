//! Point clouds read from tensors, validated, and the pairwise kernels the
//! metrics share.

use candle::Tensor;

use crate::{to_f64_vec, Error, Result};

/// Reference points per block in the blocked pairwise loops: a block of
/// `BLOCK_FLOATS` values (32 KiB of `f64`) stays in L1 cache while every
/// query row streams past it.
pub(crate) const BLOCK_FLOATS: usize = 4096;

/// A validated point cloud: `n ≥ 1` finite points of dimension `d ≥ 1`,
/// stored row-major as `f64`.
#[derive(Debug, Clone)]
pub(crate) struct Cloud {
    data: Vec<f64>,
    d: usize,
}

/// A borrowed row-major point set (`data.len() == n * d`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Points<'a> {
    pub(crate) data: &'a [f64],
    pub(crate) d: usize,
}

impl Cloud {
    /// Reads and validates a `(n, d)` tensor of any float dtype.
    pub(crate) fn from_tensor(t: &Tensor, name: &'static str) -> Result<Self> {
        let (_, d) = check_shape(t, name)?;
        let data = to_f64_vec(t)?;
        if let Some(k) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                name,
                format!("point {} coordinate {} is {}; values must be finite", k / d, k % d, data[k]),
            ));
        }
        Ok(Self { data, d })
    }

    /// The points, borrowed.
    pub(crate) fn points(&self) -> Points<'_> {
        Points { data: &self.data, d: self.d }
    }
}

impl<'a> Points<'a> {
    /// The number of points.
    pub(crate) fn n(&self) -> usize {
        self.data.len() / self.d
    }

    /// The first `k ≤ n` points.
    pub(crate) fn head(&self, k: usize) -> Points<'a> {
        let end = (k * self.d).min(self.data.len());
        Points { data: &self.data[..end], d: self.d }
    }

    /// Point `i`.
    pub(crate) fn row(&self, i: usize) -> &'a [f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// The points in order.
    pub(crate) fn rows(&self) -> std::slice::ChunksExact<'a, f64> {
        self.data.chunks_exact(self.d)
    }
}

/// Checks that `t` is a non-empty `(n, d)` tensor; returns `(n, d)`.
fn check_shape(t: &Tensor, name: &'static str) -> Result<(usize, usize)> {
    let dims = t.dims();
    if dims.len() != 2 {
        return Err(Error::Shape(format!("`{name}` must be a (n, d) point cloud, got shape {dims:?}")));
    }
    if dims[0] == 0 || dims[1] == 0 {
        return Err(Error::invalid(
            name,
            format!("point cloud is empty (shape {dims:?}); need n ≥ 1 points of dimension d ≥ 1"),
        ));
    }
    Ok((dims[0], dims[1]))
}

/// Reads two point clouds of the same dimension.
///
/// Shapes are checked (rank, emptiness, matching `d`) before any data is
/// copied; then values are checked to be finite.
pub(crate) fn cloud_pair(
    x: &Tensor,
    x_name: &'static str,
    y: &Tensor,
    y_name: &'static str,
) -> Result<(Cloud, Cloud)> {
    let (_, dx) = check_shape(x, x_name)?;
    let (_, dy) = check_shape(y, y_name)?;
    if dx != dy {
        return Err(Error::Shape(format!(
            "`{x_name}` has shape {:?} and `{y_name}` has shape {:?}: point dimensions differ",
            x.dims(),
            y.dims()
        )));
    }
    Ok((Cloud::from_tensor(x, x_name)?, Cloud::from_tensor(y, y_name)?))
}

/// `‖a − b‖²`, with four independent accumulators (so it vectorises).
///
/// Exactly symmetric: `sq_dist(a, b) == sq_dist(b, a)` bit for bit.
#[inline]
pub(crate) fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    let ac = a.chunks_exact(4);
    let bc = b.chunks_exact(4);
    let (ar, br) = (ac.remainder(), bc.remainder());
    let mut acc = [0.0f64; 4];
    for (x, y) in ac.zip(bc) {
        for k in 0..4 {
            let t = x[k] - y[k];
            acc[k] += t * t;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ar.iter().zip(br) {
        let t = x - y;
        s += t * t;
    }
    s
}

/// `(1 / (n m)) Σ_i Σ_j f(‖a_i − b_j‖²)` over all `n × m` pairs, blocked over
/// `b` for cache reuse.
///
/// Deterministic: the same inputs give the same bits, so for `a == b` as
/// data, `mean_pairwise(a, a, f)` and `mean_pairwise(b, b, f)` agree exactly.
pub(crate) fn mean_pairwise(a: Points<'_>, b: Points<'_>, f: impl Fn(f64) -> f64) -> f64 {
    let d = a.d;
    let block = (BLOCK_FLOATS / d).max(1) * d;
    let mut total = 0.0;
    for b_block in b.data.chunks(block) {
        for ar in a.rows() {
            let mut s = 0.0;
            for br in b_block.chunks_exact(d) {
                s += f(sq_dist(ar, br));
            }
            total += s;
        }
    }
    total / (a.n() as f64 * b.n() as f64)
}
