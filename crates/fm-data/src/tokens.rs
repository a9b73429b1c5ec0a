//! Data as tokens for discrete flow matching: points on a uniform grid
//! (flow_matching's 2-D discrete example puts two coordinates on 128 cells
//! each), images as their pixel levels (sklearn's digits: 64 tokens of 17
//! levels) or binarized (MNIST: 784 tokens of 2).

use serde::{Deserialize, Serialize};

use crate::images::ImageSet;
use crate::{Error, Result};

/// A uniform grid of `bins` cells per coordinate over `[lo, hi]`: cell `k`
/// has centre `lo + k·(hi − lo)/(bins − 1)`; a value maps to the nearest
/// centre (clipped to the grid).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenGrid {
    /// The first centre.
    pub lo: f64,
    /// The last centre.
    pub hi: f64,
    /// Cells per coordinate (the vocabulary).
    pub bins: usize,
}

impl TokenGrid {
    /// A grid, checked: `lo < hi`, both finite, `2 ≤ bins ≤ 65536`.
    pub fn new(lo: f64, hi: f64, bins: usize) -> Result<Self> {
        if !(lo.is_finite() && hi.is_finite() && lo < hi && (2..=65_536).contains(&bins)) {
            return Err(Error::InvalidParameter(format!(
                "a token grid needs finite lo < hi and 2 ≤ bins ≤ 65536, got [{lo}, {hi}] with {bins} bins"
            )));
        }
        Ok(Self { lo, hi, bins })
    }

    /// `bins` equal cells tiling `[a, b]` (centres half a cell inside):
    /// `tiling(−4, 4, 128)` puts the 4×4 checkerboard's squares on 32×32 cells each.
    pub fn tiling(a: f64, b: f64, bins: usize) -> Result<Self> {
        if !(a.is_finite() && b.is_finite() && a < b && (2..=65_536).contains(&bins)) {
            return Err(Error::InvalidParameter(format!(
                "a token grid needs finite a < b and 2 ≤ bins ≤ 65536, got [{a}, {b}] with {bins} bins"
            )));
        }
        let half = 0.5 * (b - a) / bins as f64;
        Self::new(a + half, b - half, bins)
    }

    /// `bins` grey levels of images in `[−1, 1]`: values from −1 to 1 (2
    /// binarizes at 0, i.e. at half the maximum pixel level).
    pub fn grey_levels(bins: usize) -> Result<Self> {
        Self::new(-1.0, 1.0, bins)
    }

    /// The nearest centre of every value (the values a model of these tokens sees).
    pub fn snap(&self, values: &[f32]) -> Result<Vec<f32>> {
        self.centres(&self.tokens(values)?)
    }

    /// The token of every value (non-finite values are an error naming their index).
    pub fn tokens(&self, values: &[f32]) -> Result<Vec<u32>> {
        let scale = (self.bins - 1) as f64 / (self.hi - self.lo);
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if !v.is_finite() {
                    return Err(Error::InvalidParameter(format!(
                        "value {i} is {v}, not a number on the grid"
                    )));
                }
                let k = ((v as f64 - self.lo) * scale).round().clamp(0.0, (self.bins - 1) as f64);
                Ok(k as u32)
            })
            .collect()
    }

    /// The cell centre of every token (tokens past the grid are an error).
    pub fn centres(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let step = (self.hi - self.lo) / (self.bins - 1) as f64;
        tokens
            .iter()
            .map(|&k| {
                if k as usize >= self.bins {
                    return Err(Error::InvalidParameter(format!(
                        "token {k} outside a grid of {} cells",
                        self.bins
                    )));
                }
                Ok((self.lo + k as f64 * step) as f32)
            })
            .collect()
    }
}

/// The pixels of `images` as tokens: each pixel's level (`0..levels`), or,
/// with `binarize`, 1 where the level is at least half the maximum and 0
/// elsewhere. Returns the tokens (`n · c·h·w`) and the vocabulary.
pub fn image_tokens(images: &ImageSet, binarize: bool) -> (Vec<u32>, usize) {
    if binarize {
        let max = images.levels.saturating_sub(1) as u32;
        let tokens = images.pixels.iter().map(|&p| u32::from(2 * p as u32 >= max)).collect();
        (tokens, 2)
    } else {
        (images.pixels.iter().map(|&p| p as u32).collect(), images.levels as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cell centres map back to their own tokens, values go to the nearest
    /// centre and clip at the ends; bad grids and values are errors.
    #[test]
    fn tokens_and_centres_round_trip() -> Result<()> {
        let g = TokenGrid::new(-1.0, 1.0, 5)?; // centres −1, −0.5, 0, 0.5, 1
        let all: Vec<u32> = (0..5).collect();
        assert_eq!(g.tokens(&g.centres(&all)?)?, all);
        assert_eq!(g.tokens(&[-3.0, -0.74, -0.76, 0.2, 0.3, 9.0])?, vec![0, 1, 0, 2, 3, 4]);
        assert!(g.tokens(&[f32::NAN]).unwrap_err().to_string().contains("value 0"));
        assert!(g.centres(&[5]).is_err());
        assert!(TokenGrid::new(1.0, 1.0, 5).is_err() && TokenGrid::new(0.0, 1.0, 1).is_err());
        // Cells tiling [−4, 4]: cell k is [−4 + k/16, −4 + (k + 1)/16).
        let t = TokenGrid::tiling(-4.0, 4.0, 128)?;
        assert_eq!(t.tokens(&[-4.0, -3.9376, -2.0001, -1.9999, 3.9999])?, vec![0, 0, 31, 32, 127]);
        assert_eq!(t.snap(&[0.01])?, vec![1.0 / 32.0]);
        assert!(TokenGrid::tiling(0.0, 1.0, 1).is_err());
        Ok(())
    }

    #[test]
    fn images_become_levels_or_bits() {
        let set = ImageSet {
            pixels: vec![0, 7, 8, 16],
            labels: None,
            n: 1,
            channels: 1,
            height: 2,
            width: 2,
            levels: 17,
            source: "test".into(),
        };
        assert_eq!(image_tokens(&set, false), (vec![0, 7, 8, 16], 17));
        assert_eq!(image_tokens(&set, true), (vec![0, 0, 1, 1], 2));
    }
}
