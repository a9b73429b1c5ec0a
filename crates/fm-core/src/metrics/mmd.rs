//! Maximum mean discrepancy with a Gaussian (RBF) kernel, and the median
//! heuristic for its bandwidth.

use candle::Tensor;

use super::cloud::{cloud_pair, mean_pairwise, sq_dist, Points};
use crate::{Error, Result};

/// At most this many pooled points enter [`median_heuristic_bandwidth`]
/// (an evenly strided subset when there are more), bounding its cost at
/// about two million distances.
pub const MEDIAN_HEURISTIC_MAX_POINTS: usize = 2000;

/// The squared maximum mean discrepancy `MMD²(x, y)` with the Gaussian kernel
/// `k(a, b) = exp(−‖a − b‖² / (2 h²))`, `h = bandwidth`.
///
/// Biased **V-statistic**: `mean k(x_i, x_j) + mean k(y_i, y_j) − 2 mean k(x_i, y_j)`
/// over all pairs, diagonal included. It is ≥ 0 (tiny negative rounding
/// errors are clamped to 0), exactly 0 when `x` and `y` hold the same points
/// in the same order, and at most 2. Choose `h` with
/// [`median_heuristic_bandwidth`] or fix it across experiments so values are
/// comparable. `O((n + m)² d)` time.
///
/// # Shapes
/// - `x`: `(n, d)`, any float dtype (computed in `f64`)
/// - `y`: `(m, d)`
///
/// # Errors
/// [`Error::Shape`] if either is not rank 2 or the dimensions differ;
/// [`Error::InvalidArgument`] if either is empty or non-finite, or if
/// `bandwidth` is not finite and positive.
pub fn mmd_rbf(x: &Tensor, y: &Tensor, bandwidth: f64) -> Result<f64> {
    check_bandwidth(bandwidth)?;
    let (x, y) = cloud_pair(x, "x", y, "y")?;
    Ok(mmd_points(x.points(), y.points(), bandwidth))
}

/// Checks that a kernel bandwidth is finite and positive.
pub(crate) fn check_bandwidth(bandwidth: f64) -> Result<()> {
    if bandwidth.is_finite() && bandwidth > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid("bandwidth", format!("must be finite and > 0, got {bandwidth}")))
    }
}

/// [`mmd_rbf`] on validated points and bandwidth.
pub(crate) fn mmd_points(x: Points<'_>, y: Points<'_>, bandwidth: f64) -> f64 {
    let gamma = 1.0 / (2.0 * bandwidth * bandwidth);
    let kernel = |s: f64| (-gamma * s).exp();
    let xy = mean_pairwise(x, y, kernel);
    let xx = mean_pairwise(x, x, kernel);
    let yy = mean_pairwise(y, y, kernel);
    (xx + yy - 2.0 * xy).max(0.0)
}

/// The median heuristic bandwidth: the median Euclidean distance between
/// distinct points of the pooled sample `x ∪ y` (pairs `i < j`; the mean of
/// the two middle values for an even count), for use as `h` in [`mmd_rbf`].
///
/// When the pool has more than [`MEDIAN_HEURISTIC_MAX_POINTS`] points, an
/// evenly strided deterministic subset of that many pooled points is used.
///
/// # Shapes
/// - `x`: `(n, d)`, any float dtype (computed in `f64`)
/// - `y`: `(m, d)`
///
/// # Errors
/// As [`mmd_rbf`]; also [`Error::InvalidArgument`] if the median distance is
/// 0 (e.g. all points coincide), which is no usable bandwidth.
pub fn median_heuristic_bandwidth(x: &Tensor, y: &Tensor) -> Result<f64> {
    let (x, y) = cloud_pair(x, "x", y, "y")?;
    median_heuristic_points(x.points(), y.points())
}

/// [`median_heuristic_bandwidth`] on validated points.
pub(crate) fn median_heuristic_points(x: Points<'_>, y: Points<'_>) -> Result<f64> {
    let (nx, ny) = (x.n(), y.n());
    let total = nx + ny;
    let k = total.min(MEDIAN_HEURISTIC_MAX_POINTS);
    let pooled: Vec<&[f64]> = (0..k)
        .map(|s| {
            // Evenly strided: index ⌊s · total / k⌋, the identity when k == total.
            let idx = ((s as u128 * total as u128) / k as u128) as usize;
            if idx < nx {
                x.row(idx)
            } else {
                y.row(idx - nx)
            }
        })
        .collect();
    let mut dists = Vec::with_capacity(k * (k - 1) / 2);
    for (i, a) in pooled.iter().enumerate() {
        for b in &pooled[i + 1..] {
            dists.push(sq_dist(a, b).sqrt());
        }
    }
    let median = median(&mut dists).unwrap_or(0.0);
    if median > 0.0 {
        Ok(median)
    } else {
        Err(Error::invalid(
            "x, y",
            "the median pairwise distance is 0 (too few distinct points) and gives no bandwidth",
        ))
    }
}

/// The median of finite values (mean of the middle two for an even count);
/// `None` when empty. Reorders `v`.
fn median(v: &mut [f64]) -> Option<f64> {
    let len = v.len();
    if len == 0 {
        return None;
    }
    let mid = len / 2;
    let (lower, &mut upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if len % 2 == 1 {
        return Some(upper);
    }
    let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(0.5 * (below + upper))
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
