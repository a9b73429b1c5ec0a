//! Sinusoidal timestep features (guided diffusion's `timestep_embedding`).

use candle::{DType, Tensor};

use crate::Result;

/// `[cos(t·f_0), …, cos(t·f_{h−1}), sin(t·f_0), …, sin(t·f_{h−1})]` with
/// `f_i = max_period^(−i/h)`, `h = dim / 2`, and a zero column appended when
/// `dim` is odd. torchcfm feeds `t ∈ [0, 1]` as is (no ×1000).
///
/// # Shapes
/// - `t`: `(b,)` → `(b, dim)`, in `t`'s dtype
pub fn timestep_embedding(t: &Tensor, dim: usize, max_period: f64) -> Result<Tensor> {
    let b = t.dim(0)?;
    let half = dim / 2;
    let freqs: Vec<f32> =
        (0..half).map(|i| (-(max_period.ln()) * i as f64 / half as f64).exp() as f32).collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t.to_dtype(DType::F32)?.reshape((b, 1))?.broadcast_mul(&freqs)?;
    let mut parts = vec![args.cos()?, args.sin()?];
    if dim % 2 == 1 {
        parts.push(Tensor::zeros((b, 1), DType::F32, t.device())?);
    }
    Ok(Tensor::cat(&parts, 1)?.to_dtype(t.dtype())?)
}

/// The derivative of [`timestep_embedding`] along `dt` (`(b,)`):
/// `[−sin(t·f_i)·f_i·dt, cos(t·f_i)·f_i·dt]` (and the zero column).
///
/// # Shapes
/// - `t`, `dt`: `(b,)` → `(b, dim)`, in `t`'s dtype
pub(crate) fn timestep_embedding_tangent(
    t: &Tensor,
    dt: &Tensor,
    dim: usize,
    max_period: f64,
) -> Result<Tensor> {
    let b = t.dim(0)?;
    let half = dim / 2;
    let freqs: Vec<f32> =
        (0..half).map(|i| (-(max_period.ln()) * i as f64 / half as f64).exp() as f32).collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t.to_dtype(DType::F32)?.reshape((b, 1))?.broadcast_mul(&freqs)?;
    let rate = dt.to_dtype(DType::F32)?.reshape((b, 1))?.broadcast_mul(&freqs)?;
    let mut parts = vec![(args.sin()?.neg()? * &rate)?, (args.cos()? * &rate)?];
    if dim % 2 == 1 {
        parts.push(Tensor::zeros((b, 1), DType::F32, t.device())?);
    }
    Ok(Tensor::cat(&parts, 1)?.to_dtype(t.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn matches_the_formula() -> Result<()> {
        let t = Tensor::new(&[0.0f32, 0.5], &Device::Cpu)?;
        let e = timestep_embedding(&t, 5, 10_000.0)?.to_vec2::<f32>()?;
        // t = 0: cos = 1, sin = 0, then the odd zero column.
        assert_eq!(e[0], vec![1.0, 1.0, 0.0, 0.0, 0.0]);
        // t = 0.5, h = 2: f = (1, 10000^(-1/2) = 0.01).
        let want = [0.5f32.cos(), 0.005f32.cos(), 0.5f32.sin(), 0.005f32.sin(), 0.0];
        for (a, b) in e[1].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        Ok(())
    }
}
