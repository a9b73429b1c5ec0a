//! Nearest-neighbour distances from queries to a reference set.

use candle::Tensor;

use super::cloud::{cloud_pair, sq_dist, Points, BLOCK_FLOATS};
use crate::Result;

/// The Euclidean distance from each query point to its nearest point of
/// `reference` (brute force, exact: `min_j ‖q_i − r_j‖`).
///
/// Useful for memorisation analysis: generated samples at distance ≈ 0 from
/// a training point are copies. Distances are computed directly (no
/// `‖a‖² + ‖b‖² − 2a·b` cancellation, so exact copies give exactly 0);
/// the loop is blocked over `reference` for cache reuse.
/// `O(n m d)` time, `O(n)` memory.
///
/// # Shapes
/// - `queries`: `(n, d)`, any float dtype (computed in `f64`)
/// - `reference`: `(m, d)`
/// - returns: `n` distances, in query order
///
/// # Errors
/// [`crate::Error::Shape`] if either is not rank 2 or the dimensions differ;
/// [`crate::Error::InvalidArgument`] if either is empty or non-finite.
pub fn nearest_neighbor_distances(queries: &Tensor, reference: &Tensor) -> Result<Vec<f64>> {
    let (q, r) = cloud_pair(queries, "queries", reference, "reference")?;
    Ok(nearest_points(q.points(), r.points()))
}

/// [`nearest_neighbor_distances`] on validated points.
pub(crate) fn nearest_points(queries: Points<'_>, reference: Points<'_>) -> Vec<f64> {
    let d = queries.d;
    let block = (BLOCK_FLOATS / d).max(1) * d;
    let mut best = vec![f64::INFINITY; queries.n()];
    for r_block in reference.data.chunks(block) {
        for (b, q) in best.iter_mut().zip(queries.rows()) {
            let mut m = *b;
            for r in r_block.chunks_exact(d) {
                m = m.min(sq_dist(q, r));
            }
            *b = m;
        }
    }
    best.iter_mut().for_each(|b| *b = b.sqrt());
    best
}
