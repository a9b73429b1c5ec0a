//! The settings of the discrete families (`--model discrete`, `discrete-unet`):
//! the tokens, the source, the loss.

use std::fmt;

use fm_core::discrete::DiscreteSource;
use fm_data::tokens::TokenGrid;

use crate::error::bail;
use crate::{Result, RunConfig, Source};

/// What a discrete model is trained to minimise (`--objective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiscreteLoss {
    /// `−log p_{1|t}(x₁ⁱ | x_t)` over every token (`cross-entropy`, the default).
    #[default]
    CrossEntropy,
    /// The generalized KL of a mixture path (`generalized-kl`): its time
    /// integral is the negative ELBO, so training minimises the bound itself.
    GeneralizedKl,
}

impl DiscreteLoss {
    /// `cross-entropy` (or `ce`, the default) and `generalized-kl` (or `kl`).
    pub fn parse(s: Option<&str>) -> Result<Self> {
        Ok(match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("cross-entropy" | "ce") => DiscreteLoss::CrossEntropy,
            Some("generalized-kl" | "kl") => DiscreteLoss::GeneralizedKl,
            Some(other) => bail!(
                "--objective: unknown objective `{other}` of a discrete model; valid: cross-entropy, generalized-kl"
            ),
        })
    }
}

impl fmt::Display for DiscreteLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiscreteLoss::CrossEntropy => "cross-entropy",
            DiscreteLoss::GeneralizedKl => "generalized-kl",
        })
    }
}

/// How a discrete model is trained.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteSettings {
    /// Token values per coordinate or grey levels (`--bins`; `None`: the data's default).
    pub bins: Option<usize>,
    /// The exact grid of a resumed run.
    pub grid: Option<TokenGrid>,
    /// Mask or uniform.
    pub source: DiscreteSource,
    /// Cross-entropy or generalized KL.
    pub loss: DiscreteLoss,
    /// Class-conditional (the MLP; the U-Net's is in its spec).
    pub class_cond: bool,
}

impl DiscreteSettings {
    /// The discrete settings of `config`.
    pub fn of_config(c: &RunConfig) -> Result<Self> {
        let Source::Tokens { source, .. } = Source::parse_tokens(c.source.as_deref(), 2)? else {
            bail!("--source: not a discrete source");
        };
        if c.bins.is_some_and(|b| b < 2) {
            bail!("--bins must be at least 2, got {}", c.bins.unwrap_or(0));
        }
        Ok(Self {
            bins: c.bins,
            grid: None,
            source,
            loss: DiscreteLoss::parse(c.objective.as_deref())?,
            class_cond: c.class_cond.unwrap_or(false),
        })
    }
}
