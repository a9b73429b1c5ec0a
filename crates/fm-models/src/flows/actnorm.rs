//! ActNorm: a learnable per-dimension affine map (Kingma & Dhariwal, arXiv 1807.03039).

use candle::Tensor;
use candle_nn::VarBuilder;

use super::{check_input, FlowLayer};
use crate::{Error, Result};

/// `y = x ⊙ e^{log_scale} + bias`, `log|det J| = Σ_j log_scale_j` (the same for every row).
///
/// Initialised at the identity (`log_scale = bias = 0`); there is no
/// data-dependent initialisation. Both directions are exact.
///
/// # Shapes
/// - `log_scale`, `bias`: `(d,)`
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use fm_models::flows::{ActNorm, FlowLayer};
/// # fn main() -> anyhow::Result<()> {
/// let dev = Device::Cpu;
/// let layer = ActNorm::from_tensors(Tensor::new(&[0.0f64, 1.0], &dev)?, Tensor::new(&[1.0f64, 0.0], &dev)?)?;
/// let (y, ld) = layer.forward(&Tensor::new(&[[1.0f64, 1.0]], &dev)?)?;
/// assert_eq!(y.to_vec2::<f64>()?, vec![vec![2.0, 1f64.exp()]]);
/// assert_eq!(ld.to_vec1::<f64>()?, vec![1.0]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ActNorm {
    log_scale: Tensor,
    bias: Tensor,
    dim: usize,
}

impl ActNorm {
    /// A layer of dimension `dim` with `log_scale`, `bias` from `vb`.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Config { field: "dim", reason: "must be at least 1".into() });
        }
        Ok(Self { log_scale: vb.get(dim, "log_scale")?, bias: vb.get(dim, "bias")?, dim })
    }

    /// A layer from explicit `log_scale` `(d,)` and `bias` `(d,)`.
    pub fn from_tensors(log_scale: Tensor, bias: Tensor) -> Result<Self> {
        let dim = log_scale.dims1()?;
        if dim == 0 || bias.dims() != [dim] {
            return Err(Error::Shape(format!(
                "ActNorm needs log_scale (d,) and bias (d,) with d ≥ 1, got {:?} and {:?}",
                log_scale.dims(),
                bias.dims()
            )));
        }
        Ok(Self { log_scale, bias, dim })
    }

    /// `Σ_j log_scale_j` repeated for `n` rows: `(n,)`.
    fn log_det(&self, n: usize) -> Result<Tensor> {
        Ok(self.log_scale.sum_keepdim(0)?.broadcast_as(n)?.contiguous()?)
    }
}

impl FlowLayer for ActNorm {
    fn dim(&self) -> usize {
        self.dim
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = check_input(x, self.dim, "ActNorm")?;
        let y =
            x.broadcast_mul(&self.log_scale.exp()?.unsqueeze(0)?)?.broadcast_add(&self.bias.unsqueeze(0)?)?;
        Ok((y, self.log_det(n)?))
    }

    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = check_input(y, self.dim, "ActNorm")?;
        let x = y
            .broadcast_sub(&self.bias.unsqueeze(0)?)?
            .broadcast_mul(&self.log_scale.neg()?.exp()?.unsqueeze(0)?)?;
        Ok((x, self.log_det(n)?.neg()?))
    }

    fn has_analytic_inverse(&self) -> bool {
        true
    }
}
