//! The energy distance between two point clouds.

use candle::Tensor;

use super::cloud::{cloud_pair, mean_pairwise, Points};
use crate::Result;

/// The (squared) energy distance `2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖` between
/// the empirical distributions of `x` and `y` (Székely & Rizzo).
///
/// All three expectations are **V-statistics**: means over *all* pairs,
/// including `i = j` in the within-set terms. The result is therefore ≥ 0
/// (it is the squared MMD of the distance kernel between the two empirical
/// measures; tiny negative rounding errors are clamped to 0), and it is
/// **exactly 0** when `x` and `y` hold the same points in the same order.
/// Euclidean distances are computed directly (no `‖a‖² + ‖b‖² − 2a·b`
/// cancellation). `O((n + m)² d)` time, `O(1)` extra memory.
///
/// # Shapes
/// - `x`: `(n, d)`, any float dtype (computed in `f64`)
/// - `y`: `(m, d)`
///
/// # Errors
/// [`crate::Error::Shape`] if either is not rank 2 or the dimensions differ;
/// [`crate::Error::InvalidArgument`] if either is empty or non-finite.
pub fn energy_distance(x: &Tensor, y: &Tensor) -> Result<f64> {
    let (x, y) = cloud_pair(x, "x", y, "y")?;
    Ok(energy_points(x.points(), y.points()))
}

/// [`energy_distance`] on validated points.
pub(crate) fn energy_points(x: Points<'_>, y: Points<'_>) -> f64 {
    let xy = mean_pairwise(x, y, f64::sqrt);
    let xx = mean_pairwise(x, x, f64::sqrt);
    let yy = mean_pairwise(y, y, f64::sqrt);
    (2.0 * xy - xx - yy).max(0.0)
}
