//! [`VelocityNet`]: the velocity network of a flow-matching checkpoint,
//! whichever architecture its [`ModelConfig`] names.

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fm_core::jacobian::JvpField;
use fm_core::{DivergenceField, SeededRng, VelocityField};

use crate::unet::{DropoutRng, UNet};
use crate::{Error, ModelConfig, Result, VelocityMlp};

/// An MLP or a U-Net velocity field.
///
/// # Shapes
/// - MLP: `x` `(b, d)`; U-Net: `x` `(b, c, h, w)` or `(b, c·h·w)`; `t` `(b,)` → the shape of `x`
#[derive(Debug, Clone)]
pub enum VelocityNet {
    /// A [`VelocityMlp`].
    Mlp(VelocityMlp),
    /// A [`UNet`].
    UNet(Box<UNet>),
}

impl VelocityNet {
    /// Builds the network a checkpoint's configuration describes from `vb`.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        match config {
            ModelConfig::Mlp(c) => Ok(Self::Mlp(VelocityMlp::new(c, vb)?)),
            ModelConfig::UNet(c) => Ok(Self::UNet(Box::new(UNet::new(c, vb)?))),
            other => Err(Error::Config {
                field: "kind",
                reason: format!("{other:?} is not a velocity network (a normalizing flow?)"),
            }),
        }
    }

    /// A freshly initialised network and its [`VarMap`] (see [`VelocityMlp::init`], [`UNet::init`]).
    pub fn init(
        config: &ModelConfig,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        match config {
            ModelConfig::Mlp(c) => VelocityMlp::init(c, rng, dtype, device).map(|(m, v)| (Self::Mlp(m), v)),
            ModelConfig::UNet(c) => {
                UNet::init(c, rng, dtype, device).map(|(m, v)| (Self::UNet(Box::new(m)), v))
            }
            other => Self::new(other, VarBuilder::zeros(dtype, device)).map(|m| (m, VarMap::new())),
        }
    }

    /// The U-Net, if this is one.
    pub fn as_unet(&self) -> Option<&UNet> {
        match self {
            Self::UNet(u) => Some(u),
            Self::Mlp(_) => None,
        }
    }

    /// The velocity with class labels and (training) dropout; the MLP accepts neither.
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        rng: DropoutRng,
    ) -> Result<Tensor> {
        match self {
            Self::UNet(u) => u.forward(x, t, labels, rng),
            Self::Mlp(m) if labels.is_none() => m.velocity(x, t).map_err(Error::Core),
            Self::Mlp(_) => {
                Err(Error::Config { field: "num_classes", reason: "the MLP is not class-conditional".into() })
            }
        }
    }
}

impl VelocityField for VelocityNet {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        match self {
            Self::Mlp(m) => m.velocity(x, t),
            Self::UNet(u) => u.velocity(x, t),
        }
    }
}

impl DivergenceField for VelocityNet {
    /// The MLP's exact forward-mode divergence; a U-Net has none (use Hutchinson's estimator).
    fn velocity_and_divergence(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<(Tensor, Tensor)> {
        match self {
            Self::Mlp(m) => DivergenceField::velocity_and_divergence(m, x, t),
            Self::UNet(_) => Err(fm_core::Error::invalid(
                "divergence",
                "the U-Net has no exact divergence here; use the Hutchinson estimator (--hutchinson K)"
                    .to_string(),
            )),
        }
    }
}

impl JvpField for VelocityNet {
    /// The MLP's forward-mode Jacobian–vector products; a U-Net has none
    /// (its likelihood uses autograd).
    fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> fm_core::Result<(Tensor, Tensor)> {
        match self {
            Self::Mlp(m) => JvpField::velocity_and_jvp(m, x, t, v),
            Self::UNet(_) => Err(fm_core::Error::invalid(
                "jvp",
                "the U-Net has no forward-mode Jacobian–vector product here".to_string(),
            )),
        }
    }
}
