//! guided diffusion's `ResBlock`: GroupNorm, SiLU, conv, plus the time embedding,
//! then GroupNorm, SiLU, dropout, a zero-initialised conv, and a skip connection.

use candle::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::layers::{
    conv2d, dropout, group_norm, linear, linear_dual, norm_silu, silu, silu_dual, Conv, DropoutRng, Dual,
    GroupNorm,
};
use crate::{Error, Result};

/// A residual block conditioned on the time embedding.
///
/// Parameter names: `in_layers.{0,2}`, `emb_layers.1`, `out_layers.{0,3}`,
/// `skip_connection` (a 1×1 conv, only when the channel count changes).
///
/// # Shapes
/// - `x`: `(b, cin, h, w)`, `emb`: `(b, 4C)` → `(b, cout, h, w)`
#[derive(Debug, Clone)]
pub struct ResBlock {
    in_norm: GroupNorm,
    in_conv: Conv,
    emb: Linear,
    out_norm: GroupNorm,
    out_conv: Conv,
    skip: Option<Conv>,
    dropout: f64,
}

impl ResBlock {
    /// Builds the block from `vb` (prefix `…input_blocks.N.0`).
    pub fn new(
        vb: &VarBuilder,
        cin: usize,
        cout: usize,
        emb_dim: usize,
        groups: usize,
        dropout: f64,
    ) -> Result<Self> {
        Ok(Self {
            in_norm: group_norm(&vb.pp("in_layers.0"), cin, groups)?,
            in_conv: conv2d(&vb.pp("in_layers.2"), cin, cout, 3, 1)?,
            emb: linear(&vb.pp("emb_layers.1"), emb_dim, cout)?,
            out_norm: group_norm(&vb.pp("out_layers.0"), cout, groups)?,
            out_conv: conv2d(&vb.pp("out_layers.3"), cout, cout, 3, 1)?,
            skip: if cin != cout { Some(conv2d(&vb.pp("skip_connection"), cin, cout, 1, 1)?) } else { None },
            dropout,
        })
    }

    /// Applies the block; `rng` draws the dropout masks while training.
    pub fn forward(&self, x: &Tensor, emb: &Tensor, rng: DropoutRng) -> Result<Tensor> {
        let h = self.in_conv.forward(&norm_silu(&self.in_norm, x)?)?;
        let e = self.emb.forward(&silu(emb)?)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&e)?;
        let h = dropout(&norm_silu(&self.out_norm, &h)?, self.dropout, rng)?;
        let h = self.out_conv.forward(&h)?;
        let skip = match &self.skip {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }

    /// The block on a [`Dual`] input and embedding (forward mode); dropout
    /// only without a tangent (the tangent of a random mask is not defined).
    pub(crate) fn forward_dual(&self, x: &Dual, emb: &Dual, rng: DropoutRng) -> Result<Dual> {
        if x.tangent.is_none() && emb.tangent.is_none() {
            return Ok(Dual::plain(self.forward(&x.value, &emb.value, rng)?));
        }
        if rng.is_some() && self.dropout > 0.0 {
            return Err(Error::Config {
                field: "dropout",
                reason: "a forward-mode (MeanFlow) pass runs without dropout; set it to 0".into(),
            });
        }
        let h = self.in_conv.forward_dual(&self.in_norm.forward_dual(x, true)?)?;
        let e = linear_dual(&self.emb, &silu_dual(emb)?)?.map(|t| t.unsqueeze(2)?.unsqueeze(3))?;
        let h = h.broadcast_add(&e)?;
        let h = self.out_conv.forward_dual(&self.out_norm.forward_dual(&h, true)?)?;
        let skip = match &self.skip {
            Some(c) => c.forward_dual(x)?,
            None => x.clone(),
        };
        skip.broadcast_add(&h)
    }
}
