//! Data as tokens for the discrete families: a [`TokenGrid`] over the run's
//! values, drawn in the same batches as the continuous families draw.
//!
//! - Points (toys, CSV in standardized units, fixed sets): `bins` equal cells
//!   per coordinate tiling `[−m, m]`, `m` the smallest integer bounding the
//!   data (the checkerboard's `[−4, 4]` gives flow_matching's 2-D discrete
//!   example, 32 × 32 cells per square at 128 bins).
//! - Images: the pixels at their levels' centres in `[−1, 1]`, rounded to
//!   `bins` values from −1 to 1 (by default the images' own levels: 17 for
//!   sklearn's digits; 2 binarizes at half the maximum, as MNIST's binarized
//!   versions do). No dequantization: tokens are exact values.

use candle::{Device, Tensor};
use fm_core::SeededRng;
use fm_data::tokens::TokenGrid;

use super::{Source, TrainingData};
use crate::error::bail;
use crate::Result;

/// The default cells per coordinate of point data (flow_matching's 2-D example).
pub const DEFAULT_POINT_BINS: usize = 128;

/// Draws of fresh toy data that bound the grid.
const BOUND_DRAWS: usize = 10_000;

impl TrainingData {
    /// Makes the data tokens: a grid of `bins` cells per coordinate (points;
    /// default 128) or grey levels (images; default the images' own), or
    /// `exact` (a resumed run's or a checkpoint's grid). Bounds of fresh toy
    /// data come from draws of the seed's `token-grid` stream.
    pub fn tokenize(
        &mut self,
        bins: Option<usize>,
        exact: Option<TokenGrid>,
        seed: u64,
    ) -> Result<TokenGrid> {
        let grid = match (exact, &self.source) {
            (Some(g), _) => g,
            (None, Source::Pairs { .. }) => bail!("--data {}: coupled pairs are not token data", self.name),
            (None, Source::Images { train, .. }) => {
                let levels = train.set().levels as usize;
                let bins = bins.unwrap_or(levels);
                if !(2..=levels).contains(&bins) {
                    bail!("--bins {bins}: the images have {levels} grey levels; give 2 to {levels}");
                }
                TokenGrid::grey_levels(bins)?
            }
            (None, source) => {
                let bins = bins.unwrap_or(DEFAULT_POINT_BINS);
                if !(2..=65_536).contains(&bins) {
                    bail!("--bins {bins}: give 2 to 65536 cells per coordinate");
                }
                let drawn;
                let values: &[f32] = match source {
                    Source::Fresh(toy) => {
                        drawn = toy.sample(BOUND_DRAWS, &mut SeededRng::for_stream(seed, "token-grid"));
                        &drawn
                    }
                    Source::Fixed(points) => points,
                    _ => unreachable!("pairs and images are matched above"),
                };
                let m = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                if !m.is_finite() {
                    bail!("--data {}: the values are not finite", self.name);
                }
                let m = (m as f64).ceil().max(1.0);
                TokenGrid::tiling(-m, m, bins)?
            }
        };
        self.tokens = Some(grid);
        Ok(grid)
    }

    /// The grid of tokenized data, `None` for continuous data.
    pub fn token_grid(&self) -> Option<TokenGrid> {
        self.tokens
    }

    /// A batch of `b` token sequences (`b · dim` ids, row-major) and their
    /// class labels `(b,)` `u32` where the data has them: the rows drawn as
    /// [`TrainingData::batch_with_labels`] draws them, without dequantization.
    pub fn token_batch(&mut self, b: usize, rng: &mut SeededRng) -> Result<(Vec<u32>, Option<Tensor>)> {
        let Some(grid) = self.tokens else { bail!("the data `{}` is not tokenized", self.name) };
        match &self.source {
            Source::Images { train, .. } => {
                let set = train.set();
                let idx: Vec<usize> = (0..b).map(|_| rand::Rng::random_range(rng.rng(), 0..set.n)).collect();
                let values = set.tensor(&idx, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
                let labels = match &set.labels {
                    Some(l) => Some(Tensor::from_vec(
                        idx.iter().map(|&i| u32::from(l[i])).collect::<Vec<_>>(),
                        b,
                        &Device::Cpu,
                    )?),
                    None => None,
                };
                Ok((grid.tokens(&values)?, labels))
            }
            _ => {
                let values = self.batch(b, rng)?.flatten_all()?.to_vec1::<f32>()?;
                Ok((grid.tokens(&values)?, None))
            }
        }
    }

    /// Bits per dimension (per token for token data) of a mean NLL in nats:
    /// `NLL / (D ln 2)` for tokens (an exact discrete likelihood or its bound),
    /// the dequantized density's bound for continuous images, `None` for points.
    pub fn bits_per_dim(&self, nll_mean: f64) -> Option<f64> {
        match (&self.tokens, self.image_info()) {
            (Some(_), _) => Some(nll_mean / (self.dim as f64 * std::f64::consts::LN_2)),
            (None, Some(info)) => Some(info.bits_per_dim(nll_mean)),
            (None, None) => None,
        }
    }

    pub(super) fn describe_tokens(&self, grid: &TokenGrid) -> String {
        match &self.source {
            Source::Images { train, .. } => {
                let s = train.set();
                format!(
                    "{} ({} images of {}×{}×{} as {} tokens of {} levels{})",
                    self.name,
                    s.n,
                    s.channels,
                    s.height,
                    s.width,
                    self.dim,
                    grid.bins,
                    if grid.bins == 2 { ", binarized" } else { "" }
                )
            }
            _ => {
                let half = 0.5 * (grid.hi - grid.lo) / (grid.bins - 1) as f64;
                let what = match &self.source {
                    Source::Fresh(_) => "fresh points every step".to_string(),
                    Source::Fixed(v) => format!("{} points", v.len() / self.dim),
                    _ => String::new(),
                };
                format!(
                    "{} ({what}; {} tokens of {} cells over [{}, {}])",
                    self.name,
                    self.dim,
                    grid.bins,
                    grid.lo - half,
                    grid.hi + half
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checkerboard's grid is flow_matching's (128 cells tiling [−4, 4]),
    /// its batches are tokens in range whose cells are all on black squares,
    /// and references are at cell centres.
    #[test]
    fn the_checkerboard_becomes_flow_matchings_discrete_example() -> Result<()> {
        let mut data = TrainingData::prepare("checkerboard", &[], None, None, 0)?;
        let grid = data.tokenize(None, None, 0)?;
        assert_eq!(grid, TokenGrid::tiling(-4.0, 4.0, 128)?);
        let (ids, labels) = data.token_batch(5000, &mut SeededRng::for_stream(0, "data"))?;
        assert!(labels.is_none() && ids.len() == 10_000);
        // One colour of squares: (column + row) of every 32-cell square has one parity.
        let parity = |p: &[u32]| (p[0] / 32 + p[1] / 32) % 2;
        assert!(ids.chunks(2).all(|p| parity(p) == parity(&ids[..2])), "points on both colours");
        let r = data.reference(100, 3)?;
        assert_eq!(grid.snap(&r)?, r);
        assert_eq!(data.bits_per_dim(2.0 * std::f64::consts::LN_2), Some(1.0));
        assert!(data.tokenize(Some(1), None, 0).is_err());
        Ok(())
    }
}
