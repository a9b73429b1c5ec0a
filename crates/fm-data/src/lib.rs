//! Datasets for flow-based generative models.
//!
//! * [`Toy2d`]: the classic 2D toys (moons, 8 Gaussians, checkerboard,
//!   circles, two spirals, swiss roll) with reference-exact geometry;
//! * [`load_csv_columns`]: numeric columns of a CSV file as a [`PointCloud`],
//!   with errors that name the file, line and column;
//! * [`Standardizer`]: per-column standardization with its log-Jacobian, for
//!   likelihoods reported in data units;
//! * [`DataSpec`]: the `--data` command-line specification (`moons`,
//!   `csv:PATH`);
//! * [`images`]: MNIST / Fashion-MNIST (IDX, plain or gzip), CIFAR-10
//!   (binary), scikit-learn's digits and PNG folders as an
//!   [`images::ImageSet`], and [`images::ImageBatcher`] for shuffled,
//!   flipped, dequantized batches in `[−1, 1]`;
//! * `hub` (feature `hub`): `hf://OWNER/REPO[@REV][/FILE]` addresses and
//!   downloads into the Hugging Face Hub cache;
//! * [`FiniteSet`] and [`Sampler`]: minibatches from a fixed training set or
//!   straight from a toy.
//!
//! ```
//! use candle::Device;
//! use fm_data::{DataSpec, FiniteSet, Sampler, Toy2d};
//! use rand::SeedableRng;
//!
//! # fn main() -> fm_data::Result<()> {
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let spec: DataSpec = "two-moons".parse()?;
//! assert_eq!(spec.to_string(), "moons");
//! let toy = spec.toy().expect("a toy").with_noise(0.1);
//!
//! // Infinite data: a fresh batch every step.
//! let x = toy.sample_tensor(128, &mut rng, &Device::Cpu)?;
//! assert_eq!(x.dims(), &[128, 2]);
//!
//! // Finite data: 1000 points drawn once, batches resampled from them.
//! let train = FiniteSet::from_toy(&toy, 1000, &mut rng)?;
//! let batch = train.sample_batch(64, &mut rng, &Device::Cpu)?;
//! assert_eq!(batch.dims(), &[64, 2]);
//!
//! // Unknown names list the valid ones.
//! let err = "spiral-galaxy".parse::<DataSpec>().unwrap_err().to_string();
//! assert!(err.contains("8gaussians") && err.contains("csv:PATH"));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod batch;
pub mod csv;
pub mod error;
#[cfg(feature = "hub")]
pub mod hub;
pub mod images;
pub mod manifold_toy;
pub mod npy;
pub mod spec;
pub mod standardize;
pub mod tokens;
pub mod toy;

pub use batch::{sample_rows, FiniteSet, Sampler};
pub use csv::{load_csv_columns, parse_csv_columns, PointCloud};
pub use error::{Error, Result};
pub use spec::DataSpec;
pub use standardize::Standardizer;
pub use toy::Toy2d;
