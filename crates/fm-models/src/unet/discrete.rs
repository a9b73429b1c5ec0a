//! The discrete posterior U-Net: `p_{1|t}(x₁ⁱ | x_t)` for every pixel token
//! of an image ([`fm_core::discrete`]), from the one-hot image and the time.
//!
//! The U-Net of [`super::UNet`] with `C·S` input channels (each image channel
//! one-hot over the `S` states of `x_t`) and `C·V` output channels (one logit
//! per token value). A convolutional network, not a transformer: its weights
//! are shared over positions, it has class conditioning and the null class of
//! classifier-free guidance already, and on 2 CPU cores a 28×28 image as 784
//! attention tokens would cost far more per step than the U-Net's convolutions
//! (its attention runs only at the 7×7 level).

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fm_core::discrete::DiscretePosterior;
use fm_core::SeededRng;
use serde::{Deserialize, Serialize};

use super::{DropoutRng, UNet, UNetConfig};
use crate::mlp::token_posterior;
use crate::{Error, Result};

/// Configuration of a [`DiscreteUNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscreteUNetConfig {
    /// Channels of the images (1 for MNIST).
    pub image_channels: usize,
    /// Vocabulary `V` (the posterior's support).
    pub vocab: usize,
    /// States of `x_t`: `V + 1` with a mask source, `V` with a uniform one.
    pub states: usize,
    /// The network: `in_channels = image_channels · states`, `out_channels = image_channels · vocab`.
    pub unet: UNetConfig,
}

impl DiscreteUNetConfig {
    /// Checks the configuration (the U-Net's own checks included); the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.vocab < 2 || !(self.states == self.vocab || self.states == self.vocab + 1) {
            return bad(
                "vocab",
                format!("needs V ≥ 2 and V or V + 1 states, got V = {}, {} states", self.vocab, self.states),
            );
        }
        if self.image_channels == 0 {
            return bad("image_channels", "needs at least 1 channel".into());
        }
        let ins = self.image_channels.checked_mul(self.states);
        let outs = self.image_channels.checked_mul(self.vocab);
        if ins != Some(self.unet.in_channels) || outs != self.unet.out_channels {
            return bad(
                "unet",
                format!(
                    "{} image channels of {} states and {} values need {ins:?} input and {outs:?} output \
                     channels, got {} and {:?}",
                    self.image_channels,
                    self.states,
                    self.vocab,
                    self.unet.in_channels,
                    self.unet.out_channels
                ),
            );
        }
        self.unet.validate()
    }

    /// Tokens per image, `C·H·W`.
    pub fn seq_len(&self) -> usize {
        self.image_channels * self.unet.height * self.unet.width
    }

    /// The parameters' names and shapes (the U-Net's).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.unet.parameter_shapes()
    }
}

/// The posterior network of discrete flow matching on images.
///
/// # Shapes
/// - tokens `(b, C·H·W)` `u32` (ids `< S`, channel-major as images are
///   flattened), `t` `(b,)` → logits `(b, C·H·W, V)`
#[derive(Debug, Clone)]
pub struct DiscreteUNet {
    config: DiscreteUNetConfig,
    net: UNet,
}

impl DiscreteUNet {
    /// Builds the network from `vb`.
    pub fn new(config: &DiscreteUNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        Ok(Self { config: config.clone(), net: UNet::new(&config.unet, vb)? })
    }

    /// A freshly initialised network (from `rng`) and its variables.
    pub fn init(
        config: &DiscreteUNetConfig,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        config.validate()?;
        let (net, varmap) = UNet::init(&config.unet, rng, dtype, device)?;
        Ok((Self { config: config.clone(), net }, varmap))
    }

    /// The configuration.
    pub fn config(&self) -> &DiscreteUNetConfig {
        &self.config
    }

    /// The label of the null class (classifier-free guidance), if class-conditional.
    pub fn null_class(&self) -> Option<u32> {
        self.net.null_class()
    }

    /// The logits at tokens `x` `(b, C·H·W)`, times `t` `(b,)` and class
    /// `labels` `(b,)` `u32` (`None`: the null class of a class-conditional
    /// model), with dropout masks from `rng` while training.
    pub fn logits_with(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        rng: DropoutRng,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, l) = x.dims2()?;
        if l != c.seq_len() {
            return Err(Error::Shape(format!("images of {l} tokens for a model of {}", c.seq_len())));
        }
        let ids = x.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= c.states) {
            return Err(Error::Shape(format!("token {bad} outside the model's {} states", c.states)));
        }
        let (ch, hw) = (c.image_channels, c.unet.height * c.unet.width);
        // One-hot, channel k·S + s for image channel k and state s.
        let mut onehot = vec![0f32; b * ch * c.states * hw];
        for (i, &id) in ids.iter().enumerate() {
            let (r, k, p) = (i / l, (i % l) / hw, i % hw);
            onehot[((r * ch + k) * c.states + id as usize) * hw + p] = 1.0;
        }
        let input = Tensor::from_vec(onehot, (b, ch * c.states, c.unet.height, c.unet.width), x.device())?
            .to_dtype(DType::F32)?;
        let out = self.net.forward(&input, t, labels, rng)?;
        // (b, C·V, H, W) → (b, C, H·W, V) → (b, C·H·W, V).
        Ok(out.reshape((b, ch, c.vocab, hw))?.transpose(2, 3)?.reshape((b, l, c.vocab))?)
    }

    /// The logits of the unconditional (or null-class) posterior.
    pub fn logits(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.logits_with(x, t, None, None)
    }
}

impl DiscretePosterior for DiscreteUNet {
    fn posterior(&self, x: &[u32], t: &[f64]) -> fm_core::Result<Vec<f32>> {
        token_posterior(x, t, &Device::Cpu, |xs, ts| self.logits(xs, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(states: usize) -> Result<DiscreteUNetConfig> {
        let unet =
            UNetConfig { in_channels: states, out_channels: Some(2), ..UNetConfig::preset("tiny", 1, 4, 4)? };
        Ok(DiscreteUNetConfig { image_channels: 1, vocab: 2, states, unet })
    }

    /// One row of logits per token, posteriors summing to 1; tokens past the
    /// states and inconsistent channel counts are errors naming them.
    #[test]
    fn logits_have_one_row_per_token_and_bad_inputs_are_named() -> Result<()> {
        let c = config(3)?;
        let (net, _) = DiscreteUNet::init(&c, &mut SeededRng::new(1), DType::F32, &Device::Cpu)?;
        let x = Tensor::from_vec((0..32u32).map(|i| i % 3).collect::<Vec<_>>(), (2, 16), &Device::Cpu)?;
        let t = Tensor::new(&[0.2f32, 0.7], &Device::Cpu)?;
        assert_eq!(net.logits(&x, &t)?.dims(), &[2, 16, 2]);
        let p = net
            .posterior(&x.flatten_all()?.to_vec1::<u32>()?, &[0.2, 0.7])
            .map_err(|e| Error::Shape(e.to_string()))?;
        assert_eq!(p.len(), 64);
        for row in p.chunks(2) {
            assert!((row[0] + row[1] - 1.0).abs() < 1e-6);
        }
        let bad = Tensor::full(3u32, (1, 16), &Device::Cpu)?;
        assert!(net.logits(&bad, &t.narrow(0, 0, 1)?).unwrap_err().to_string().contains("token 3"));
        let wrong = DiscreteUNetConfig { states: 2, ..c };
        assert!(wrong.validate().unwrap_err().to_string().contains("input"));
        Ok(())
    }

    /// The logits of token `i` are the U-Net's output channel `v` at token
    /// `i`'s pixel: checked against the plain U-Net on the same one-hot input.
    #[test]
    fn logits_are_the_unets_channels_at_each_pixel() -> Result<()> {
        let c = config(3)?;
        let mut rng = SeededRng::new(2);
        let (net, varmap) = DiscreteUNet::init(&c, &mut rng, DType::F32, &Device::Cpu)?;
        // The output convolution starts at zero (guided diffusion's zero module): give it weights.
        for name in ["out.2.weight", "out.2.bias"] {
            let vars = varmap.data().lock().map_err(|_| Error::Shape("poisoned".into()))?;
            let var = &vars[name];
            var.set(&rng.normal(var.shape(), DType::F32, &Device::Cpu)?)?;
        }
        let plain = UNet::new(&c.unet, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
        let ids: Vec<u32> = (0..16u32).map(|i| (i * 7) % 3).collect();
        let x = Tensor::from_vec(ids.clone(), (1, 16), &Device::Cpu)?;
        let t = Tensor::new(&[0.4f32], &Device::Cpu)?;
        let mut onehot = vec![0f32; 3 * 16];
        for (p, &id) in ids.iter().enumerate() {
            onehot[id as usize * 16 + p] = 1.0;
        }
        let input = Tensor::from_vec(onehot, (1, 3, 4, 4), &Device::Cpu)?;
        assert!(net.logits(&x, &t)?.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        let direct = plain.forward(&input, &t, None, None)?.reshape((2, 16))?.to_vec2::<f32>()?;
        let logits = net.logits(&x, &t)?.reshape((16, 2))?.to_vec2::<f32>()?;
        for p in 0..16 {
            for v in 0..2 {
                assert_eq!(logits[p][v], direct[v][p], "pixel {p}, value {v}");
            }
        }
        Ok(())
    }
}
