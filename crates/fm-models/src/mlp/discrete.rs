//! The discrete posterior MLP: `p_{1|t}(x₁ⁱ | x_t)` for every position `i` of a
//! short token sequence, from the one-hot encoding of `x_t` and the time
//! ([`fm_core::discrete`]).
//!
//! An MLP on one-hot inputs (its first layer is a per-position token embedding
//! followed by a mixing layer, folded into one matrix) fits the short sequences
//! of discrete flow matching's 2-D examples and sklearn's 8×8 digits.

use candle::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use fm_core::discrete::DiscretePosterior;
use fm_core::SeededRng;
use serde::{Deserialize, Serialize};

use super::model::{layer_shapes, linear_init, linear_layers, validate_widths};
use crate::{Activation, Error, Result};

/// Configuration of a [`DiscreteMlp`]: input `L·S + 1` (one-hot tokens over
/// `S` states, then `t`; class-conditional: then the one-hot class among
/// `K + 1`, the last meaning "no class"), output `L·V` logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscreteMlpConfig {
    /// Sequence length `L`.
    pub seq_len: usize,
    /// Vocabulary `V` (the posterior's support).
    pub vocab: usize,
    /// States of `x_t`: `V + 1` with a mask source, `V` with a uniform one.
    pub states: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// The nonlinearity after every hidden layer.
    pub activation: Activation,
    /// Classes `K` of a class-conditional model (label `K` is "no class", for guidance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
}

impl DiscreteMlpConfig {
    /// Checks the configuration and its sizes; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.vocab < 2 || !(self.states == self.vocab || self.states == self.vocab + 1) {
            return Err(Error::Config {
                field: "vocab",
                reason: format!(
                    "needs V ≥ 2 and V or V + 1 states, got V = {}, {} states",
                    self.vocab, self.states
                ),
            });
        }
        if self.num_classes.is_some_and(|k| !(1..=crate::limits::MAX_LAYERS).contains(&k)) {
            return Err(Error::Config {
                field: "num_classes",
                reason: format!(
                    "needs 1 to {} classes, got {:?}",
                    crate::limits::MAX_LAYERS,
                    self.num_classes
                ),
            });
        }
        let input = self.seq_len.checked_mul(self.states).ok_or_else(|| Error::Config {
            field: "seq_len",
            reason: "the one-hot input overflows".into(),
        })?;
        validate_widths(input, &self.hidden, || self.parameter_shapes())
    }

    /// Input width: one-hot tokens, `t`, and the one-hot class.
    fn input_width(&self) -> usize {
        self.seq_len * self.states + 1 + self.num_classes.map_or(0, |k| k + 1)
    }

    /// The parameters' names and shapes (`net.0`, `net.2`, …).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut w = vec![self.input_width()];
        w.extend(&self.hidden);
        w.push(self.seq_len * self.vocab);
        layer_shapes(&w)
    }
}

/// The posterior network of discrete flow matching.
///
/// # Shapes
/// - tokens `(b, L)` `u32` (ids `< S`), `t` `(b,)` → logits `(b, L, V)`
#[derive(Debug, Clone)]
pub struct DiscreteMlp {
    config: DiscreteMlpConfig,
    layers: Vec<Linear>,
}

impl DiscreteMlp {
    /// Builds the network from `vb` (names as [`DiscreteMlpConfig::parameter_shapes`]).
    pub fn new(config: &DiscreteMlpConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        Ok(Self { config: config.clone(), layers: linear_layers(&config.parameter_shapes(), &vb)? })
    }

    /// A freshly initialised network (PyTorch's `nn.Linear` default, from `rng`) and its variables.
    pub fn init(
        config: &DiscreteMlpConfig,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        config.validate()?;
        let shapes = config.parameter_shapes();
        let varmap = linear_init(&shapes, rng, dtype, device)?;
        // The one-hot columns (tokens, then the class) as an embedding that a
        // mixing layer follows: N(0, 1/n) for the n one-hot inputs of a row, so
        // that the first pre-activation starts with unit variance. PyTorch's
        // `nn.Linear` bound 1/√fan_in on one-hot inputs starts it at about
        // 1/√(3·S) of that: the tokens barely reach the network, and a 2-D
        // checkerboard model trained by the generalized KL was still at an ELBO
        // of −37.6 nats after 2000 steps (flow_matching's example, whose
        // `nn.Embedding` starts at N(0, 1): −12.1).
        {
            let data = varmap.data().lock().map_err(|_| Error::Config {
                field: "varmap",
                reason: "the variable map's lock is poisoned".into(),
            })?;
            let w = &data[&shapes[0].0];
            let (h, width) = w.dims2()?;
            let ones = config.seq_len + usize::from(config.num_classes.is_some());
            let embedding = (rng.normal((h, width), dtype, device)? / (ones as f64).sqrt())?;
            // Keep the time's column (index L·S) from the default draw.
            let time = config.seq_len * config.states;
            let keep = Tensor::from_vec(
                (0..width).map(|j| f32::from(u8::from(j == time))).collect::<Vec<_>>(),
                (1, width),
                device,
            )?
            .to_dtype(dtype)?;
            let mixed = (w.as_tensor().broadcast_mul(&keep)? + embedding.broadcast_mul(&(1.0 - &keep)?)?)?;
            w.set(&mixed)?;
        }
        let net = Self::new(config, VarBuilder::from_varmap(&varmap, dtype, device))?;
        Ok((net, varmap))
    }

    /// The configuration.
    pub fn config(&self) -> &DiscreteMlpConfig {
        &self.config
    }

    /// The linear layers.
    pub(crate) fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// The logits of the posterior at tokens `x` `(b, L)` and times `t` `(b,)`
    /// (a class-conditional model: with no class).
    pub fn logits(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.logits_with(x, t, None)
    }

    /// The logits at tokens `x` `(b, L)`, times `t` `(b,)` and, for a
    /// class-conditional model, `labels` (`b` values; `K` or `None`: no class).
    pub fn logits_with(&self, x: &Tensor, t: &Tensor, labels: Option<&[u32]>) -> Result<Tensor> {
        let c = &self.config;
        let (b, l) = x.dims2()?;
        if labels.is_some_and(|y| y.len() != b) {
            return Err(Error::Shape(format!("{} labels for {b} sequences", labels.map_or(0, |y| y.len()))));
        }
        let classes = match (c.num_classes, labels) {
            (None, Some(_)) => return Err(Error::Shape("labels for a model without classes".into())),
            (Some(k), Some(y)) => match y.iter().find(|&&v| v as usize > k) {
                Some(bad) => {
                    return Err(Error::Shape(format!("label {bad} outside the model's {k} classes")))
                }
                None => Some((k, y.to_vec())),
            },
            (Some(k), None) => Some((k, vec![k as u32; b])),
            (None, None) => None,
        };
        if l != c.seq_len {
            return Err(Error::Shape(format!("sequences of {l} tokens for a model of {}", c.seq_len)));
        }
        let ids = x.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= c.states) {
            return Err(Error::Shape(format!("token {bad} outside the model's {} states", c.states)));
        }
        let dtype = self.layers[0].weight().dtype();
        let width = c.input_width();
        let mut onehot = vec![0f32; b * width];
        let times = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        for r in 0..b {
            let row = &mut onehot[r * width..(r + 1) * width];
            for (i, &id) in ids[r * l..(r + 1) * l].iter().enumerate() {
                row[i * c.states + id as usize] = 1.0;
            }
            row[l * c.states] = times[r];
            if let Some((_, y)) = &classes {
                row[l * c.states + 1 + y[r] as usize] = 1.0;
            }
        }
        let mut h = Tensor::from_vec(onehot, (b, width), x.device())?.to_dtype(dtype)?;
        let last = self.layers.len() - 1;
        for (k, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if k < last {
                h = c.activation.forward(&h)?;
            }
        }
        Ok(h.reshape((b, l, c.vocab))?)
    }
}

impl DiscretePosterior for DiscreteMlp {
    fn posterior(&self, x: &[u32], t: &[f64]) -> fm_core::Result<Vec<f32>> {
        let dev = self.layers[0].weight().device().clone();
        token_posterior(x, t, &dev, |xs, ts| self.logits(xs, ts))
    }
}

/// The posterior probabilities (`b · L · V`, row-major) of a network whose
/// `logits` take tokens `(b, L)` `u32` and times `(b,)` `f32` (`b = t.len()`
/// sequences of `x`): the [`DiscretePosterior`] of every discrete network,
/// and of the pipeline's guided combinations of them.
pub fn token_posterior(
    x: &[u32],
    t: &[f64],
    device: &Device,
    logits: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
) -> fm_core::Result<Vec<f32>> {
    let b = t.len();
    let to_core = |e: Error| fm_core::Error::Shape(e.to_string());
    let xs = Tensor::from_vec(x.to_vec(), (b, x.len() / b.max(1)), device)?;
    let ts = Tensor::from_vec(t.iter().map(|&v| v as f32).collect::<Vec<_>>(), b, device)?;
    let logits = logits(&xs, &ts).map_err(to_core)?;
    let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    Ok(p.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Adam, AdamParams};
    use fm_core::discrete::{cross_entropy, ctmc_euler, DiscreteSource, MixturePath};
    use fm_core::scheduler::SchedulerKind;

    /// Trained by cross-entropy on one token with a known target (the
    /// generalized KL's `1/(1 − t)` weights make a noisier gradient), the
    /// model's CTMC samples that target: Pearson's χ² over the 6 states below
    /// the 0.1 % quantile of χ²₅ (20.5), from both sources.
    #[test]
    fn a_trained_model_samples_a_one_token_target() -> Result<()> {
        let p1 = [0.1, 0.3, 0.05, 0.25, 0.2, 0.1];
        let dev = Device::Cpu;
        for source in [DiscreteSource::Mask, DiscreteSource::Uniform] {
            let path = MixturePath::new(SchedulerKind::CondOt, source, 6)?;
            let config = DiscreteMlpConfig {
                seq_len: 1,
                vocab: 6,
                states: source.states(6),
                hidden: vec![32, 32],
                activation: Activation::Silu,
                num_classes: None,
            };
            let mut rng = SeededRng::new(5);
            let (net, varmap) = DiscreteMlp::init(&config, &mut rng, DType::F32, &dev)?;
            let mut opt = Adam::new(&varmap, AdamParams::with_lr(1e-2))?;
            let b = 4096;
            for step in 0..800 {
                // A step decay: Adam's noise at 10⁻² would show in the χ².
                if step == 400 {
                    opt.set_lr(1e-3);
                }
                let x1: Vec<u32> = rng
                    .uniform_vec(b, 0.0, 1.0)
                    .into_iter()
                    .map(|u| {
                        let mut acc = 0.0;
                        p1.iter()
                            .position(|p| {
                                acc += p;
                                u < acc
                            })
                            .unwrap_or(5) as u32
                    })
                    .collect();
                let t: Vec<f64> = rng.uniform_vec(b, 0.0, 1.0);
                let xt = path.sample(&x1, &t, &mut rng)?;
                let xt_t = Tensor::from_vec(xt, (b, 1), &dev)?;
                let logits = net.logits(&xt_t, &Tensor::from_vec(t.clone(), b, &dev)?)?;
                let loss = cross_entropy(&logits, &Tensor::from_vec(x1, (b, 1), &dev)?)?;
                opt.backward_step(&loss)?;
            }
            let n = 20_000;
            let x0 = source.sample(n, 6, &mut rng)?;
            let (x, nfe) = ctmc_euler(&net, &path, &x0, n, 20, &mut rng)?;
            assert_eq!(nfe, 20);
            let mut counts = [0usize; 6];
            for &xi in &x {
                counts[xi as usize] += 1;
            }
            let chi2: f64 =
                counts.iter().zip(p1).map(|(&c, p)| (c as f64 - n as f64 * p).powi(2) / (n as f64 * p)).sum();
            assert!(chi2 < 20.5, "{source}: χ² = {chi2}, counts {counts:?}");
        }
        Ok(())
    }
}
