//! Down- and upsampling between the U-Net's levels.

use candle::{Module, Tensor};
use candle_nn::VarBuilder;

use super::layers::{conv2d, Conv, Dual};
use crate::Result;

/// A 3×3 convolution with stride 2 (`op`): `h → ⌈h / 2⌉`.
#[derive(Debug, Clone)]
pub struct Downsample {
    op: Conv,
}

impl Downsample {
    /// Builds the layer from `vb`.
    pub fn new(vb: &VarBuilder, ch: usize) -> Result<Self> {
        Ok(Self { op: conv2d(&vb.pp("op"), ch, ch, 3, 2)? })
    }

    /// # Shapes
    /// - `(b, C, h, w)` → `(b, C, ⌈h/2⌉, ⌈w/2⌉)`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.op.forward(x)?)
    }

    /// The layer on a [`Dual`] (forward mode).
    pub(crate) fn forward_dual(&self, x: &Dual) -> Result<Dual> {
        self.op.forward_dual(x)
    }
}

/// Nearest-neighbour ×2, cropped to the skip connection's size (odd sizes such
/// as 7 → 4 → 7), then a 3×3 convolution (`conv`).
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv,
}

impl Upsample {
    /// Builds the layer from `vb`.
    pub fn new(vb: &VarBuilder, ch: usize) -> Result<Self> {
        Ok(Self { conv: conv2d(&vb.pp("conv"), ch, ch, 3, 1)? })
    }

    /// # Shapes
    /// - `(b, C, h, w)` with target `(th, tw)`, `th ∈ {2h − 1, 2h}` → `(b, C, th, tw)`
    pub fn forward(&self, x: &Tensor, target: (usize, usize)) -> Result<Tensor> {
        Ok(self.conv.forward(&upsample(x, target)?)?)
    }

    /// The layer on a [`Dual`] (forward mode).
    pub(crate) fn forward_dual(&self, x: &Dual, target: (usize, usize)) -> Result<Dual> {
        self.conv.forward_dual(&x.map(|t| upsample(t, target))?)
    }
}

/// Nearest-neighbour ×2, cropped to `target`.
fn upsample(x: &Tensor, target: (usize, usize)) -> candle::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let mut up = x.upsample_nearest2d(2 * h, 2 * w)?;
    if target.0 < 2 * h {
        up = up.narrow(2, 0, target.0)?;
    }
    if target.1 < 2 * w {
        up = up.narrow(3, 0, target.1)?;
    }
    Ok(up)
}
