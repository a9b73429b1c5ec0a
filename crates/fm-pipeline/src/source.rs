//! The source distribution `p₀` (`t = 0`) of a run (`--source`), used again
//! when sampling through the run record.

use candle::{DType, Device, Tensor};
use fm_core::discrete::DiscreteSource;
use fm_core::SeededRng;
use fm_data::Toy2d;

use crate::error::bail;
use crate::Result;

/// Where the flow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// `N(0, I)` in model units (the default; the only one with a known
    /// log-density for `fm likelihood`).
    #[default]
    Normal,
    /// torchcfm's 8 Gaussians (radius 5, variance 0.1), 2-D only.
    EightGaussians,
    /// The source of a discrete model over `vocab` token values: every token
    /// masked (id `vocab`) or uniform; draws are token ids as `f32`.
    Tokens {
        /// Mask or uniform.
        source: DiscreteSource,
        /// The vocabulary `V`.
        vocab: usize,
    },
}

impl Source {
    /// `normal` (or `gaussian`) and `8gaussians`; `None` is `normal`.
    pub fn parse(s: Option<&str>) -> Result<Self> {
        Ok(match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("normal" | "gaussian" | "n01") => Source::Normal,
            Some("8gaussians" | "eight-gaussians") => Source::EightGaussians,
            Some(other) => bail!("--source: unknown source `{other}`; valid: normal, 8gaussians"),
        })
    }

    /// The source of a discrete model: `mask` (the default) or `uniform` over `vocab` values.
    pub fn parse_tokens(s: Option<&str>, vocab: usize) -> Result<Self> {
        let source = match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("mask") => DiscreteSource::Mask,
            Some("uniform") => DiscreteSource::Uniform,
            Some(other) => {
                bail!("--source: unknown source `{other}` of a discrete model; valid: mask, uniform")
            }
        };
        Ok(Source::Tokens { source, vocab })
    }

    /// The name recorded in the checkpoint (`None` for the default).
    pub fn record_name(&self) -> Option<String> {
        match self {
            Source::Normal => None,
            Source::EightGaussians => Some("8gaussians".into()),
            Source::Tokens { source, .. } => Some(source.to_string()),
        }
    }

    /// Checks that the source fits `dim`-dimensional data.
    pub fn check_dim(&self, dim: usize) -> Result<()> {
        if *self == Source::EightGaussians && dim != 2 {
            bail!("--source 8gaussians is 2-D, but the data have {dim} dimensions");
        }
        Ok(())
    }

    /// `n` draws, `(n, dim)` f32, from `rng`.
    pub fn sample(&self, n: usize, dim: usize, rng: &mut SeededRng, device: &Device) -> Result<Tensor> {
        self.check_dim(dim)?;
        Ok(match self {
            Source::Normal => rng.normal((n, dim), DType::F32, device)?,
            Source::EightGaussians => Toy2d::EightGaussians.sample_tensor(n, rng, device)?,
            Source::Tokens { source, vocab } => {
                let ids = source.sample(n * dim, *vocab, rng)?;
                Tensor::from_vec(ids.into_iter().map(|i| i as f32).collect::<Vec<_>>(), (n, dim), device)?
            }
        })
    }

    /// Whether this is a discrete model's source.
    pub fn is_tokens(&self) -> bool {
        matches!(self, Source::Tokens { .. })
    }

    /// Refuses a non-normal source where `what` needs the `N(0, I)` density.
    pub fn require_normal(&self, what: &str) -> Result<()> {
        match self {
            Source::Normal => Ok(()),
            Source::EightGaussians => {
                bail!("{what} needs the N(0, I) source; this checkpoint was trained from --source 8gaussians")
            }
            Source::Tokens { .. } => bail!("{what} needs a continuous model; this checkpoint is discrete"),
        }
    }
}
