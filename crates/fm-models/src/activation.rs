//! Pointwise activations of the MLP.

use std::fmt;
use std::str::FromStr;

use candle::Tensor;
use serde::{Deserialize, Serialize};

use crate::{ops, Error, Result};

/// A pointwise nonlinearity. All of them pass gradients back (unlike some of
/// candle-nn's fused ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `x` if `x > 0`, else `eˣ − 1` (the flow-matching guide's choice).
    Elu,
    /// `x · sigmoid(x)` (a.k.a. swish).
    Silu,
    /// Scaled ELU (torchcfm's MLP).
    Selu,
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
}

const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

impl Activation {
    /// The names [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &["elu", "silu", "selu", "relu", "tanh"];

    /// The derivative `σ'(x)`, elementwise, built from differentiable ops (so
    /// gradients flow through it to `x`; the kinks of ReLU/ELU get derivative 0).
    pub fn derivative(&self, x: &Tensor) -> Result<Tensor> {
        // Which side of 0: a constant mask (no gradient through the comparison).
        let positive = || -> Result<Tensor> { Ok(x.detach().gt(0.0)?.to_dtype(x.dtype())?) };
        Ok(match self {
            Activation::Elu => {
                let m = positive()?;
                (&m + ((1.0 - &m)? * x.minimum(0.0)?.exp()?)?)?
            }
            Activation::Selu => {
                let m = positive()?;
                ((&m + ((1.0 - &m)? * (x.minimum(0.0)?.exp()? * SELU_ALPHA)?)?)? * SELU_SCALE)?
            }
            Activation::Silu => {
                let s = candle_nn::ops::sigmoid(x)?;
                // σ + x σ (1 − σ)
                (&s + ((x * &s)? * (1.0 - &s)?)?)?
            }
            Activation::Relu => positive()?,
            Activation::Tanh => (1.0 - x.tanh()?.sqr()?)?,
        })
    }

    /// Applies the activation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            // Fused forward and backward passes (see ops::activation).
            Activation::Elu => ops::elu(x, 1.0)?,
            Activation::Silu => ops::silu(x)?,
            Activation::Selu => (ops::elu(x, SELU_ALPHA)? * SELU_SCALE)?,
            Activation::Relu => x.relu()?,
            Activation::Tanh => x.tanh()?,
        })
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "elu" => Ok(Activation::Elu),
            "silu" | "swish" => Ok(Activation::Silu),
            "selu" => Ok(Activation::Selu),
            "relu" => Ok(Activation::Relu),
            "tanh" => Ok(Activation::Tanh),
            _ => Err(Error::Config {
                field: "activation",
                reason: format!("unknown activation `{s}`; valid: {}", Self::NAMES.join(", ")),
            }),
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Activation::Elu => "elu",
            Activation::Silu => "silu",
            Activation::Selu => "selu",
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn values() -> Result<()> {
        let x = Tensor::new(&[-1.0f64, 0.5], &Device::Cpu)?;
        let e = (-1.0f64).exp_m1();
        let cases = [
            (Activation::Elu, [e, 0.5]),
            (Activation::Relu, [0.0, 0.5]),
            (Activation::Selu, [SELU_SCALE * SELU_ALPHA * e, SELU_SCALE * 0.5]),
            (Activation::Silu, [-1.0 / (1.0 + 1f64.exp()), 0.5 / (1.0 + (-0.5f64).exp())]),
            (Activation::Tanh, [(-1f64).tanh(), 0.5f64.tanh()]),
        ];
        for (a, want) in cases {
            let got = a.forward(&x)?.to_vec1::<f64>()?;
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-12, "{a}: {g} vs {w}");
            }
            assert_eq!(a.to_string().parse::<Activation>()?, a);
        }
        assert!("gelu".parse::<Activation>().unwrap_err().to_string().contains("elu, silu"));
        Ok(())
    }
}
