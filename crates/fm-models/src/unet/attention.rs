//! guided diffusion's `AttentionBlock` with the legacy head order
//! (`QKVAttentionLegacy`: heads first, then q/k/v).

use candle::Tensor;
use candle_nn::VarBuilder;

use super::layers::{group_norm, Conv1x1, Dual, GroupNorm};
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
        Ok(self.forward_dual(&Dual::plain(x.clone()))?.value)
    }

    /// `q` (scaled), `k`, `v`, each `(b·heads, c, T)`, from the `(b, 3C, T)` projection.
    fn split(&self, qkv: &Tensor, b: usize, c: usize, t: usize) -> Result<[Tensor; 3]> {
        let ch = c / self.heads;
        let qkv = qkv.reshape((b * self.heads, 3 * ch, t))?;
        let q = (qkv.narrow(1, 0, ch)? * (1.0 / (ch as f64).sqrt()))?;
        Ok([q, qkv.narrow(1, ch, ch)?, qkv.narrow(1, 2 * ch, ch)?])
    }

    /// The block on a [`Dual`] (forward mode). The softmax's tangent is
    /// `P ⊙ (dL − Σ_s P·dL)`, the products' the product rule.
    pub(crate) fn forward_dual(&self, x: &Dual) -> Result<Dual> {
        let (b, c, h, w) = x.value.dims4()?;
        let t = h * w;
        let xf = x.map(|z| z.reshape((b, c, t)))?;
        let qkv = self.qkv.forward_dual(&self.norm.forward_dual(&xf, false)?)?; // (b, 3C, T)
        let [q, k, v] = self.split(&qkv.value, b, c, t)?;
        // weight[b, t, s] = Σ_c q[b, c, t] k[b, c, s]
        let weight = softmax_last_dim(&q.t()?.matmul(&k)?)?;
        // aᵀ[b, t, c] = Σ_s weight[b, t, s] v[b, c, s]: the gradient reaching the
        // weights is then contiguous, as the softmax's backward wants it.
        let a = weight.matmul(&v.t()?)?.t()?.contiguous()?.reshape((b, c, t))?;
        let value = (&xf.value + self.proj_out.forward(&a)?)?.reshape((b, c, h, w))?;
        let Some(dqkv) = &qkv.tangent else { return Ok(Dual::plain(value)) };
        let [dq, dk, dv] = self.split(dqkv, b, c, t)?;
        let (q, k, v, p) = (q.detach(), k.detach(), v.detach(), weight.detach());
        let dl = (dq.t()?.matmul(&k)? + q.t()?.matmul(&dk)?)?;
        let dp = (&p * dl.broadcast_sub(&(&p * &dl)?.sum_keepdim(2)?)?)?;
        let da = (dp.matmul(&v.t()?)? + p.matmul(&dv.t()?)?)?.t()?.contiguous()?.reshape((b, c, t))?;
        let mut tangent = self.proj_out.tangent(&da)?;
        if let Some(dx) = &xf.tangent {
            tangent = (tangent + dx)?;
        }
        Ok(Dual { value, tangent: Some(tangent.reshape((b, c, h, w))?) })
    }
}
