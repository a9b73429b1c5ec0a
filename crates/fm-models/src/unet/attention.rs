//! guided diffusion's `AttentionBlock` with the legacy head order
//! (`QKVAttentionLegacy`: heads first, then q/k/v).

use candle::Tensor;
use candle_nn::VarBuilder;

use super::layers::{group_norm, Conv1x1, GroupNorm};
use crate::ops::softmax_last_dim;
use crate::Result;

/// Self-attention over the spatial positions, with a residual connection.
///
/// Parameter names: `norm`, `qkv` (Conv1d `C → 3C`, kernel 1), `proj_out`
/// (Conv1d `C → C`, zero-initialised). The logits are scaled by `1/√c` (`c`
/// channels per head; guided diffusion scales `q` and `k` by `1/√√c` each) and
/// normalised by a softmax custom op with its own backward pass (candle's
/// `softmax_last_dim` passes no gradient). The matrix products read `q`, `k`,
/// `v` and the attention weights through strided views: the only copies are
/// the scaled `q` and the `(T, c)` result.
///
/// # Shapes
/// - `x`: `(b, C, h, w)` → `(b, C, h, w)`
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    norm: GroupNorm,
    qkv: Conv1x1,
    proj_out: Conv1x1,
    heads: usize,
}

impl AttentionBlock {
    /// Builds the block from `vb` with `heads` heads over `ch` channels.
    pub fn new(vb: &VarBuilder, ch: usize, heads: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: group_norm(&vb.pp("norm"), ch, groups)?,
            qkv: Conv1x1::new(&vb.pp("qkv"), ch, 3 * ch)?,
            proj_out: Conv1x1::new(&vb.pp("proj_out"), ch, ch)?,
            heads,
        })
    }

    /// Applies the block.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = h * w;
        let xf = x.reshape((b, c, t))?;
        let qkv = self.qkv.forward(&self.norm.forward(&xf)?)?; // (b, 3C, T)
        let ch = c / self.heads;
        let qkv = qkv.reshape((b * self.heads, 3 * ch, t))?;
        let q = (qkv.narrow(1, 0, ch)? * (1.0 / (ch as f64).sqrt()))?;
        let k = qkv.narrow(1, ch, ch)?;
        let v = qkv.narrow(1, 2 * ch, ch)?;
        // weight[b, t, s] = Σ_c q[b, c, t] k[b, c, s]
        let weight = softmax_last_dim(&q.t()?.matmul(&k)?)?;
        // aᵀ[b, t, c] = Σ_s weight[b, t, s] v[b, c, s]: the gradient reaching the
        // weights is then contiguous, as the softmax's backward wants it.
        let a = weight.matmul(&v.t()?)?.t()?.contiguous()?.reshape((b, c, t))?;
        let out = (xf + self.proj_out.forward(&a)?)?;
        Ok(out.reshape((b, c, h, w))?)
    }
}
