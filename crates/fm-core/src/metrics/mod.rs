//! Sample-quality metrics between two point clouds.
//!
//! Every metric takes two tensors of shape `(n, d)` and `(m, d)` (any float
//! dtype, any device; values are copied to the CPU and computed in `f64`)
//! and checks them: rank 2 and equal `d` ([`crate::Error::Shape`]), non-empty
//! and finite ([`crate::Error::InvalidArgument`]).
//!
//! - [`energy_distance`]: `2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖` (V-statistic).
//! - [`mmd_rbf`]: squared MMD with a Gaussian kernel (V-statistic), with
//!   [`median_heuristic_bandwidth`].
//! - [`sliced_wasserstein2`]: sliced W2 over random directions.
//! - [`wasserstein2_exact`]: exact W2 via [`crate::assignment`] (`n = m`).
//! - [`frechet_distance`]: the Fréchet distance between Gaussian fits of two
//!   feature sets (FID's formula), with [`FeatureStats`].
//! - [`nearest_neighbor_distances`]: for memorisation analysis.
//! - [`SampleMetrics`]: all of the above at once.
//!
//! ```
//! use candle::{Device, Tensor};
//! use fm_core::metrics::{energy_distance, wasserstein2_exact};
//!
//! # fn main() -> fm_core::Result<()> {
//! let x = Tensor::new(&[[0.0f64, 0.0], [1.0, 0.0]], &Device::Cpu)?;
//! let y = (&x + 3.0)?;
//! assert!((wasserstein2_exact(&x, &y)? - 18f64.sqrt()).abs() < 1e-12);
//! assert_eq!(energy_distance(&x, &x)?, 0.0);
//! # Ok(())
//! # }
//! ```

mod cloud;
mod energy;
mod frechet;
mod mmd;
mod nearest;
mod sample;
mod sliced;
mod wasserstein;

pub use energy::energy_distance;
pub use frechet::{frechet_distance, frechet_distance_stats, FeatureStats};
pub use mmd::{median_heuristic_bandwidth, mmd_rbf, MEDIAN_HEURISTIC_MAX_POINTS};
pub use nearest::nearest_neighbor_distances;
pub use sample::{SampleMetrics, SLICED_PROJECTIONS};
pub use sliced::sliced_wasserstein2;
pub use wasserstein::wasserstein2_exact;
