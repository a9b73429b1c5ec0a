//! `fm train --model unet`: the U-Net's settings (preset and overrides),
//! its default hyper-parameters, and class labels with label dropout.

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor};
use fm_core::SeededRng;
use fm_models::unet::{UNetConfig, PRESET_NAMES};
use fm_models::ModelConfig;

use super::settings::RunOptions;
use crate::cli::TrainArgs;
use crate::data::ImageInfo;

/// Whether `--model` asks for the U-Net.
pub fn is_unet_model(model: Option<&str>) -> bool {
    matches!(model.map(|m| m.to_ascii_lowercase()).as_deref(), Some("unet" | "u-net"))
}

/// The U-Net of a run: a preset with overrides, or (resumed runs) an exact configuration.
#[derive(Debug, Clone)]
pub struct UNetSpec {
    pub preset: String,
    pub channels: Option<usize>,
    pub channel_mult: Option<Vec<usize>>,
    pub res_blocks: Option<usize>,
    /// Attention resolutions (image widths); `Some(vec![])` is the middle block only.
    pub attention_res: Option<Vec<usize>>,
    pub dropout: Option<f64>,
    pub class_cond: bool,
    /// The exact configuration of a resumed run.
    pub exact: Option<UNetConfig>,
}

/// Default steps, batch size and learning rate of a U-Net preset.
pub struct UNetDefaults {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
}

impl UNetSpec {
    /// The spec of `--model unet` (`None` for other models); refuses the U-Net
    /// flags with other models.
    pub fn from_args(a: &TrainArgs) -> Result<Option<Self>> {
        let u = &a.unet;
        if !is_unet_model(a.model.as_deref()) {
            let given = [
                ("--channels", u.channels.is_some()),
                ("--channel-mult", u.channel_mult.is_some()),
                ("--res-blocks", u.res_blocks.is_some()),
                ("--attention-res", u.attention_res.is_some()),
                ("--dropout", u.dropout.is_some()),
                ("--class-cond", u.class_cond),
                ("--label-dropout", u.label_dropout.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
                bail!("{flag} only applies to --model unet");
            }
            return Ok(None);
        }
        let preset = a.preset.clone().unwrap_or_else(|| "mnist".into());
        if !PRESET_NAMES.contains(&preset.as_str()) {
            bail!("--preset: unknown U-Net preset `{preset}`; valid: {}", PRESET_NAMES.join(", "));
        }
        for (flag, given) in [
            ("--hidden", a.hidden.is_some()),
            ("--activation", a.activation.is_some()),
            ("--noise", a.noise.is_some()),
            ("--columns", a.columns.is_some()),
        ] {
            if given {
                bail!("{flag} does not apply to --model unet");
            }
        }
        if u.label_dropout.is_some() && !u.class_cond {
            bail!("--label-dropout needs --class-cond");
        }
        if let Some(p) = u.label_dropout {
            if !(0.0..1.0).contains(&p) {
                bail!("--label-dropout must lie in [0, 1), got {p}");
            }
        }
        let attention_res = match u.attention_res.as_deref() {
            None => None,
            Some("none") | Some("") => Some(vec![]),
            Some(list) => Some(
                list.split(',')
                    .map(|r| r.trim().parse::<usize>().ok().filter(|&r| r > 0))
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| {
                        format!("--attention-res `{list}`: expected widths like 16,8 or `none`")
                    })?,
            ),
        };
        Ok(Some(Self {
            preset,
            channels: u.channels,
            channel_mult: u.channel_mult.clone(),
            res_blocks: u.res_blocks,
            attention_res,
            dropout: u.dropout,
            class_cond: u.class_cond,
            exact: None,
        }))
    }

    /// The spec of a resumed run.
    pub fn exact(preset: Option<String>, config: UNetConfig) -> Self {
        Self {
            preset: preset.unwrap_or_else(|| "mnist".into()),
            channels: None,
            channel_mult: None,
            res_blocks: None,
            attention_res: None,
            dropout: None,
            class_cond: config.num_classes.is_some(),
            exact: Some(config),
        }
    }

    /// Default steps, batch size and learning rate: `tiny` a few seconds; `mnist`
    /// torchcfm's MNIST notebook (Adam 1e-3, batch 128, about 10 epochs); `cifar10`
    /// torchcfm's CIFAR-10 script (lr 2e-4, batch 128, 400k steps).
    pub fn defaults(&self) -> UNetDefaults {
        match self.preset.as_str() {
            "tiny" => UNetDefaults { steps: 20, batch_size: 16, lr: 1e-3 },
            "cifar10" => UNetDefaults { steps: 400_000, batch_size: 128, lr: 2e-4 },
            _ => UNetDefaults { steps: 5000, batch_size: 128, lr: 1e-3 },
        }
    }

    /// The configuration for images of shape `info` (`num_classes` from the data's labels).
    pub fn build(&self, info: ImageInfo, num_classes: Option<usize>) -> Result<UNetConfig> {
        if let Some(c) = &self.exact {
            return Ok(c.clone());
        }
        let mut c = UNetConfig::preset(&self.preset, info.channels, info.height, info.width)?;
        if let Some(ch) = self.channels {
            c.model_channels = ch;
            // Fewer than 32 channels: halve the GroupNorm groups until they divide every level.
            while c.norm_groups > 1
                && c.channel_mult.iter().chain([1].iter()).any(|m| !(m * ch).is_multiple_of(c.norm_groups))
            {
                c.norm_groups /= 2;
            }
        }
        if let Some(m) = &self.channel_mult {
            c.channel_mult = m.clone();
        }
        if let Some(n) = self.res_blocks {
            c.num_res_blocks = n;
        }
        if let Some(res) = &self.attention_res {
            c.attention_ds = res.iter().map(|r| (info.width / r).max(1)).collect();
        }
        if let Some(p) = self.dropout {
            c.dropout = p;
        }
        if self.class_cond {
            let k = num_classes.context("--class-cond: the dataset has no labels")?;
            c.num_classes = Some(k);
        }
        c.validate().context("--model unet")?;
        Ok(c)
    }
}

/// The default label dropout with `--class-cond`.
pub const DEFAULT_LABEL_DROPOUT: f64 = 0.1;

/// Replaces each label by the null class `∅ = null` with probability `p` (draws from `rng`).
pub fn drop_labels(labels: &Tensor, p: f64, null: u32, rng: &mut SeededRng) -> Result<Tensor> {
    let v = labels.to_vec1::<u32>()?;
    if p == 0.0 {
        return Ok(labels.clone());
    }
    let u = rng.uniform_vec(v.len(), 0.0, 1.0);
    let out: Vec<u32> = v.iter().zip(u).map(|(&l, u)| if u < p { null } else { l }).collect();
    Ok(Tensor::from_vec(out, v.len(), &Device::Cpu)?)
}

/// Sampling defaults after training an image model: fewer samples and steps
/// than for points (each sample is a U-Net solve), unless given.
pub fn image_run_options(a: &TrainArgs, o: &mut RunOptions) {
    if a.sample_n.is_none() {
        o.sample_n = 100;
    }
    if a.sample_steps.is_none() {
        o.sample_steps = 20;
    }
}

/// One line describing the U-Net (for the training log).
pub fn describe(c: &UNetConfig) -> String {
    let attn: Vec<String> = c
        .attention_ds
        .iter()
        .map(|ds| format!("{}×{}", c.height.div_ceil(*ds), c.width.div_ceil(*ds)))
        .collect();
    format!(
        "U-Net ({} channels, mult {:?}, {} res blocks, attention at {}{}{}, {} parameters)",
        c.model_channels,
        c.channel_mult,
        c.num_res_blocks,
        if attn.is_empty() {
            "the middle block only".to_string()
        } else {
            format!("{} and the middle block", attn.join(", "))
        },
        if c.dropout > 0.0 { format!(", dropout {}", c.dropout) } else { String::new() },
        match c.num_classes {
            Some(k) => format!(", {k} classes + ∅"),
            None => String::new(),
        },
        ModelConfig::UNet(c.clone())
            .parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum::<usize>()
    )
}

/// The optional training features for the log line (empty when none are on).
pub fn describe_training(t: &fm_models::training::TrainingOptions, label_dropout: Option<f64>) -> String {
    let mut parts = Vec::new();
    if t.warmup > 0 {
        parts.push(format!("warm-up {} steps", t.warmup));
    }
    if let Some(c) = t.grad_clip {
        parts.push(format!("grad clip {c}"));
    }
    if let Some(d) = t.ema_decay {
        parts.push(format!("EMA {d}"));
    }
    if let Some(p) = label_dropout {
        parts.push(format!("label dropout {p}"));
    }
    parts.iter().map(|p| format!(", {p}")).collect()
}
