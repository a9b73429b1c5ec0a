//! The training losses of a discrete posterior model, as differentiable
//! tensors: cross-entropy and the generalized KL ([`super::elbo`](mod@super::elbo)'s `ℓ`
//! weighted by `κ̇/(1 − κ)`).

use candle::{DType, Tensor, D};

use super::path::MixturePath;
use crate::{Error, Result};

/// `log softmax` over the last dimension (max-subtracted).
fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// `log p(x)` of every token: `logits` `(b, L, V)`, `x` `(b, L)` `u32` with
/// ids `< V`.
fn log_prob_of(logp: &Tensor, x: &Tensor) -> Result<Tensor> {
    Ok(logp.gather(&x.unsqueeze(2)?.contiguous()?, 2)?.squeeze(2)?)
}

fn check(logits: &Tensor, x1: &Tensor) -> Result<(usize, usize, usize)> {
    let (b, l, v) = logits.dims3()?;
    if x1.dims() != [b, l] {
        return Err(Error::Shape(format!("logits {:?} and tokens {:?}", logits.dims(), x1.dims())));
    }
    Ok((b, l, v))
}

/// Mean cross-entropy `−log p_{1|t}(x₁ⁱ | x_t)` over tokens (`logits` `(b, L, V)`
/// of the posterior at `x_t`, `x1` `(b, L)` `u32`).
pub fn cross_entropy(logits: &Tensor, x1: &Tensor) -> Result<Tensor> {
    check(logits, x1)?;
    Ok(log_prob_of(&log_softmax(logits)?, x1)?.neg()?.mean_all()?)
}

/// Mean over tokens of `κ̇/(1 − κ) · ℓ` (the generalized KL: its integral
/// over `t` bounds `−log p_θ(x₁)` per token), with `x_t` `(b, L)` (mask id `V`
/// allowed) and `t` `(b,)`; the weight is [`MixturePath::kl_weight`].
pub fn generalized_kl_loss(
    logits: &Tensor,
    x1: &Tensor,
    xt: &Tensor,
    t: &[f64],
    path: &MixturePath,
) -> Result<Tensor> {
    let (b, l, v) = check(logits, x1)?;
    if xt.dims() != [b, l] || t.len() != b {
        return Err(Error::Shape(format!("x_t {:?} and {} times for {b} sequences", xt.dims(), t.len())));
    }
    let dtype = logits.dtype();
    let dev = logits.device();
    let logp = log_softmax(logits)?;
    let logp_x1 = log_prob_of(&logp, x1)?;
    // p(x_t), zero at the mask (id V, outside the posterior).
    let real = xt.to_dtype(DType::F64)?.lt(v as f64)?.to_dtype(dtype)?;
    let xt_clamped = xt.minimum(&Tensor::full((v - 1) as u32, (b, l), dev)?)?;
    let p_xt = (log_prob_of(&logp, &xt_clamped)?.exp()? * &real)?;
    let same = xt.eq(x1)?.to_dtype(dtype)?;
    let weights: Vec<f64> = t.iter().map(|&ti| path.kl_weight(ti)).collect();
    let w = Tensor::from_vec(weights, (b, 1), dev)?.to_dtype(dtype)?;
    let bracket = ((p_xt - &same)? + ((1.0 - &same)? * logp_x1)?)?;
    Ok(bracket.broadcast_mul(&w)?.neg()?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discrete::{generalized_kl, DiscreteSource};
    use crate::scheduler::SchedulerKind;
    use candle::Device;

    /// The tensor losses equal the per-token formulas on random logits, the
    /// mask included, and carry gradients.
    #[test]
    fn tensor_losses_match_the_token_formulas() -> Result<()> {
        let dev = Device::Cpu;
        let (b, l, v) = (3, 4, 5);
        let mut rng = crate::SeededRng::new(2);
        let logits = candle::Var::from_tensor(&rng.normal((b, l, v), DType::F64, &dev)?)?;
        let x1: Vec<u32> = (0..b * l).map(|i| (i * 3 % v) as u32).collect();
        let xt: Vec<u32> =
            (0..b * l).map(|i| if i % 3 == 0 { v as u32 } else { (i * 2 % v) as u32 }).collect();
        let t = [0.2, 0.5, 0.9];
        let path = MixturePath::new(SchedulerKind::CondOt, DiscreteSource::Mask, v)?;
        let x1t = Tensor::from_vec(x1.clone(), (b, l), &dev)?;
        let xtt = Tensor::from_vec(xt.clone(), (b, l), &dev)?;
        let loss = generalized_kl_loss(&logits, &x1t, &xtt, &t, &path)?;
        let ce = cross_entropy(&logits, &x1t)?.to_scalar::<f64>()?;
        let probs = candle_softmax(&logits)?;
        let (mut want, mut want_ce) = (0.0, 0.0);
        for i in 0..b * l {
            let p: Vec<f32> = probs[i * v..(i + 1) * v].iter().map(|&x| x as f32).collect();
            want += 1.0 / (1.0 - t[i / l]) * generalized_kl(&p, x1[i], xt[i]);
            want_ce -= probs[i * v + x1[i] as usize].ln();
        }
        let n = (b * l) as f64;
        assert!(
            (loss.to_scalar::<f64>()? - want / n).abs() < 1e-5,
            "{} vs {}",
            loss.to_scalar::<f64>()?,
            want / n
        );
        assert!((ce - want_ce / n).abs() < 1e-9);
        let g = loss.backward()?;
        assert!(g.get(&logits).is_some());
        Ok(())
    }

    fn candle_softmax(logits: &Tensor) -> Result<Vec<f64>> {
        Ok(log_softmax(logits)?.exp()?.flatten_all()?.to_vec1::<f64>()?)
    }
}
