//! Small building blocks of the U-Net: convolutions, GroupNorm, SiLU, seeded dropout.

use std::cell::RefCell;

use candle::{Module, Tensor};
use candle_nn::{GroupNorm, Linear, VarBuilder};
use fm_core::SeededRng;

use crate::Result;

/// PyTorch's GroupNorm `eps`.
pub(crate) const NORM_EPS: f64 = 1e-5;

/// The random stream of dropout masks during training; `None` evaluates (no dropout).
pub type DropoutRng<'a> = Option<&'a RefCell<SeededRng>>;

pub(crate) fn conv2d(vb: &VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv> {
    let w = vb.get((cout, cin, k, k), "weight")?;
    let b = vb.get(cout, "bias")?;
    Ok(Conv { weight: w.reshape((cout, cin * k * k))?, bias: b.reshape((1, cout, 1))?, k, stride })
}

/// A 2-D convolution (`weight (cout, cin, k, k)`, padding `k / 2`) computed as
/// im2col by tensor ops and one matrix product.
///
/// candle's CPU `conv2d` backward goes through a direct `conv_transpose2d`
/// loop, which made U-Net training steps several times slower; here the
/// backward pass is matrix products and slice bookkeeping. Stride 2 takes
/// every other row and column of the stride-1 output (`⌈h/2⌉`, as PyTorch's
/// padding-1 stride-2 convolution).
///
/// # Shapes
/// - `(b, cin, h, w)` → `(b, cout, ⌈h/s⌉, ⌈w/s⌉)`
#[derive(Debug, Clone)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    k: usize,
    stride: usize,
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let cout = self.weight.dim(0)?;
        let cols = if self.k == 1 {
            x.reshape((b, c, h * w))?
        } else {
            let p = self.k / 2;
            let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
            let mut slices = Vec::with_capacity(self.k * self.k);
            for ky in 0..self.k {
                for kx in 0..self.k {
                    slices.push(xp.narrow(2, ky, h)?.narrow(3, kx, w)?);
                }
            }
            Tensor::stack(&slices, 2)?.reshape((b, c * self.k * self.k, h * w))?
        };
        let out = self.weight.broadcast_matmul(&cols)?.broadcast_add(&self.bias)?.reshape((b, cout, h, w))?;
        if self.stride == 1 {
            return Ok(out);
        }
        let s = self.stride as u32;
        let rows: Vec<u32> = (0..h as u32).step_by(s as usize).collect();
        let cols_idx: Vec<u32> = (0..w as u32).step_by(s as usize).collect();
        let (nr, nc) = (rows.len(), cols_idx.len());
        let rows = Tensor::from_vec(rows, nr, x.device())?;
        let cols_idx = Tensor::from_vec(cols_idx, nc, x.device())?;
        out.index_select(&rows, 2)?.index_select(&cols_idx, 3)
    }
}

pub(crate) fn group_norm(vb: &VarBuilder, ch: usize, groups: usize) -> Result<GroupNorm> {
    let w = vb.get(ch, "weight")?;
    let b = vb.get(ch, "bias")?;
    Ok(GroupNorm::new(w, b, ch, groups, NORM_EPS)?)
}

pub(crate) fn linear(vb: &VarBuilder, cin: usize, cout: usize) -> Result<Linear> {
    let w = vb.get((cout, cin), "weight")?;
    let b = vb.get(cout, "bias")?;
    Ok(Linear::new(w, Some(b)))
}

/// A kernel-1 `Conv1d` (weight `(cout, cin, 1)`) applied as a matrix product.
///
/// # Shapes
/// - input `(b, cin, T)` → `(b, cout, T)`
#[derive(Debug, Clone)]
pub(crate) struct Conv1x1 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1x1 {
    pub(crate) fn new(vb: &VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let w = vb.get((cout, cin, 1), "weight")?;
        let b = vb.get(cout, "bias")?;
        Ok(Self { weight: w.squeeze(2)?, bias: b.reshape((1, cout, 1))? })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.weight.broadcast_matmul(x)?.broadcast_add(&self.bias)?)
    }
}

/// SiLU, `x · σ(x)`.
pub(crate) fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::silu(x)?)
}

/// GroupNorm then SiLU.
pub(crate) fn norm_silu(norm: &GroupNorm, x: &Tensor) -> Result<Tensor> {
    silu(&norm.forward(x)?)
}

/// Inverted dropout with a mask drawn from `rng` (candle's own dropout draws
/// from the unseedable CPU generator): keeps each value with probability
/// `1 − p` and scales it by `1 / (1 − p)`. Identity when `rng` is `None` or `p = 0`.
pub(crate) fn dropout(x: &Tensor, p: f64, rng: DropoutRng) -> Result<Tensor> {
    let Some(rng) = rng.filter(|_| p > 0.0) else { return Ok(x.clone()) };
    let n = x.elem_count();
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = {
        let mut r = rng.borrow_mut();
        r.uniform_vec(n, 0.0, 1.0).into_iter().map(|u| if u < p { 0.0 } else { keep as f32 }).collect()
    };
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}
