//! The U-Net velocity field.

use candle::{DType, Device, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};
use fm_core::{SeededRng, VelocityField};

use super::attention::AttentionBlock;
use super::config::{Init, Layer, UNetConfig};
use super::layers::{conv2d, group_norm, linear, linear_dual, silu_dual, Conv, DropoutRng, Dual, GroupNorm};
use super::resblock::ResBlock;
use super::time_embedding::{timestep_embedding, timestep_embedding_tangent};
use super::updown::{Downsample, Upsample};
use crate::{Error, Result};

#[derive(Debug, Clone)]
enum Block {
    Conv(Conv),
    Res(ResBlock),
    Attn(AttentionBlock),
    Down(Downsample),
    Up(Upsample),
}

/// guided diffusion's U-Net (torchcfm's `UNetModelWrapper`) as a velocity field
/// `u_θ(x, t[, y])`.
///
/// Parameter names follow torchcfm's state dict (`time_embed.0`,
/// `input_blocks.N.M…`, `middle_block.M…`, `output_blocks.N.M…`, `out.{0,2}`,
/// `label_emb`), so a PyTorch checkpoint converts by renaming nothing but a
/// leading `module.`. One difference: a class-conditional model's `label_emb`
/// has one extra row, the null class `∅` of classifier-free guidance.
///
/// # Shapes
/// - `x`: `(b, c, h, w)` or flattened `(b, c·h·w)`; `t`: `(b,)`; labels `(b,)` `u32`
/// - returns the shape of `x`
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use fm_core::{SeededRng, VelocityField};
/// use fm_models::unet::{UNet, UNetConfig};
/// # fn main() -> anyhow::Result<()> {
/// let config = UNetConfig::preset("tiny", 1, 8, 8)?;
/// let (net, _varmap) = UNet::init(&config, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
/// let x = Tensor::zeros((2, 64), DType::F32, &Device::Cpu)?;
/// let t = Tensor::new(&[0.1f32, 0.9], &Device::Cpu)?;
/// assert_eq!(net.velocity(&x, &t)?.dims(), &[2, 64]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct UNet {
    config: UNetConfig,
    time_embed: (Linear, Linear),
    /// The embedding MLP of the interval `t − s` of an average-velocity model.
    interval_embed: Option<(Linear, Linear)>,
    label_emb: Option<Tensor>,
    input_blocks: Vec<Vec<Block>>,
    middle: Vec<Block>,
    output_blocks: Vec<Vec<Block>>,
    out_norm: GroupNorm,
    out_conv: Conv,
}

impl UNet {
    /// Builds the model from a [`VarBuilder`] (weights from a file, a map, or a [`VarMap`]).
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let (mc, emb, g) = (config.model_channels, config.embed_dim(), config.norm_groups);
        let time_embed =
            (linear(&vb.pp("time_embed.0"), mc, emb)?, linear(&vb.pp("time_embed.2"), emb, emb)?);
        let label_emb = match config.num_classes {
            Some(k) => Some(vb.get((k + 1, emb), "label_emb.weight")?),
            None => None,
        };
        let build = |layer: &Layer, vb: VarBuilder| -> Result<Block> {
            Ok(match *layer {
                Layer::Conv { cin, cout } => Block::Conv(conv2d(&vb, cin, cout, 3, 1)?),
                Layer::Res { cin, cout } => {
                    Block::Res(ResBlock::new(&vb, cin, cout, emb, g, config.dropout)?)
                }
                Layer::Attn { ch } => Block::Attn(AttentionBlock::new(&vb, ch, config.heads(ch), g)?),
                Layer::Down { ch } => Block::Down(Downsample::new(&vb, ch)?),
                Layer::Up { ch } => Block::Up(Upsample::new(&vb, ch)?),
            })
        };
        let plan = config.plan();
        let blocks = |name: &str, list: &[Vec<Layer>]| -> Result<Vec<Vec<Block>>> {
            list.iter()
                .enumerate()
                .map(|(i, layers)| {
                    layers
                        .iter()
                        .enumerate()
                        .map(|(j, l)| build(l, vb.pp(format!("{name}.{i}.{j}"))))
                        .collect()
                })
                .collect()
        };
        let input_blocks = blocks("input_blocks", &plan.input_blocks)?;
        let output_blocks = blocks("output_blocks", &plan.output_blocks)?;
        let middle = plan
            .middle
            .iter()
            .enumerate()
            .map(|(j, l)| build(l, vb.pp(format!("middle_block.{j}"))))
            .collect::<Result<Vec<_>>>()?;
        let interval_embed = if config.average_velocity {
            Some((
                linear(&vb.pp("interval_embed.0"), mc, emb)?,
                linear(&vb.pp("interval_embed.2"), emb, emb)?,
            ))
        } else {
            None
        };
        Ok(Self {
            config: config.clone(),
            time_embed,
            interval_embed,
            label_emb,
            input_blocks,
            middle,
            output_blocks,
            out_norm: group_norm(&vb.pp("out.0"), plan.out_ch, g)?,
            out_conv: conv2d(&vb.pp("out.2"), plan.out_ch, config.output_channels(), 3, 1)?,
        })
    }

    /// A freshly initialised, trainable model and the [`VarMap`] holding its weights.
    ///
    /// Initialisation is PyTorch's default (`Linear`/`Conv`: uniform in
    /// `±1/√fan_in`; GroupNorm 1 and 0; `Embedding` standard normal) with guided
    /// diffusion's zero modules (`out_layers.3`, `proj_out`, `out.2`), drawn from `rng`
    /// in parameter order: the same seed gives the same weights.
    pub fn init(
        config: &UNetConfig,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        config.validate()?;
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| Error::Config {
                field: "varmap",
                reason: "the variable map's lock is poisoned".into(),
            })?;
            for p in config.parameters() {
                let shape = p.shape.as_slice();
                let t = match p.init {
                    Init::Uniform { fan_in } => {
                        let bound = 1.0 / (fan_in as f64).sqrt();
                        rng.uniform(shape, -bound, bound, dtype, device)?
                    }
                    Init::Zeros => Tensor::zeros(shape, dtype, device)?,
                    Init::Ones => Tensor::ones(shape, dtype, device)?,
                    Init::Normal => rng.normal(shape, dtype, device)?,
                };
                data.insert(p.name, Var::from_tensor(&t)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        Ok((Self::new(config, vb)?, varmap))
    }

    /// The model's configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The label of the null class `∅` (classifier-free guidance), if class-conditional.
    pub fn null_class(&self) -> Option<u32> {
        self.config.num_classes.map(|k| k as u32)
    }

    /// The velocity at `(x, t)` for class labels `labels` (`None`: the null class
    /// of a class-conditional model, or no conditioning), with dropout masks
    /// drawn from `rng` while training (`None` evaluates). For an
    /// average-velocity model ([`UNetConfig::average_velocity`]) this is
    /// `ū(x, t, t)`, its instantaneous velocity.
    ///
    /// # Shapes
    /// - `x`: `(b, c, h, w)` or `(b, c·h·w)`; `t`: `(b,)`; `labels`: `(b,)` (`u32`)
    /// - returns the shape of `x`
    pub fn forward(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        rng: DropoutRng,
    ) -> Result<Tensor> {
        let plain = |v: &Tensor| Dual::plain(v.clone());
        Ok(self.run(&plain(x), &plain(t), None, labels, rng)?.value)
    }

    /// The average velocity `ū(x, s, t)` of a MeanFlow model over `[s, t]`
    /// (`x` at time `s`; [`fm_core::mean_flow`]).
    ///
    /// # Shapes
    /// - `x`: `(b, c, h, w)` or `(b, c·h·w)`; `s`, `t`: `(b,)`; returns the shape of `x`
    pub fn average_velocity_at(
        &self,
        x: &Tensor,
        s: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let gap = self.gap(&Dual::plain(s.clone()), &Dual::plain(t.clone()))?;
        Ok(self.run(&Dual::plain(x.clone()), &Dual::plain(s.clone()), Some(&gap), labels, None)?.value)
    }

    /// `ū(x, s, t)` and its exact directional derivative along `(dx, ds, dt)`
    /// by one forward-mode pass (the tangent detached, see [`crate::unet`]'s
    /// layers); the value is differentiable as [`UNet::forward`]'s. Without
    /// dropout.
    #[allow(clippy::too_many_arguments)]
    pub fn average_velocity_and_tangent_at(
        &self,
        x: &Tensor,
        s: &Tensor,
        t: &Tensor,
        dx: &Tensor,
        ds: &Tensor,
        dt: &Tensor,
        labels: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (s, t) = (Dual::new(s.clone(), Some(ds)), Dual::new(t.clone(), Some(dt)));
        let gap = self.gap(&s, &t)?;
        let x = Dual::new(x.clone(), Some(&dx.reshape(x.shape())?));
        let out = self.run(&x, &s, Some(&gap), labels, None)?;
        let tangent =
            out.tangent.ok_or_else(|| Error::Shape("the forward-mode pass lost its tangent".into()))?;
        Ok((out.value, tangent))
    }

    /// `t − s`, checked to be an average-velocity model.
    fn gap(&self, s: &Dual, t: &Dual) -> Result<Dual> {
        if self.interval_embed.is_none() {
            return Err(Error::Config {
                field: "average_velocity",
                reason: "this U-Net is a velocity field u(x, t), not a MeanFlow network ū(x, s, t)".into(),
            });
        }
        let tangent = match (&s.tangent, &t.tangent) {
            (Some(ds), Some(dt)) => Some((dt - ds)?),
            (None, Some(dt)) => Some(dt.clone()),
            (Some(ds), None) => Some(ds.neg()?),
            (None, None) => None,
        };
        Ok(Dual { value: (&t.value - &s.value)?, tangent })
    }

    /// The image batch `(b, c, h, w)` of `x`.
    fn image_batch(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let b = x.dim(0)?;
        match x.rank() {
            2 if x.dim(1)? == c.dim() => Ok(x.reshape((b, c.in_channels, c.height, c.width))?),
            4 if x.dims()[1..] == [c.in_channels, c.height, c.width] => Ok(x.clone()),
            _ => Err(Error::Shape(format!(
                "the U-Net takes images {}×{}×{} (or {} values per row), got shape {:?}",
                c.in_channels,
                c.height,
                c.width,
                c.dim(),
                x.dims()
            ))),
        }
    }

    /// The embedding MLP `(l0, l2)` of the sinusoidal features of `t` (forward mode).
    fn embed(&self, layers: &(Linear, Linear), t: &Dual) -> Result<Dual> {
        let mc = self.config.model_channels;
        let features = Dual {
            value: timestep_embedding(&t.value, mc, 10_000.0)?,
            tangent: match &t.tangent {
                Some(dt) => Some(timestep_embedding_tangent(&t.value.detach(), dt, mc, 10_000.0)?),
                None => None,
            },
        };
        linear_dual(&layers.1, &silu_dual(&linear_dual(&layers.0, &features)?)?)
    }

    /// The network on `(x, t)` (and the interval `gap` of an average-velocity
    /// model; `0` when `None`), values and tangents.
    fn run(
        &self,
        x: &Dual,
        t: &Dual,
        gap: Option<&Dual>,
        labels: Option<&Tensor>,
        rng: DropoutRng,
    ) -> Result<Dual> {
        let b = x.value.dim(0)?;
        let x4 = x.map(|v| self.image_batch(v).map_err(|e| candle::Error::Msg(e.to_string())))?;
        let dtype = x.value.dtype();
        let t = t.map(|v| v.to_dtype(dtype)?.reshape(b))?;
        let mut emb = self.embed(&self.time_embed, &t)?;
        if let Some(layers) = &self.interval_embed {
            let gap = match gap {
                Some(g) => g.map(|v| v.to_dtype(dtype)?.reshape(b))?,
                None => Dual::plain(t.value.zeros_like()?),
            };
            emb = emb.broadcast_add(&self.embed(layers, &gap)?)?;
        }
        if let Some(table) = &self.label_emb {
            let labels = match labels {
                Some(l) => l.to_dtype(DType::U32)?.reshape(b)?,
                None => Tensor::full(self.null_class().unwrap_or(0), b, x.value.device())?,
            };
            let k = table.dim(0)? as u32;
            if labels.to_vec1::<u32>()?.iter().any(|&l| l >= k) {
                return Err(Error::Shape(format!("class labels must lie in 0..{k} (the last is ∅)")));
            }
            emb = emb.broadcast_add(&Dual::plain(table.index_select(&labels, 0)?))?;
        } else if labels.is_some() {
            return Err(Error::Config {
                field: "num_classes",
                reason: "class labels given to a model that is not class-conditional".into(),
            });
        }
        let apply = |block: &Block, h: &Dual, target: Option<(usize, usize)>| -> Result<Dual> {
            match block {
                Block::Conv(conv) => conv.forward_dual(h),
                Block::Res(r) => r.forward_dual(h, &emb, rng),
                Block::Attn(a) => a.forward_dual(h),
                Block::Down(d) => d.forward_dual(h),
                Block::Up(u) => {
                    let (_, _, hh, ww) = h.value.dims4()?;
                    u.forward_dual(h, target.unwrap_or((2 * hh, 2 * ww)))
                }
            }
        };
        let mut hs: Vec<Dual> = Vec::new();
        let mut h = x4;
        for block in &self.input_blocks {
            for layer in block {
                h = apply(layer, &h, None)?;
            }
            hs.push(h.clone());
        }
        for layer in &self.middle {
            h = apply(layer, &h, None)?;
        }
        for block in &self.output_blocks {
            let skip = hs.pop().ok_or_else(|| Error::Shape("U-Net: unbalanced skip connections".into()))?;
            h = Dual::cat(&[&h, &skip], 1)?;
            // An upsampling layer restores the size of the next skip connection.
            let target = match hs.last() {
                Some(s) => {
                    let (_, _, th, tw) = s.value.dims4()?;
                    Some((th, tw))
                }
                None => None,
            };
            for layer in block {
                h = apply(layer, &h, target)?;
            }
        }
        let out = self.out_conv.forward_dual(&self.out_norm.forward_dual(&h, true)?)?;
        let c = &self.config;
        match (x.value.rank(), c.out_channels) {
            (_, None) => out.map(|v| v.reshape(x.value.shape())),
            (2, Some(k)) => out.map(|v| v.reshape((b, k * c.height * c.width))),
            (_, Some(_)) => Ok(out),
        }
    }

    /// This model with fixed class labels (and optionally training-mode
    /// dropout), as a [`VelocityField`] for the losses and solvers of fm-core.
    pub fn conditioned<'a>(&'a self, labels: Option<&'a Tensor>, rng: DropoutRng<'a>) -> Conditioned<'a> {
        Conditioned { net: self, labels, rng }
    }
}

/// Maps a model error into fm-core's error type.
pub(crate) fn to_core(e: Error) -> fm_core::Error {
    match e {
        Error::Candle(c) => fm_core::Error::Candle(c),
        Error::Core(c) => c,
        other => fm_core::Error::Shape(other.to_string()),
    }
}

/// A MeanFlow U-Net ([`UNetConfig::average_velocity`]) as fm-core's average-velocity
/// network, unconditional, without dropout (an error for a plain U-Net).
impl fm_core::mean_flow::AverageVelocityField for UNet {
    fn average_velocity(&self, x: &Tensor, s: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        self.average_velocity_at(x, s, t, None).map_err(to_core)
    }

    fn average_velocity_and_tangent(
        &self,
        x: &Tensor,
        s: &Tensor,
        t: &Tensor,
        dx: &Tensor,
        ds: &Tensor,
        dt: &Tensor,
    ) -> fm_core::Result<(Tensor, Tensor)> {
        self.average_velocity_and_tangent_at(x, s, t, dx, ds, dt, None).map_err(to_core)
    }
}

impl VelocityField for UNet {
    /// The unconditional velocity (the null class of a class-conditional model), no dropout.
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        self.forward(x, t, None, None).map_err(to_core)
    }
}

/// A [`UNet`] with fixed labels and dropout stream: see [`UNet::conditioned`].
#[derive(Debug, Clone, Copy)]
pub struct Conditioned<'a> {
    net: &'a UNet,
    labels: Option<&'a Tensor>,
    rng: DropoutRng<'a>,
}

impl VelocityField for Conditioned<'_> {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        self.net.forward(x, t, self.labels, self.rng).map_err(to_core)
    }
}

/// Classifier-free guidance: `u_w = (1 + w) u(x, t | y) − w u(x, t | ∅)`
/// (flow_matching's `CFGScaledModel`; `w = 0` is the conditional model).
///
/// # Shapes
/// - `labels`: `(b,)` `u32`, for the batch the solver passes
#[derive(Debug, Clone, Copy)]
pub struct ClassifierFreeGuidance<'a> {
    /// The class-conditional model.
    pub net: &'a UNet,
    /// The class of each sample.
    pub labels: &'a Tensor,
    /// The guidance weight `w`.
    pub scale: f64,
}

impl VelocityField for ClassifierFreeGuidance<'_> {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        let cond = self.net.forward(x, t, Some(self.labels), None).map_err(to_core)?;
        if self.scale == 0.0 {
            return Ok(cond);
        }
        let uncond = self.net.forward(x, t, None, None).map_err(to_core)?;
        Ok(((cond * (1.0 + self.scale))? - (uncond * self.scale)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::varmap_tensors;
    use crate::ops::cpu::FORCE_COMPOSED;

    /// The CPU custom ops (im2col at stride 1 and 2, GroupNorm with and without
    /// SiLU, softmax) give the same velocity and the same gradient for every
    /// parameter as candle's composed tensor ops, on odd image sizes with
    /// attention at two levels and two heads (f64, so only rounding differs).
    #[test]
    fn custom_ops_match_the_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let config =
            UNetConfig { attention_ds: vec![1, 2], num_heads: 2, ..UNetConfig::preset("tiny", 2, 7, 6)? };
        let mut rng = SeededRng::new(3);
        let (net, varmap) = UNet::init(&config, &mut rng, DType::F64, &dev)?;
        for var in varmap.all_vars() {
            var.set(&(rng.normal(var.shape(), DType::F64, &dev)? * 0.3)?)?;
        }
        let x = rng.normal((3, 2, 7, 6), DType::F64, &dev)?;
        let t = rng.uniform(3, 0.0, 1.0, DType::F64, &dev)?;
        let w = rng.normal((3, 2, 7, 6), DType::F64, &dev)?;
        let params = varmap_tensors(&varmap)?;
        let run = |composed: bool| -> Result<Vec<Vec<f64>>> {
            FORCE_COMPOSED.with(|f| f.set(composed));
            let out = net.forward(&x, &t, None, None);
            FORCE_COMPOSED.with(|f| f.set(false));
            let out = out?;
            let grads = (&out * &w)?.sum_all()?.backward()?;
            let mut all = vec![out.flatten_all()?.to_vec1::<f64>()?];
            for (name, p) in &params {
                let g = grads.get(p).ok_or_else(|| Error::Shape(format!("`{name}` got no gradient")))?;
                all.push(g.flatten_all()?.to_vec1::<f64>()?);
            }
            Ok(all)
        };
        let (ours, theirs) = (run(false)?, run(true)?);
        let names = std::iter::once("output").chain(params.iter().map(|(n, _)| n.as_str()));
        for ((a, b), name) in ours.iter().zip(&theirs).zip(names) {
            let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() <= 1e-10 * scale, "{name}: {u} vs {v}");
            }
        }
        Ok(())
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("f64 values")
    }

    /// A tiny average-velocity U-Net in f64 with random (not zero) weights,
    /// attention at two levels and two heads, on odd image sizes.
    fn average_unet(seed: u64) -> Result<(UNet, VarMap, SeededRng)> {
        let dev = Device::Cpu;
        let config = UNetConfig {
            attention_ds: vec![1, 2],
            num_heads: 2,
            average_velocity: true,
            ..UNetConfig::preset("tiny", 2, 7, 6)?
        };
        let mut rng = SeededRng::new(seed);
        let (net, varmap) = UNet::init(&config, &mut rng, DType::F64, &dev)?;
        for var in varmap.all_vars() {
            var.set(&(rng.normal(var.shape(), DType::F64, &dev)? * 0.3)?)?;
        }
        Ok((net, varmap, rng))
    }

    /// The forward-mode tangent is the directional derivative: against central
    /// differences in f64, along `x` alone (everything f64: tight) and along
    /// `(x, s, t)` together (the sinusoidal features are computed in f32, as
    /// PyTorch's, so the difference quotient carries f32 rounding / 2ε).
    /// The value equals the plain pass's, bit for bit.
    #[test]
    fn forward_mode_tangent_is_the_directional_derivative() -> Result<()> {
        let dev = Device::Cpu;
        let (net, _, mut rng) = average_unet(5)?;
        let x = rng.normal((3, 2, 7, 6), DType::F64, &dev)?;
        let s = Tensor::new(&[0.1f64, 0.4, 0.7], &dev)?;
        let t = Tensor::new(&[0.5f64, 0.4, 0.95], &dev)?;
        let dx = rng.normal((3, 2, 7, 6), DType::F64, &dev)?;
        for (along_times, eps, tol) in [(false, 1e-5, 1e-7), (true, 1e-3, 2e-4)] {
            let (ds, dt) = if along_times {
                (Tensor::new(&[1.0f64, 0.5, -0.3], &dev)?, Tensor::new(&[0.2f64, 1.0, 0.8], &dev)?)
            } else {
                (s.zeros_like()?, t.zeros_like()?)
            };
            let (value, tangent) = net.average_velocity_and_tangent_at(&x, &s, &t, &dx, &ds, &dt, None)?;
            assert_eq!(flat(&value), flat(&net.average_velocity_at(&x, &s, &t, None)?));
            let at = |h: f64| -> Result<Tensor> {
                net.average_velocity_at(&(&x + (&dx * h)?)?, &(&s + (&ds * h)?)?, &(&t + (&dt * h)?)?, None)
            };
            let fd = ((at(eps)? - at(-eps)?)? / (2.0 * eps))?;
            let (ours, want) = (flat(&tangent), flat(&fd));
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(scale > 1e-2, "a degenerate direction: the test would pass trivially");
            for (a, b) in ours.iter().zip(&want) {
                assert!((a - b).abs() <= tol * scale, "times {along_times}: {a} vs {b} (scale {scale})");
            }
        }
        Ok(())
    }

    /// An average-velocity U-Net's instantaneous velocity is `ū(x, t, t)`; a
    /// plain U-Net refuses `ū` naming the field; the interval embedding's
    /// weights come last, so a seed draws the same U-Net weights with it; the
    /// MeanFlow loss's value carries a gradient to every parameter, the
    /// interval embedding's included (random weights: at initialisation the
    /// zero output convolution passes no gradient upstream).
    #[test]
    fn average_velocity_reduces_and_trains() -> Result<()> {
        let dev = Device::Cpu;
        let (net, varmap, mut rng) = average_unet(6)?;
        let x = rng.normal((2, 84), DType::F64, &dev)?;
        let t = Tensor::new(&[0.3f64, 0.8], &dev)?;
        assert_eq!(
            flat(&net.forward(&x, &t, None, None)?),
            flat(&net.average_velocity_at(&x, &t, &t, None)?)
        );

        let plain_config = UNetConfig::preset("tiny", 2, 7, 6)?;
        let (plain, plain_map) = UNet::init(&plain_config, &mut SeededRng::new(1), DType::F64, &dev)?;
        let err = plain.average_velocity_at(&x, &t, &t, None).expect_err("a plain U-Net has no ū");
        assert!(err.to_string().contains("average_velocity"), "{err}");
        let avg_config = UNetConfig { average_velocity: true, ..plain_config };
        let (_, avg_map) = UNet::init(&avg_config, &mut SeededRng::new(1), DType::F64, &dev)?;
        let (plain_w, avg_w) = (varmap_tensors(&plain_map)?, varmap_tensors(&avg_map)?);
        assert_eq!(avg_w.len(), plain_w.len() + 4);
        for (name, w) in &plain_w {
            let other = avg_w.iter().find(|(n, _)| n == name).expect("shared parameter");
            assert_eq!(flat(w), flat(&other.1), "{name}");
        }

        let path = fm_core::path::AffinePath::new(fm_core::scheduler::CondOtScheduler);
        let x0 = rng.normal((2, 84), DType::F64, &dev)?;
        let x1 = rng.normal((2, 84), DType::F64, &dev)?;
        let (s, t) = (Tensor::new(&[0.2f64, 0.5], &dev)?, Tensor::new(&[0.6f64, 0.5], &dev)?);
        let loss = fm_core::mean_flow::mean_flow_loss(&net, &path, &x0, &x1, &s, &t)?;
        let grads = loss.backward()?;
        for (name, p) in varmap_tensors(&varmap)? {
            let g = grads.get(&p).ok_or_else(|| Error::Shape(format!("`{name}` got no gradient")))?;
            assert!(flat(g).iter().any(|v| *v != 0.0), "`{name}`: zero gradient");
        }
        Ok(())
    }
}
