//! The U-Net's configuration, its presets, and the layer plan shared by the
//! model builder and the checkpoint's parameter list.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Configuration of a [`crate::unet::UNet`]: guided diffusion's `UNetModel` as
/// torchcfm's `UNetModelWrapper` builds it.
///
/// Attention is placed by *downsample factor* (`attention_ds`), as in guided
/// diffusion; torchcfm's `attention_resolutions="16"` on a 32×32 image is
/// factor 2, on a 28×28 image factor `28 / 16 = 1`. The middle block always
/// has attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Image channels (input and output).
    pub in_channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Base channel count `C` (torchcfm's `num_channels`); the time embedding has `4C`.
    pub model_channels: usize,
    /// Residual blocks per level on the way down (one more per level on the way up).
    pub num_res_blocks: usize,
    /// Channel multiplier of each level; `len − 1` downsamplings.
    pub channel_mult: Vec<usize>,
    /// Downsample factors (1, 2, 4, …) at which self-attention follows each residual block.
    pub attention_ds: Vec<usize>,
    /// Attention heads (used when `num_head_channels` is `None`).
    pub num_heads: usize,
    /// Channels per attention head; overrides `num_heads` when set.
    #[serde(default)]
    pub num_head_channels: Option<usize>,
    /// Dropout probability inside the residual blocks (training only).
    #[serde(default)]
    pub dropout: f64,
    /// Number of classes of a class-conditional model; the label embedding then
    /// has `num_classes + 1` rows, the last being the null class `∅` of
    /// classifier-free guidance.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// Groups of every GroupNorm (32 in guided diffusion; every channel count must be a multiple).
    #[serde(default = "default_groups")]
    pub norm_groups: usize,
}

fn default_groups() -> usize {
    32
}

/// The U-Net presets of `fm train --model unet --preset NAME`.
pub const PRESET_NAMES: &[&str] = &["tiny", "mnist", "cifar10"];

impl UNetConfig {
    /// A preset for images of shape `(channels, height, width)`:
    ///
    /// - `tiny`: 8 channels, 1 residual block, `channel_mult [1, 2]`, attention at
    ///   factor 2, 4 norm groups — a few thousand parameters for CPU tests.
    /// - `mnist`: torchcfm's MNIST example (`num_channels 32`, `num_res_blocks 1`,
    ///   `channel_mult [1, 2, 2]`, `attention_resolutions "16"`, i.e. factor
    ///   `width / 16`, one head, no dropout).
    /// - `cifar10`: torchcfm's CIFAR-10 recipe (128 channels, 2 residual blocks,
    ///   `channel_mult [1, 2, 2, 2]`, attention at 16 (factor `width / 16`),
    ///   64 channels per head, dropout 0.1).
    pub fn preset(name: &str, channels: usize, height: usize, width: usize) -> Result<Self> {
        let at16 = (width / 16).max(1);
        let base = |model_channels, num_res_blocks, channel_mult: Vec<usize>| Self {
            in_channels: channels,
            height,
            width,
            model_channels,
            num_res_blocks,
            channel_mult,
            attention_ds: vec![at16],
            num_heads: 1,
            num_head_channels: None,
            dropout: 0.0,
            num_classes: None,
            norm_groups: 32,
        };
        let c = match name {
            "tiny" => Self { attention_ds: vec![2], norm_groups: 4, ..base(8, 1, vec![1, 2]) },
            "mnist" => base(32, 1, vec![1, 2, 2]),
            "cifar10" => Self { num_head_channels: Some(64), dropout: 0.1, ..base(128, 2, vec![1, 2, 2, 2]) },
            other => {
                return Err(Error::Config {
                    field: "preset",
                    reason: format!("unknown U-Net preset `{other}`; valid: {}", PRESET_NAMES.join(", ")),
                })
            }
        };
        c.validate()?;
        Ok(c)
    }

    /// Values per image, `in_channels · height · width`.
    pub fn dim(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    /// Width of the time (and label) embedding, `4C`.
    pub fn embed_dim(&self) -> usize {
        4 * self.model_channels
    }

    /// Attention heads of a block with `ch` channels.
    pub fn heads(&self, ch: usize) -> usize {
        match self.num_head_channels {
            Some(k) if k > 0 => (ch / k).max(1),
            _ => self.num_heads.max(1),
        }
    }

    /// Checks the configuration; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.in_channels == 0 || self.height == 0 || self.width == 0 {
            return bad(
                "dim",
                format!("image shape {}×{}×{} has a zero", self.in_channels, self.height, self.width),
            );
        }
        if self.model_channels == 0 {
            return bad("model_channels", "must be at least 1".into());
        }
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return bad("channel_mult", format!("needs positive multipliers, got {:?}", self.channel_mult));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("must lie in [0, 1), got {}", self.dropout));
        }
        if self.num_classes == Some(0) {
            return bad("num_classes", "a class-conditional model needs at least 1 class".into());
        }
        if self.norm_groups == 0 {
            return bad("norm_groups", "must be at least 1".into());
        }
        let levels = self.channel_mult.len() - 1;
        if self.height >> levels == 0 || self.width >> levels == 0 {
            return bad(
                "channel_mult",
                format!("{levels} downsamplings do not fit a {}×{} image", self.height, self.width),
            );
        }
        for &m in &self.channel_mult {
            let ch = m * self.model_channels;
            if !ch.is_multiple_of(self.norm_groups) {
                return bad(
                    "norm_groups",
                    format!("{} groups do not divide the {ch} channels of a level", self.norm_groups),
                );
            }
            let heads = self.heads(ch);
            if !ch.is_multiple_of(heads) {
                return bad("num_heads", format!("{heads} heads do not divide {ch} channels"));
            }
        }
        Ok(())
    }

    /// The layer plan (torchcfm's construction order).
    pub(crate) fn plan(&self) -> Plan {
        let mc = self.model_channels;
        let mut ch = self.channel_mult[0] * mc;
        let mut input_blocks = vec![vec![Layer::Conv { cin: self.in_channels, cout: ch }]];
        let mut chans = vec![ch];
        let mut ds = 1;
        let last = self.channel_mult.len() - 1;
        for (level, &mult) in self.channel_mult.iter().enumerate() {
            for _ in 0..self.num_res_blocks {
                let mut layers = vec![Layer::Res { cin: ch, cout: mult * mc }];
                ch = mult * mc;
                if self.attention_ds.contains(&ds) {
                    layers.push(Layer::Attn { ch });
                }
                input_blocks.push(layers);
                chans.push(ch);
            }
            if level != last {
                input_blocks.push(vec![Layer::Down { ch }]);
                chans.push(ch);
                ds *= 2;
            }
        }
        let middle =
            vec![Layer::Res { cin: ch, cout: ch }, Layer::Attn { ch }, Layer::Res { cin: ch, cout: ch }];
        let mut output_blocks = Vec::new();
        for (level, &mult) in self.channel_mult.iter().enumerate().rev() {
            for i in 0..=self.num_res_blocks {
                let ich = chans.pop().unwrap_or(0);
                let mut layers = vec![Layer::Res { cin: ch + ich, cout: mc * mult }];
                ch = mc * mult;
                if self.attention_ds.contains(&ds) {
                    layers.push(Layer::Attn { ch });
                }
                if level > 0 && i == self.num_res_blocks {
                    layers.push(Layer::Up { ch });
                    ds /= 2;
                }
                output_blocks.push(layers);
            }
        }
        Plan { input_blocks, middle, output_blocks, out_ch: ch }
    }

    /// Names and shapes of every parameter, with torchcfm's state-dict names
    /// (`time_embed.0.weight`, `input_blocks.1.0.in_layers.2.weight`, …).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.parameters().into_iter().map(|p| (p.name, p.shape)).collect()
    }

    /// The number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// Every parameter with its initialisation.
    pub(crate) fn parameters(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        let (mc, emb) = (self.model_channels, self.embed_dim());
        linear(&mut out, "time_embed.0", mc, emb, false);
        linear(&mut out, "time_embed.2", emb, emb, false);
        if let Some(k) = self.num_classes {
            out.push(ParamSpec {
                name: "label_emb.weight".into(),
                shape: vec![k + 1, emb],
                init: Init::Normal,
            });
        }
        let plan = self.plan();
        for (i, block) in plan.input_blocks.iter().enumerate() {
            for (j, layer) in block.iter().enumerate() {
                layer.parameters(&format!("input_blocks.{i}.{j}"), emb, &mut out);
            }
        }
        for (j, layer) in plan.middle.iter().enumerate() {
            layer.parameters(&format!("middle_block.{j}"), emb, &mut out);
        }
        for (i, block) in plan.output_blocks.iter().enumerate() {
            for (j, layer) in block.iter().enumerate() {
                layer.parameters(&format!("output_blocks.{i}.{j}"), emb, &mut out);
            }
        }
        norm(&mut out, "out.0", plan.out_ch);
        conv(&mut out, "out.2", plan.out_ch, self.in_channels, 3, true);
        out
    }
}

/// How a parameter is initialised (PyTorch's defaults, guided diffusion's zero modules).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Init {
    /// Uniform in `±1/√fan_in` (PyTorch's `Linear`/`Conv` default, weights and biases).
    Uniform { fan_in: usize },
    /// Zeros (`zero_module`, GroupNorm bias).
    Zeros,
    /// Ones (GroupNorm weight).
    Ones,
    /// Standard normal (`nn.Embedding`).
    Normal,
}

/// A parameter: name, shape, initialisation.
#[derive(Debug, Clone)]
pub(crate) struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// One layer of the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Layer {
    /// The input 3×3 convolution.
    Conv { cin: usize, cout: usize },
    /// A residual block.
    Res { cin: usize, cout: usize },
    /// Self-attention.
    Attn { ch: usize },
    /// Strided 3×3 convolution (`op`).
    Down { ch: usize },
    /// Nearest ×2 then 3×3 convolution (`conv`).
    Up { ch: usize },
}

impl Layer {
    fn parameters(&self, p: &str, emb: usize, out: &mut Vec<ParamSpec>) {
        match *self {
            Layer::Conv { cin, cout } => conv(out, p, cin, cout, 3, false),
            Layer::Res { cin, cout } => {
                norm(out, &format!("{p}.in_layers.0"), cin);
                conv(out, &format!("{p}.in_layers.2"), cin, cout, 3, false);
                linear(out, &format!("{p}.emb_layers.1"), emb, cout, false);
                norm(out, &format!("{p}.out_layers.0"), cout);
                conv(out, &format!("{p}.out_layers.3"), cout, cout, 3, true);
                if cin != cout {
                    conv(out, &format!("{p}.skip_connection"), cin, cout, 1, false);
                }
            }
            Layer::Attn { ch } => {
                norm(out, &format!("{p}.norm"), ch);
                conv1d(out, &format!("{p}.qkv"), ch, 3 * ch, false);
                conv1d(out, &format!("{p}.proj_out"), ch, ch, true);
            }
            Layer::Down { ch } => conv(out, &format!("{p}.op"), ch, ch, 3, false),
            Layer::Up { ch } => conv(out, &format!("{p}.conv"), ch, ch, 3, false),
        }
    }
}

fn linear(out: &mut Vec<ParamSpec>, p: &str, fan_in: usize, fan_out: usize, zero: bool) {
    let init = if zero { Init::Zeros } else { Init::Uniform { fan_in } };
    out.push(ParamSpec { name: format!("{p}.weight"), shape: vec![fan_out, fan_in], init });
    out.push(ParamSpec { name: format!("{p}.bias"), shape: vec![fan_out], init });
}

fn conv(out: &mut Vec<ParamSpec>, p: &str, cin: usize, cout: usize, k: usize, zero: bool) {
    let init = if zero { Init::Zeros } else { Init::Uniform { fan_in: cin * k * k } };
    out.push(ParamSpec { name: format!("{p}.weight"), shape: vec![cout, cin, k, k], init });
    out.push(ParamSpec { name: format!("{p}.bias"), shape: vec![cout], init });
}

fn conv1d(out: &mut Vec<ParamSpec>, p: &str, cin: usize, cout: usize, zero: bool) {
    let init = if zero { Init::Zeros } else { Init::Uniform { fan_in: cin } };
    out.push(ParamSpec { name: format!("{p}.weight"), shape: vec![cout, cin, 1], init });
    out.push(ParamSpec { name: format!("{p}.bias"), shape: vec![cout], init });
}

fn norm(out: &mut Vec<ParamSpec>, p: &str, ch: usize) {
    out.push(ParamSpec { name: format!("{p}.weight"), shape: vec![ch], init: Init::Ones });
    out.push(ParamSpec { name: format!("{p}.bias"), shape: vec![ch], init: Init::Zeros });
}

/// The U-Net's layers in torchcfm's order.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub input_blocks: Vec<Vec<Layer>>,
    pub middle: Vec<Layer>,
    pub output_blocks: Vec<Vec<Layer>>,
    pub out_ch: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchcfm's CIFAR-10 layout (peers.md): 12 input and 12 output blocks,
    /// downsamples at 3, 6, 9, attention in input blocks 4, 5 and output blocks
    /// 6, 7, 8, upsamples at 2.1, 5.1, 8.2.
    #[test]
    fn cifar10_layout_matches_torchcfm() -> Result<()> {
        let c = UNetConfig::preset("cifar10", 3, 32, 32)?;
        let names: Vec<String> = c.parameter_shapes().into_iter().map(|(n, _)| n).collect();
        let has = |n: &str| names.iter().any(|x| x == n);
        assert!(has("input_blocks.11.0.in_layers.0.weight") && !has("input_blocks.12.0.in_layers.0.weight"));
        for d in [3, 6, 9] {
            assert!(has(&format!("input_blocks.{d}.0.op.weight")), "downsample {d}");
        }
        for a in [4, 5] {
            assert!(has(&format!("input_blocks.{a}.1.qkv.weight")), "attention in {a}");
        }
        assert!(!has("input_blocks.1.1.qkv.weight") && !has("input_blocks.7.1.qkv.weight"));
        for a in [6, 7, 8] {
            assert!(has(&format!("output_blocks.{a}.1.qkv.weight")), "attention out {a}");
        }
        for u in [
            "output_blocks.2.1.conv.weight",
            "output_blocks.5.1.conv.weight",
            "output_blocks.8.2.conv.weight",
        ] {
            assert!(has(u), "{u}");
        }
        assert!(has("middle_block.1.qkv.weight") && has("out.2.weight") && has("time_embed.2.weight"));
        // torchcfm's CIFAR-10 U-Net: 35,746,307 parameters.
        assert_eq!(c.num_parameters(), 35_746_307);
        Ok(())
    }

    #[test]
    fn presets_validate_and_bad_configs_name_the_field() {
        for p in PRESET_NAMES {
            assert!(UNetConfig::preset(p, 1, 28, 28).is_ok(), "{p}");
        }
        let err = |c: UNetConfig| c.validate().err().map(|e| e.to_string()).unwrap_or_default();
        let Ok(base) = UNetConfig::preset("mnist", 1, 28, 28) else { panic!("mnist preset") };
        assert!(err(UNetConfig { norm_groups: 5, ..base.clone() }).contains("norm_groups"));
        assert!(
            err(UNetConfig { channel_mult: vec![1, 1, 1, 1, 1, 1], ..base.clone() }).contains("channel_mult")
        );
        assert!(err(UNetConfig { dropout: 1.0, ..base.clone() }).contains("dropout"));
        assert!(err(UNetConfig { num_classes: Some(0), ..base }).contains("num_classes"));
        assert!(UNetConfig::preset("huge", 1, 28, 28).is_err());
    }
}
