//! The U-Net's configuration, its presets, and the layer plan shared by the
//! model builder and the checkpoint's parameter list.

use serde::{Deserialize, Serialize};

use crate::{limits, Error, Result};

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
    /// A network of the *average* velocity `ū(x, s, t)` (MeanFlow,
    /// [`fm_core::mean_flow`]): a second embedding MLP (`interval_embed.{0,2}`,
    /// the time embedding's shape) of the interval `t − s` is added to the time
    /// embedding of `s`. `false` (the default) is torchcfm's U-Net.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub average_velocity: bool,
    /// Output channels when they differ from the input's (discrete flow
    /// matching: one-hot tokens in, one logit per token value out); `None`
    /// (the default) is `in_channels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_channels: Option<usize>,
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
            average_velocity: false,
            out_channels: None,
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

    /// Channels of the output (`out_channels`, else `in_channels`).
    pub fn output_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Values per image, `in_channels · height · width` (saturating: a
    /// configuration that passes [`UNetConfig::validate`] has at most
    /// [`limits::MAX_TENSOR_ELEMENTS`]).
    pub fn dim(&self) -> usize {
        self.in_channels.saturating_mul(self.height).saturating_mul(self.width)
    }

    /// Width of the time (and label) embedding, `4C`.
    pub fn embed_dim(&self) -> usize {
        self.model_channels.saturating_mul(4)
    }

    /// Attention heads of a block with `ch` channels.
    pub fn heads(&self, ch: usize) -> usize {
        match self.num_head_channels {
            Some(k) if k > 0 => (ch / k).max(1),
            _ => self.num_heads.max(1),
        }
    }

    /// Checks the configuration, sizes included; the error names the field.
    ///
    /// Besides the consistency of the fields (positive sizes, `channel_mult`'s
    /// downsamplings fitting the image, GroupNorm groups and attention heads
    /// dividing every level's channels, `dropout` in `[0, 1)`), the sizes are
    /// bounded ([`crate::limits`]): at most [`limits::MAX_LAYERS`] layers
    /// (`num_res_blocks`), no parameter tensor and no activation of one image
    /// (every level's channels over its pixels, every attention block's
    /// `heads × positions²` weights) above [`limits::MAX_TENSOR_ELEMENTS`]
    /// elements, at most [`limits::MAX_PARAMETERS`] parameters. Every size is
    /// computed with checked arithmetic, so no value makes the check overflow;
    /// a configuration that passes is safe for [`UNetConfig::parameter_shapes`]
    /// and [`crate::unet::UNet::new`].
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
        if self.out_channels == Some(0) {
            return bad("out_channels", "a U-Net needs at least 1 output channel".into());
        }
        if self.num_classes == Some(0) {
            return bad("num_classes", "a class-conditional model needs at least 1 class".into());
        }
        if self.norm_groups == 0 {
            return bad("norm_groups", "must be at least 1".into());
        }
        let dim = limits::mul(self.in_channels, self.height).and_then(|n| n.checked_mul(self.width as u64));
        limits::check_elements(
            "dim",
            &format!("an image of {}×{}×{}", self.in_channels, self.height, self.width),
            dim,
        )?;
        let levels = self.channel_mult.len() - 1;
        let fits =
            |side: usize| u32::try_from(levels).ok().and_then(|l| side.checked_shr(l)).unwrap_or(0) > 0;
        if !fits(self.height) || !fits(self.width) {
            return bad(
                "channel_mult",
                format!("{levels} downsamplings do not fit a {}×{} image", self.height, self.width),
            );
        }
        // The time embedding's `4C × 4C` weight bounds `model_channels` (to 11,585);
        // then every level's channels, `mult · model_channels`.
        let emb = limits::mul(4, self.model_channels);
        limits::check_elements(
            "model_channels",
            &format!("the time embedding's {0} × {0} weight (4 · model_channels)", emb.unwrap_or(u64::MAX)),
            emb.and_then(|e| e.checked_mul(e)),
        )?;
        let mut level_channels = Vec::with_capacity(self.channel_mult.len());
        for &m in &self.channel_mult {
            let ch = limits::mul(m, self.model_channels);
            limits::check_elements(
                "channel_mult",
                &format!("a level of {m} × {} channels", self.model_channels),
                ch,
            )?;
            level_channels.push(ch.unwrap_or(0) as usize);
        }
        limits::check_layers(
            "num_res_blocks",
            "residual blocks per level",
            Some(self.num_res_blocks as u64),
        )?;
        if self.attention_ds.len() > 64 {
            return bad(
                "attention_ds",
                format!(
                    "lists {} downsample factors; a U-Net has at most 64 levels (powers of two)",
                    self.attention_ds.len()
                ),
            );
        }
        if let Some(k) = self.num_classes {
            // The label embedding has `k + 1` rows (the last is the null class),
            // and labels are `u32`.
            if k >= u32::MAX as usize {
                return bad(
                    "num_classes",
                    format!("{k} classes: labels are 32-bit, at most {}", u32::MAX - 1),
                );
            }
        }
        for &ch in &level_channels {
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
        // Its residual blocks alone, `levels · (2 · num_res_blocks + 1)`, bound the
        // plan's size before it is built; then every layer counts.
        let res_blocks = (self.num_res_blocks as u64 * 2 + 1).checked_mul(self.channel_mult.len() as u64);
        limits::check_layers("num_res_blocks", "the U-Net's residual blocks", res_blocks)?;
        let plan = self.plan();
        let layers = plan.input_blocks.iter().chain(&plan.output_blocks).map(Vec::len).sum::<usize>()
            + plan.middle.len();
        limits::check_layers("num_res_blocks", "the U-Net's layers", Some(layers as u64))?;
        self.check_activations(&plan, &level_channels)?;
        let params = self.parameters();
        limits::check_parameter_sizes(
            params.iter().map(|p| (p.name.as_str(), p.shape.as_slice())),
            |name| {
                if name.starts_with("label_emb") {
                    "num_classes"
                } else if name.starts_with("time_embed") {
                    "model_channels"
                } else if name.starts_with("input_blocks.0.0") || name.starts_with("out.2") {
                    "in_channels"
                } else {
                    "channel_mult"
                }
            },
            "model_channels",
        )
    }

    /// Checks one image's activations: at every level, the widest tensor
    /// (channels, skip connections concatenated, over the level's pixels) and
    /// every attention block's weights (`heads × positions²`), including the
    /// middle block's at the deepest level.
    fn check_activations(&self, plan: &Plan, level_channels: &[usize]) -> Result<()> {
        let widest = plan
            .input_blocks
            .iter()
            .chain(&plan.output_blocks)
            .flatten()
            .chain(&plan.middle)
            .map(Layer::widest)
            .max()
            .unwrap_or(0)
            .max(self.in_channels)
            .max(self.output_channels());
        let pixels = limits::mul(self.height, self.width);
        limits::check_elements(
            "dim",
            &format!("one {}×{} image's activations of up to {widest} channels", self.height, self.width),
            pixels.and_then(|p| p.checked_mul(widest as u64)),
        )?;
        let (mut h, mut w, mut ds) = (self.height, self.width, 1usize);
        let deepest = level_channels.len().saturating_sub(1);
        for (level, &ch) in level_channels.iter().enumerate() {
            if level == deepest || self.attention_ds.contains(&ds) {
                let positions = limits::mul(h, w);
                let weights = positions
                    .and_then(|p| p.checked_mul(p))
                    .and_then(|p| p.checked_mul(self.heads(ch) as u64));
                let (field, what) = if self.attention_ds.contains(&ds) {
                    ("attention_ds", format!("attention at downsample factor {ds}"))
                } else {
                    ("channel_mult", "the middle block's attention (at the deepest level)".to_string())
                };
                limits::check_elements(
                    field,
                    &format!("{what}: weights over {h}×{w} positions for one image"),
                    weights,
                )?;
            }
            h = h.div_ceil(2);
            w = w.div_ceil(2);
            ds = ds.saturating_mul(2);
        }
        Ok(())
    }

    /// The layer plan (torchcfm's construction order).
    ///
    /// Total on any configuration (no indexing, saturating arithmetic), but only
    /// meaningful, and bounded in size, on one that passes [`UNetConfig::validate`].
    pub(crate) fn plan(&self) -> Plan {
        let mc = self.model_channels;
        let mut ch = self.channel_mult.first().copied().unwrap_or(1).saturating_mul(mc);
        let mut input_blocks = vec![vec![Layer::Conv { cin: self.in_channels, cout: ch }]];
        let mut chans = vec![ch];
        let mut ds = 1usize;
        let last = self.channel_mult.len().saturating_sub(1);
        for (level, &mult) in self.channel_mult.iter().enumerate() {
            for _ in 0..self.num_res_blocks {
                let mut layers = vec![Layer::Res { cin: ch, cout: mult.saturating_mul(mc) }];
                ch = mult.saturating_mul(mc);
                if self.attention_ds.contains(&ds) {
                    layers.push(Layer::Attn { ch });
                }
                input_blocks.push(layers);
                chans.push(ch);
            }
            if level != last {
                input_blocks.push(vec![Layer::Down { ch }]);
                chans.push(ch);
                ds = ds.saturating_mul(2);
            }
        }
        let middle =
            vec![Layer::Res { cin: ch, cout: ch }, Layer::Attn { ch }, Layer::Res { cin: ch, cout: ch }];
        let mut output_blocks = Vec::new();
        for (level, &mult) in self.channel_mult.iter().enumerate().rev() {
            for i in 0..=self.num_res_blocks {
                let ich = chans.pop().unwrap_or(0);
                let mut layers =
                    vec![Layer::Res { cin: ch.saturating_add(ich), cout: mc.saturating_mul(mult) }];
                ch = mc.saturating_mul(mult);
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
        conv(&mut out, "out.2", plan.out_ch, self.output_channels(), 3, true);
        // Last, so that a seed draws the same U-Net weights with and without it.
        if self.average_velocity {
            linear(&mut out, "interval_embed.0", mc, emb, false);
            linear(&mut out, "interval_embed.2", emb, emb, false);
        }
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
    /// The most channels the layer reads or writes.
    fn widest(&self) -> usize {
        match *self {
            Layer::Conv { cin, cout } | Layer::Res { cin, cout } => cin.max(cout),
            Layer::Attn { ch } => ch.saturating_mul(3),
            Layer::Down { ch } | Layer::Up { ch } => ch,
        }
    }

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
        // Far inside `limits` (quoted there): 304 tensors, the largest 256 × 512 × 3 × 3.
        let shapes = c.parameter_shapes();
        assert_eq!(shapes.len(), 304);
        assert_eq!(shapes.iter().map(|(_, s)| s.iter().product::<usize>()).max(), Some(1_179_648));
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

    /// The field an invalid configuration's error names.
    fn field(c: &UNetConfig) -> &'static str {
        match c.validate() {
            Err(Error::Config { field, .. }) => field,
            Err(other) => panic!("not a configuration error: {other}"),
            Ok(()) => "(valid)",
        }
    }

    #[test]
    fn realistic_large_configurations_stay_valid() -> Result<()> {
        // torchcfm's CIFAR-10 U-Net on 256×256 images with 1000 classes; the
        // MNIST preset with several residual blocks and attention everywhere.
        let c = UNetConfig { num_classes: Some(1000), ..UNetConfig::preset("cifar10", 3, 256, 256)? };
        assert_eq!(field(&c), "(valid)");
        assert!(c.num_parameters() > 30_000_000);
        let m = UNetConfig {
            num_res_blocks: 8,
            attention_ds: vec![1, 2, 4],
            ..UNetConfig::preset("mnist", 1, 64, 64)?
        };
        assert_eq!(field(&m), "(valid)");
        Ok(())
    }

    /// Sizes beyond [`limits`] are errors naming the field, checked without
    /// overflow and before the layer plan or the parameter list is built.
    #[test]
    fn oversized_configurations_name_the_field() -> Result<()> {
        let tiny = UNetConfig::preset("tiny", 1, 8, 8)?;
        let with = |f: &dyn Fn(&mut UNetConfig)| {
            let mut c = tiny.clone();
            f(&mut c);
            field(&c)
        };
        assert_eq!(with(&|c| c.channel_mult = vec![]), "channel_mult");
        assert_eq!(with(&|c| c.channel_mult = vec![1; 70]), "channel_mult");
        assert_eq!(with(&|c| c.channel_mult = vec![1, usize::MAX]), "channel_mult");
        assert_eq!(with(&|c| c.channel_mult = vec![1, 1 << 30]), "channel_mult");
        assert_eq!(with(&|c| c.model_channels = usize::MAX), "model_channels");
        assert_eq!(with(&|c| c.model_channels = 1 << 14), "model_channels");
        assert_eq!(with(&|c| c.num_res_blocks = usize::MAX), "num_res_blocks");
        assert_eq!(with(&|c| c.num_res_blocks = limits::MAX_LAYERS + 1), "num_res_blocks");
        // 4096 blocks per level fit the per-level bound, not the layer count.
        assert_eq!(with(&|c| c.num_res_blocks = limits::MAX_LAYERS), "num_res_blocks");
        assert_eq!(with(&|c| c.attention_ds = vec![1; 65]), "attention_ds");
        assert_eq!(with(&|c| c.num_classes = Some(usize::MAX)), "num_classes");
        assert_eq!(with(&|c| c.num_classes = Some(1 << 30)), "num_classes");
        assert_eq!(with(&|c| c.height = usize::MAX), "dim");
        assert_eq!(with(&|c| c.in_channels = 1 << 40), "dim");
        assert_eq!(with(&|c| c.in_channels = 1 << 25), "in_channels");
        assert_eq!(with(&|c| c.dropout = f64::NAN), "dropout");
        assert_eq!(with(&|c| c.dropout = -0.5), "dropout");
        // Images whose activations or attention outgrow one tensor.
        assert_eq!(with(&|c| (c.height, c.width) = (1 << 14, 1 << 14)), "dim");
        assert_eq!(with(&|c| (c.height, c.width, c.attention_ds) = (512, 512, vec![1])), "attention_ds");
        assert_eq!(with(&|c| (c.height, c.width, c.attention_ds) = (4096, 4096, vec![])), "channel_mult");
        // A tensor count that the layer bound keeps small: every plan is bounded.
        let c = UNetConfig { num_res_blocks: 500, ..tiny.clone() };
        assert_eq!(field(&c), "(valid)");
        assert!(c.parameter_shapes().len() <= limits::MAX_PARAMETER_TENSORS);
        Ok(())
    }

    /// The plan never panics, even on a configuration that does not validate.
    #[test]
    fn plan_is_total() {
        let c = UNetConfig {
            channel_mult: vec![],
            ..UNetConfig::preset("tiny", 1, 8, 8).unwrap_or_else(|_| unreachable!())
        };
        let plan = c.plan();
        assert_eq!(plan.input_blocks.len(), 1);
        let c = UNetConfig { channel_mult: vec![usize::MAX, usize::MAX], model_channels: usize::MAX, ..c };
        let _ = c.plan();
        assert_eq!(c.dim(), 64);
        assert_eq!(c.embed_dim(), usize::MAX);
    }
}
