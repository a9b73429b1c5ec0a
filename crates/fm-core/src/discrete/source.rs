//! The source `p₀` of a mixture path.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result, SeededRng};

/// Where discrete paths start at `t = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscreteSource {
    /// Every token is the mask `V` (one id past the vocabulary), absorbing:
    /// a token once unmasked stays.
    Mask,
    /// Uniform over the vocabulary `{0, …, V − 1}`.
    Uniform,
}

impl DiscreteSource {
    /// The ids a token can take: `V + 1` with the mask, `V` otherwise.
    pub fn states(&self, vocab: usize) -> usize {
        match self {
            DiscreteSource::Mask => vocab + 1,
            DiscreteSource::Uniform => vocab,
        }
    }

    /// `n` draws of `p₀` over a vocabulary of `vocab` tokens.
    pub fn sample(&self, n: usize, vocab: usize, rng: &mut SeededRng) -> Result<Vec<u32>> {
        check_vocab(vocab)?;
        Ok(match self {
            DiscreteSource::Mask => vec![vocab as u32; n],
            DiscreteSource::Uniform => {
                rng.uniform_vec(n, 0.0, 1.0).into_iter().map(|u| uniform_token(u, vocab)).collect()
            }
        })
    }

    /// `p₀(x)` for a token `x` over a vocabulary of `vocab`.
    pub fn probability(&self, x: u32, vocab: usize) -> f64 {
        match self {
            DiscreteSource::Mask => f64::from(x as usize == vocab),
            DiscreteSource::Uniform if (x as usize) < vocab => 1.0 / vocab as f64,
            DiscreteSource::Uniform => 0.0,
        }
    }
}

/// The token of a uniform draw `u ∈ [0, 1)`.
pub(crate) fn uniform_token(u: f64, vocab: usize) -> u32 {
    ((u * vocab as f64) as usize).min(vocab - 1) as u32
}

pub(crate) fn check_vocab(vocab: usize) -> Result<()> {
    if vocab == 0 || vocab >= u32::MAX as usize {
        return Err(Error::invalid("vocab", format!("needs 1 ≤ V < 2³², got {vocab}")));
    }
    Ok(())
}

impl fmt::Display for DiscreteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiscreteSource::Mask => "mask",
            DiscreteSource::Uniform => "uniform",
        })
    }
}

impl FromStr for DiscreteSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mask" | "absorbing" => Ok(DiscreteSource::Mask),
            "uniform" => Ok(DiscreteSource::Uniform),
            other => Err(Error::invalid(
                "source",
                format!("unknown discrete source `{other}`; valid: mask, uniform"),
            )),
        }
    }
}
