//! The logit pre-processing of RealNVP (Dinh et al. 2017, §4.1) as a
//! parameter-free flow layer at the data end of a flow.

use candle::Tensor;

use super::{check_input, FlowLayer};
use crate::{Error, Result};

/// Maps the logit space `ℝ^d` to image data scaled to `[−1, 1]`.
///
/// Density direction (data → latent): `y = (x + 1)/2`, `s = γ + (1 − 2γ) y`,
/// `z = logit(s)`, so `log|det ∂z/∂x| = Σ_j [log(1 − 2γ) − log 2 − log s_j − log(1 − s_j)]`.
/// Sampling direction: `x = 2 (σ(z) − γ)/(1 − 2γ) − 1`. `γ > 0` keeps the logit
/// finite for pixels at the ends of the range; RealNVP uses `γ = 0.05`.
///
/// Including this layer in the flow puts its Jacobian in every log-density, so
/// likelihoods (and bits/dim) stay those of the `[−1, 1]` data.
///
/// # Shapes
/// - `forward(z)`: `(b, d)` → `(x (b, d), log|det ∂x/∂z| (b,))`
/// - `inverse(x)`: `(b, d)` → `(z (b, d), log|det ∂z/∂x| (b,))`
///
/// ```
/// use candle::{Device, Tensor};
/// use fm_models::flows::{FlowLayer, LogitLayer};
/// # fn main() -> anyhow::Result<()> {
/// let layer = LogitLayer::new(2, 0.05)?;
/// let x = Tensor::new(&[[-0.5f64, 0.25]], &Device::Cpu)?;
/// let (z, ld_inv) = layer.inverse(&x)?;
/// let (back, ld_fwd) = layer.forward(&z)?;
/// assert!((back - &x)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// assert!((ld_inv + ld_fwd)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LogitLayer {
    dim: usize,
    gamma: f64,
}

impl LogitLayer {
    /// A layer on `ℝ^dim` with boundary margin `gamma` in `[0, ½)`.
    pub fn new(dim: usize, gamma: f64) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Config { field: "dim", reason: "must be at least 1".into() });
        }
        if !(0.0..0.5).contains(&gamma) {
            return Err(Error::Config {
                field: "logit",
                reason: format!("γ must be in [0, 0.5), got {gamma}"),
            });
        }
        Ok(Self { dim, gamma })
    }

    /// The margin `γ`.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// `Σ_j (log 2 − log(1 − 2γ))`: the constant part of `log|det ∂x/∂z|` per row.
    fn constant(&self) -> f64 {
        self.dim as f64 * (std::f64::consts::LN_2 - (1.0 - 2.0 * self.gamma).ln())
    }
}

/// `log(1 + e^x)`, stable for large `|x|`.
fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

impl FlowLayer for LogitLayer {
    fn dim(&self) -> usize {
        self.dim
    }

    fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(z, self.dim, "LogitLayer::forward")?;
        let g = self.gamma;
        let s = candle_nn::ops::sigmoid(z)?;
        let x = ((s - g)? * (2.0 / (1.0 - 2.0 * g)))? - 1.0;
        // log σ(z) + log(1 − σ(z)) = −softplus(−z) − softplus(z).
        let log_ds = (softplus(&z.neg()?)? + softplus(z)?)?.neg()?;
        let ld = (log_ds.sum(1)? + self.constant())?;
        Ok((x?, ld))
    }

    fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(x, self.dim, "LogitLayer::inverse")?;
        let g = self.gamma;
        let s = ((((x + 1.0)? * 0.5)? * (1.0 - 2.0 * g))? + g)?;
        let log_s = s.log()?;
        let log_1ms = s.neg()?.affine(1.0, 1.0)?.log()?;
        let z = (&log_s - &log_1ms)?;
        let ld = ((log_s + log_1ms)?.sum(1)?.neg()? - self.constant())?;
        Ok((z, ld))
    }

    fn has_analytic_inverse(&self) -> bool {
        true
    }
}
