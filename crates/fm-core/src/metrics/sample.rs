//! All sample-quality metrics at once.

use candle::Tensor;
use serde::Serialize;

use super::cloud::cloud_pair;
use super::energy::energy_points;
use super::mmd::{check_bandwidth, mmd_points};
use super::sliced::sliced_points;
use super::wasserstein::w2_exact_points;
use crate::{Result, SeededRng};

/// The number of random directions [`SampleMetrics::compute`] uses for the
/// sliced W2.
pub const SLICED_PROJECTIONS: usize = 256;

/// Sample-quality metrics between generated samples and reference data.
///
/// ```
/// use candle::{Device, Tensor};
/// use fm_core::metrics::SampleMetrics;
///
/// # fn main() -> fm_core::Result<()> {
/// let x = Tensor::new(&[[0.0f32], [1.0]], &Device::Cpu)?;
/// let y = Tensor::new(&[[2.0f32], [3.0]], &Device::Cpu)?;
/// let m = SampleMetrics::compute(&x, &y, 0, 2, 1.0)?;
/// assert!((m.energy_distance - 3.0).abs() < 1e-12);
/// assert_eq!(m.exact_w2, Some(2.0));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleMetrics {
    /// [`super::energy_distance`] (V-statistic).
    pub energy_distance: f64,
    /// [`super::mmd_rbf`]: squared MMD, biased V-statistic, Gaussian kernel
    /// with bandwidth [`Self::mmd_bandwidth`].
    pub mmd_rbf: f64,
    /// The bandwidth `h` of the MMD kernel `exp(−‖a − b‖² / (2 h²))`.
    pub mmd_bandwidth: f64,
    /// [`super::sliced_wasserstein2`] with [`SLICED_PROJECTIONS`] directions.
    pub sliced_w2: f64,
    /// [`super::wasserstein2_exact`] on the first `k` points of each set, or
    /// `None` when not computed (see [`Self::compute`]).
    pub exact_w2: Option<f64>,
}

impl SampleMetrics {
    /// Computes every metric between `samples` and `reference`.
    ///
    /// - `seed` seeds the [`SLICED_PROJECTIONS`] random directions of the
    ///   sliced W2 (same seed, same directions).
    /// - `bandwidth` is the MMD kernel bandwidth `h`; keep it fixed across
    ///   runs you compare (e.g. from
    ///   [`super::median_heuristic_bandwidth`] of the reference data
    ///   against itself, or `1.0` for standardised data).
    /// - `exact_limit` caps the exact W2, which costs `O(k³)`: with
    ///   `k = min(n, m, exact_limit)`, it is computed on the first `k` points
    ///   of each set, and is `None` when `exact_limit == 0`. Only the first
    ///   points are used, so pass sets in random order.
    ///
    /// # Shapes
    /// - `samples`: `(n, d)`, any float dtype (computed in `f64`)
    /// - `reference`: `(m, d)`
    ///
    /// # Errors
    /// [`crate::Error::Shape`] if either is not rank 2 or the dimensions
    /// differ; [`crate::Error::InvalidArgument`] if either is empty or
    /// non-finite, or `bandwidth` is not finite and positive.
    pub fn compute(
        samples: &Tensor,
        reference: &Tensor,
        seed: u64,
        exact_limit: usize,
        bandwidth: f64,
    ) -> Result<Self> {
        check_bandwidth(bandwidth)?;
        let (x, y) = cloud_pair(samples, "samples", reference, "reference")?;
        let (x, y) = (x.points(), y.points());
        let mut rng = SeededRng::new(seed);
        let k = x.n().min(y.n()).min(exact_limit);
        let exact_w2 = if k > 0 { Some(w2_exact_points(x.head(k), y.head(k))?) } else { None };
        Ok(Self {
            energy_distance: energy_points(x, y),
            mmd_rbf: mmd_points(x, y, bandwidth),
            mmd_bandwidth: bandwidth,
            sliced_w2: sliced_points(x, y, SLICED_PROJECTIONS, &mut rng)?,
            exact_w2,
        })
    }
}
