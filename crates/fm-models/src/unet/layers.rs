//! Small building blocks of the U-Net: convolutions, GroupNorm, SiLU, seeded dropout.
//! The custom ops they run are in [`crate::ops`].
//!
//! Each block also has a forward-mode pass on a [`Dual`] (a value and its
//! tangent along one direction of the input), exact, for MeanFlow's
//! Jacobian–vector product: the value goes through the same custom ops as
//! `forward` (so it is differentiable as usual), the tangent through candle's
//! tensor ops on detached tensors (no autograd graph: MeanFlow's target is a
//! stop-gradient). Linear maps carry the tangent without their bias; GroupNorm
//! by `γ·(dx − mean dx − x̂·mean(x̂·dx))/σ` per group; SiLU by
//! `σ(y)(1 + y(1 − σ(y)))·dy`.

use std::cell::RefCell;

use candle::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use fm_core::SeededRng;

use crate::ops::{channel_linear, im2col, Patches};
use crate::Result;

/// PyTorch's GroupNorm `eps`.
pub(crate) const NORM_EPS: f64 = 1e-5;

/// The random stream of dropout masks during training; `None` evaluates (no dropout).
pub type DropoutRng<'a> = Option<&'a RefCell<SeededRng>>;

/// A value and, in a forward-mode pass, its tangent (detached, see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Dual {
    pub value: Tensor,
    pub tangent: Option<Tensor>,
}

impl Dual {
    /// A value without a tangent (the plain forward pass).
    pub fn plain(value: Tensor) -> Self {
        Self { value, tangent: None }
    }

    /// A value and its tangent (detached here).
    pub fn new(value: Tensor, tangent: Option<&Tensor>) -> Self {
        Self { value, tangent: tangent.map(Tensor::detach) }
    }

    /// The same linear map `f` (a reshape, a crop, an upsampling…) applied to the value and the tangent.
    pub fn map(&self, f: impl Fn(&Tensor) -> candle::Result<Tensor>) -> Result<Self> {
        Ok(Self { value: f(&self.value)?, tangent: self.tangent.as_ref().map(&f).transpose()? })
    }

    /// `self + other` (broadcast), value and tangent; a missing tangent is zero.
    pub fn broadcast_add(&self, other: &Self) -> Result<Self> {
        let tangent = match (&self.tangent, &other.tangent) {
            (Some(a), Some(b)) => Some(a.broadcast_add(b)?),
            (Some(a), None) => Some(a.broadcast_add(&other.value.zeros_like()?)?),
            (None, Some(b)) => Some(self.value.zeros_like()?.broadcast_add(b)?),
            (None, None) => None,
        };
        Ok(Self { value: self.value.broadcast_add(&other.value)?, tangent })
    }

    /// The concatenation along `dim` of value and tangent.
    pub fn cat(parts: &[&Self], dim: usize) -> Result<Self> {
        let values: Vec<&Tensor> = parts.iter().map(|p| &p.value).collect();
        let tangent = if parts.iter().any(|p| p.tangent.is_some()) {
            let t = parts
                .iter()
                .map(|p| match &p.tangent {
                    Some(t) => Ok(t.clone()),
                    None => p.value.zeros_like(),
                })
                .collect::<candle::Result<Vec<_>>>()?;
            Some(Tensor::cat(&t, dim)?)
        } else {
            None
        };
        Ok(Self { value: Tensor::cat(&values, dim)?, tangent })
    }
}

/// The derivative of SiLU, `σ(y)(1 + y(1 − σ(y)))`.
fn silu_derivative(y: &Tensor) -> candle::Result<Tensor> {
    let sig = (y.neg()?.exp()? + 1.0)?.recip()?;
    let one_minus = (1.0 - &sig)?;
    sig * ((y * one_minus)? + 1.0)?
}

/// SiLU on a [`Dual`].
pub(crate) fn silu_dual(x: &Dual) -> Result<Dual> {
    let value = silu(&x.value)?;
    let tangent = match &x.tangent {
        Some(dx) => Some((silu_derivative(&x.value.detach())? * dx)?),
        None => None,
    };
    Ok(Dual { value, tangent })
}

/// A [`Linear`] layer on a [`Dual`] (`(b, in)` rows): the tangent without the bias.
pub(crate) fn linear_dual(layer: &Linear, x: &Dual) -> Result<Dual> {
    let value = layer.forward(&x.value)?;
    let tangent = match &x.tangent {
        Some(dx) => Some(dx.matmul(&layer.weight().detach().t()?)?),
        None => None,
    };
    Ok(Dual { value, tangent })
}

pub(crate) fn conv2d(vb: &VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv> {
    let w = vb.get((cout, cin, k, k), "weight")?;
    let b = vb.get(cout, "bias")?;
    Ok(Conv { weight: w.reshape((cout, cin * k * k))?, bias: b, k, stride })
}

/// A 2-D convolution (`weight (cout, cin, k, k)`, padding `k / 2`) computed as
/// [`im2col`] (one custom op, at the real stride) and one matrix product with
/// the bias ([`channel_linear`], one more).
///
/// candle's CPU `conv2d` backward goes through a direct `conv_transpose2d`
/// loop, which made U-Net training steps several times slower; here the
/// backward pass is matrix products and one col2im pass. Stride 2 gives
/// `⌈h/2⌉` (PyTorch's padding-1 stride-2 convolution).
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

impl Conv {
    /// The convolution on a [`Dual`]; the tangent without the bias.
    pub(crate) fn forward_dual(&self, x: &Dual) -> Result<Dual> {
        let value = self.forward(&x.value)?;
        let tangent = match &x.tangent {
            Some(dx) => {
                Some(self.apply_with(dx, &self.weight.detach(), &self.bias.detach().zeros_like()?)?)
            }
            None => None,
        };
        Ok(Dual { value, tangent })
    }

    fn apply_with(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let cout = weight.dim(0)?;
        let (ho, wo) = Patches { c, h, w, k: self.k, stride: self.stride }.out_hw();
        let cols = if self.k == 1 && self.stride == 1 {
            x.reshape((b, c, h * w))?
        } else {
            im2col(x, self.k, self.stride)?
        };
        channel_linear(&cols, weight, bias)?.reshape((b, cout, ho, wo))
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.apply_with(x, &self.weight, &self.bias)
    }
}

pub(crate) fn group_norm(vb: &VarBuilder, ch: usize, groups: usize) -> Result<GroupNorm> {
    GroupNorm::new(vb, ch, groups, NORM_EPS)
}

/// A GroupNorm layer (`weight` γ and `bias` β of `(C,)`, PyTorch's `eps`),
/// as one custom op ([`crate::ops::group_norm`]), with the SiLU after it
/// fused in or not.
///
/// # Shapes
/// - `(b, C, …)` → `(b, C, …)`
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Builds the layer from `vb` (`weight`, `bias`) over `ch` channels in `groups` groups.
    pub(crate) fn new(vb: &VarBuilder, ch: usize, groups: usize, eps: f64) -> Result<Self> {
        let weight = vb.get(ch, "weight")?;
        let bias = vb.get(ch, "bias")?;
        // candle_nn's check (and error) that the groups divide the channels.
        candle_nn::GroupNorm::new(weight.clone(), bias.clone(), ch, groups, eps)?;
        Ok(Self { weight, bias, groups, eps })
    }

    /// GroupNorm then SiLU, fused.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    /// GroupNorm (then SiLU when `silu`) on a [`Dual`].
    pub(crate) fn forward_dual(&self, x: &Dual, silu: bool) -> Result<Dual> {
        let value = self.apply(&x.value, silu)?;
        let Some(dx) = &x.tangent else { return Ok(Dual::plain(value)) };
        let dims = x.value.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let grouped = |t: &Tensor| t.reshape((b, self.groups, ()));
        let (xg, dg) = (grouped(&x.value.detach())?, grouped(dx)?);
        let centred = xg.broadcast_sub(&xg.mean_keepdim(2)?)?;
        let rstd = (centred.sqr()?.mean_keepdim(2)? + self.eps)?.sqrt()?.recip()?;
        let xhat = centred.broadcast_mul(&rstd)?;
        let dxhat = (dg.broadcast_sub(&dg.mean_keepdim(2)?)?
            - xhat.broadcast_mul(&(&xhat * &dg)?.mean_keepdim(2)?)?)?
        .broadcast_mul(&rstd)?;
        let mut channel = vec![1, c];
        channel.resize(dims.len(), 1);
        let gamma = self.weight.detach().reshape(channel.as_slice())?;
        let dy = dxhat.reshape(dims.as_slice())?.broadcast_mul(&gamma)?;
        let tangent = if silu {
            let pre = xhat
                .reshape(dims.as_slice())?
                .broadcast_mul(&gamma)?
                .broadcast_add(&self.bias.detach().reshape(channel.as_slice())?)?;
            (silu_derivative(&pre)? * dy)?
        } else {
            dy
        };
        Ok(Dual { value, tangent: Some(tangent) })
    }

    fn apply(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        if x.rank() < 3 {
            return Err(crate::Error::Shape(format!("GroupNorm takes (b, C, …), got {:?}", x.dims())));
        }
        Ok(crate::ops::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, silu)?)
    }
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
        Ok(Self { weight: w.squeeze(2)?, bias: b })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(channel_linear(x, &self.weight, &self.bias)?)
    }

    /// The layer on a [`Dual`]; the tangent without the bias.
    pub(crate) fn forward_dual(&self, x: &Dual) -> Result<Dual> {
        let value = self.forward(&x.value)?;
        Ok(Dual { value, tangent: x.tangent.as_ref().map(|dx| self.tangent(dx)).transpose()? })
    }

    /// The tangent of the layer's output for an input tangent `dx` (the linear part, detached).
    pub(crate) fn tangent(&self, dx: &Tensor) -> Result<Tensor> {
        Ok(channel_linear(dx, &self.weight.detach(), &self.bias.detach().zeros_like()?)?)
    }
}

/// SiLU, `x · σ(x)` (one fused pass forward and backward).
pub(crate) fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(crate::ops::silu(x)?)
}

/// GroupNorm then SiLU (one fused custom op).
pub(crate) fn norm_silu(norm: &GroupNorm, x: &Tensor) -> Result<Tensor> {
    norm.forward_silu(x)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device, Var};
    use candle_nn::VarMap;

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("values")
    }

    fn close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (u, v) in a.iter().zip(b) {
            assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "{what}: {u} vs {v}");
        }
    }

    /// [`Conv`] equals candle's own `conv2d` (padding `k / 2`), values and the
    /// gradients of input, weight and bias, at strides 1 and 2 on odd and even
    /// sizes. (candle's stride-2 backward returns a wrong-sized input gradient
    /// for even sizes, so gradients are compared where it is right; the im2col
    /// tests cover even sizes against the composed ops.)
    #[test]
    fn conv_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for &(k, stride, h, w) in &[(3, 1, 7, 6), (3, 2, 7, 5), (3, 2, 8, 8), (1, 1, 5, 4), (3, 2, 3, 3)] {
            let varmap = VarMap::new();
            let conv = conv2d(&VarBuilder::from_varmap(&varmap, DType::F32, &dev), 3, 4, k, stride)?;
            let (weight, bias) = {
                let data = varmap.data().lock().expect("lock");
                (data["weight"].clone(), data["bias"].clone())
            };
            for (i, var) in [&weight, &bias].into_iter().enumerate() {
                let n = var.elem_count();
                let v: Vec<f32> = (0..n).map(|j| ((j as f32 + 0.5 * i as f32) * 0.77).sin()).collect();
                var.set(&Tensor::from_vec(v, var.shape(), &dev)?)?;
            }
            let n = 2 * 3 * h * w;
            let x: Vec<f32> = (0..n).map(|j| (j as f32 * 0.31).cos() + 0.01 * j as f32).collect();
            let x = Var::from_tensor(&Tensor::from_vec(x, (2, 3, h, w), &dev)?)?;
            let ours = conv.forward(&x)?;
            let theirs =
                x.conv2d(&weight, k / 2, stride, 1, 1)?.broadcast_add(&bias.reshape((1, 4, 1, 1))?)?;
            let what = format!("k{k} s{stride} {h}×{w}");
            assert_eq!(ours.dims(), theirs.dims(), "{what}");
            close(&flat(&ours), &flat(&theirs), &what);
            if stride == 2 && (h % 2 == 0 || w % 2 == 0) {
                continue;
            }
            let probe = Tensor::from_vec(
                (0..ours.elem_count()).map(|j| (j as f32 * 0.13).sin()).collect::<Vec<f32>>(),
                ours.shape(),
                &dev,
            )?;
            let g_ours = (ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &probe)?.sum_all()?.backward()?;
            for (name, t) in
                [("x", x.as_tensor()), ("weight", weight.as_tensor()), ("bias", bias.as_tensor())]
            {
                let (a, b) = (g_ours.get(t).expect("gradient"), g_theirs.get(t).expect("gradient"));
                close(&flat(a), &flat(b), &format!("{what} d{name}"));
            }
        }
        Ok(())
    }
}
