//! The U-Net ([`UNet`], torchcfm's layout) on images: flow matching with the
//! scheduler path or a matcher, class conditioning with label dropout, and
//! dropout masks from their own stream.

use std::cell::RefCell;
use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use fm_core::coupling::Coupling;
use fm_core::loss::cfm_batch_loss;
use fm_core::matcher::matcher_batch_loss;
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_models::unet::{UNet as UNetNet, UNetConfig, PRESET_NAMES};
use fm_models::{ModelConfig, VelocityNet};
use serde_json::{Map, Value};

use super::velocity::{self, VelocityModel};
use super::{finite, Family, StepContext, TrainedModel, Trainer};
use crate::data::ImageInfo;
use crate::error::bail;
use crate::settings::{self, Defaults, Objective, UNetSpec};
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, TrainingData};

/// The default label dropout with `--class-cond`.
pub const DEFAULT_LABEL_DROPOUT: f64 = 0.1;

/// The U-Net family.
#[derive(Debug)]
pub(crate) struct UNet;

impl UNetSpec {
    /// The spec of a `--model unet` configuration.
    fn of_config(c: &RunConfig) -> Result<Self> {
        let preset = c.preset.clone().unwrap_or_else(|| "mnist".into());
        if !PRESET_NAMES.contains(&preset.as_str()) {
            bail!("--preset: unknown U-Net preset `{preset}`; valid: {}", PRESET_NAMES.join(", "));
        }
        settings::refuse(
            c,
            &["--hidden", "--activation", "--noise", "--columns"],
            "does not apply to --model unet",
        )?;
        let class_cond = c.class_cond.unwrap_or(false);
        if c.label_dropout.is_some() && !class_cond {
            bail!("--label-dropout needs --class-cond");
        }
        if let Some(p) = c.label_dropout {
            if !(0.0..1.0).contains(&p) {
                bail!("--label-dropout must lie in [0, 1), got {p}");
            }
        }
        let attention_res = match c.attention_res.as_deref() {
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
        Ok(Self {
            preset,
            channels: c.channels,
            channel_mult: c.channel_mult.clone(),
            res_blocks: c.res_blocks,
            attention_res,
            dropout: c.dropout,
            class_cond,
            exact: None,
            average_velocity: false,
        })
    }

    /// Default steps, batch size and learning rate: `tiny` a few seconds; `mnist`
    /// torchcfm's MNIST notebook (Adam 1e-3, batch 128, about 10 epochs); `cifar10`
    /// torchcfm's CIFAR-10 script (lr 2e-4, batch 128, 400k steps).
    fn defaults(&self) -> (usize, usize, f64) {
        match self.preset.as_str() {
            "tiny" => (20, 16, 1e-3),
            "cifar10" => (400_000, 128, 2e-4),
            _ => (5000, 128, 1e-3),
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
                && c.channel_mult
                    .iter()
                    .chain([1].iter())
                    .any(|m| !m.saturating_mul(ch).is_multiple_of(c.norm_groups))
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
        c.average_velocity = self.average_velocity;
        c.validate().context("--model unet")?;
        Ok(c)
    }
}

impl Family for UNet {
    fn name(&self) -> &'static str {
        "unet"
    }

    fn accepts(&self, name: &str) -> bool {
        matches!(name.to_ascii_lowercase().as_str(), "unet" | "u-net")
    }

    fn owns(&self, model: &ModelConfig) -> bool {
        matches!(model, ModelConfig::UNet(c) if !c.average_velocity)
    }

    fn resolve(&'static self, c: &RunConfig) -> Result<RunSettings> {
        let (mut s, spec) = resolve_images(self, c)?;
        if let Some(m) = &s.flow_matching.matcher {
            if spec.class_cond && m.coupling() != Coupling::Independent {
                bail!("--class-cond with a minibatch coupling (--coupling/--matcher otcfm/sbcfm) is not supported: the coupling would separate images from their labels");
            }
        }
        s.network.label_dropout = spec.class_cond.then(|| c.label_dropout.unwrap_or(DEFAULT_LABEL_DROPOUT));
        s.network.unet = Some(spec);
        Ok(s)
    }

    fn config_of_record(&self, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
        config_of_record(self, r, model)
    }

    fn resume(&'static self, record: &RunRecord, model: &ModelConfig) -> Result<RunSettings> {
        resume(self, record, model)
    }

    fn configure(&self, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
        configure(self, s, data)
    }

    fn trainer(
        &self,
        model: &ModelConfig,
        s: &RunSettings,
        _data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>> {
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (net, varmap) = VelocityNet::init(model, &mut init_rng, DType::F32, device)?;
        let VelocityNet::UNet(net) = net else { bail!("not a U-Net configuration") };
        Ok(Box::new(UNetTrainer {
            net,
            varmap,
            path: AffinePath::new(s.flow_matching.scheduler),
            label_rng: SeededRng::for_stream(s.seed, "labels"),
            dropout_rng: RefCell::new(SeededRng::for_stream(s.seed, "dropout")),
        }))
    }

    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>> {
        Ok(Box::new(VelocityModel::load(model, tensors, record, device)?))
    }

    fn record(&self, s: &RunSettings, r: &mut RunRecord) {
        velocity::record(s, r);
        r.label_dropout = s.network.label_dropout;
    }

    fn describe_model(&self, model: &ModelConfig) -> String {
        describe(model)
    }

    fn describe_objective(&self, s: &RunSettings) -> String {
        velocity::describe(s)
    }

    fn describe_path(&self, s: &RunSettings) -> String {
        velocity::describe_path(s)
    }
}

/// The settings every U-Net family shares: the network's spec, the data
/// (images), the budget's defaults and the flow-matching settings (plain CFM).
pub(crate) fn resolve_images(family: &'static dyn Family, c: &RunConfig) -> Result<(RunSettings, UNetSpec)> {
    let name = family.name();
    if c.layers.is_some() {
        bail!("--layers only applies to --model planar or realnvp");
    }
    let spec = UNetSpec::of_config(c)?;
    if c.data.is_none() {
        bail!("--model {name} needs image data: --data mnist:DIR, fashion-mnist:DIR, cifar10:DIR, digits:FILE or png:DIR");
    }
    let (steps, batch_size, lr) = spec.defaults();
    let mut s = settings::common(
        c,
        family,
        Defaults { data: None, noise: None, steps, batch_size, lr, out_stem: c.preset.clone() },
    )?;
    let fm = settings::flow_matching(c)?;
    if !(fm.objective == Objective::Cfm && fm.spec.is_plain_cfm()) {
        bail!(
            "--model {name} trains by plain CFM on its path: --objective efm|likelihood, --parametrization, \
             --weighting and --jacobian-reg apply to the MLP only"
        );
    }
    s.preset = Some(spec.preset.clone());
    s.flow_matching = fm;
    Ok((s, spec))
}

/// The configuration that reproduces a U-Net run (`--model` of `family`).
pub(crate) fn config_of_record(family: &dyn Family, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
    let ModelConfig::UNet(u) = model else { bail!("not a U-Net checkpoint") };
    let mut c = RunConfig::of_record(r);
    c.model = Some(family.name().into());
    c.class_cond = u.num_classes.is_some().then_some(true);
    c.label_dropout = r.label_dropout;
    velocity::config_of_record(r, &mut c);
    Ok(c)
}

/// A resumed U-Net run's settings, with the checkpoint's exact network.
pub(crate) fn resume(
    family: &'static dyn Family,
    record: &RunRecord,
    model: &ModelConfig,
) -> Result<RunSettings> {
    let ModelConfig::UNet(u) = model else { bail!("not a U-Net checkpoint") };
    let mut s = family.resolve(&family.config_of_record(record, model)?)?;
    if let Some(spec) = &mut s.network.unet {
        spec.exact = Some(u.clone());
    }
    velocity::restore(&mut s, record)?;
    Ok(s)
}

/// The U-Net of a new run on image `data`.
pub(crate) fn configure(family: &dyn Family, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
    let spec = s.network.unet.as_ref().context("the U-Net's settings are missing")?;
    let info = data
        .image_info()
        .with_context(|| format!("--model {} needs image data (--data mnist:DIR, ...)", family.name()))?;
    Ok(ModelConfig::UNet(spec.build(info, data.num_classes())?))
}

/// One line naming a U-Net: channels, levels, attention, parameters.
pub(crate) fn describe(model: &ModelConfig) -> String {
    let ModelConfig::UNet(c) = model else { return format!("{model:?}") };
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
        model.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>()
    )
}

/// Replaces each label by the null class `∅ = null` with probability `p` (draws from `rng`).
fn drop_labels(labels: &Tensor, p: f64, null: u32, rng: &mut SeededRng) -> Result<Tensor> {
    let v = labels.to_vec1::<u32>()?;
    if p == 0.0 {
        return Ok(labels.clone());
    }
    let u = rng.uniform_vec(v.len(), 0.0, 1.0);
    let out: Vec<u32> = v.iter().zip(u).map(|(&l, u)| if u < p { null } else { l }).collect();
    Ok(Tensor::from_vec(out, v.len(), labels.device())?)
}

struct UNetTrainer {
    net: Box<UNetNet>,
    varmap: VarMap,
    path: AffinePath<SchedulerKind>,
    /// Label dropout draws (class-conditional runs).
    label_rng: SeededRng,
    /// Dropout masks inside the U-Net.
    dropout_rng: RefCell<SeededRng>,
}

impl Trainer for UNetTrainer {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<f64> {
        let (x1, labels) = cx.data.batch_with_labels(cx.settings.batch_size, cx.data_rng)?;
        let x1 = x1.to_device(cx.device)?;
        let labels = labels.map(|l| l.to_device(cx.device)).transpose()?;
        let labels = match (self.net.null_class(), labels) {
            (Some(null), Some(l)) => {
                let p = cx.settings.network.label_dropout.unwrap_or(0.0);
                Some(drop_labels(&l, p, null, &mut self.label_rng)?)
            }
            (Some(_), None) => bail!("the class-conditional U-Net needs labelled data"),
            (None, _) => None,
        };
        let field = self.net.conditioned(labels.as_ref(), Some(&self.dropout_rng));
        let loss = match &cx.settings.flow_matching.matcher {
            Some(m) => matcher_batch_loss(&field, m, &x1, cx.train_rng)?,
            None => cfm_batch_loss(&field, &self.path, &x1, cx.train_rng)?,
        };
        let value = finite(&loss)?;
        cx.opt.backward_step(&loss)?;
        Ok(value)
    }

    fn state(&self) -> Map<String, Value> {
        label_and_dropout_state(&self.label_rng, &self.dropout_rng)
    }

    fn restore(&mut self, state: &Map<String, Value>, _cx: &mut StepContext<'_>) -> Result<()> {
        restore_label_and_dropout(state, &mut self.label_rng, &self.dropout_rng)
    }
}

/// The positions of a trainer's label-dropout and dropout streams, for the resume file.
pub(crate) fn label_and_dropout_state(
    label_rng: &SeededRng,
    dropout_rng: &RefCell<SeededRng>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("label_rng".into(), label_rng.position().to_string().into());
    m.insert("dropout_rng".into(), dropout_rng.borrow().position().to_string().into());
    m
}

/// Restores [`label_and_dropout_state`].
pub(crate) fn restore_label_and_dropout(
    state: &Map<String, Value>,
    label_rng: &mut SeededRng,
    dropout_rng: &RefCell<SeededRng>,
) -> Result<()> {
    if let Some(p) = state.get("label_rng") {
        label_rng.set_position(position(p, "label")?);
    }
    if let Some(p) = state.get("dropout_rng") {
        dropout_rng.borrow_mut().set_position(position(p, "dropout")?);
    }
    Ok(())
}

/// A stream position saved as a decimal string (it is 128-bit).
pub(crate) fn position(v: &Value, name: &str) -> Result<u128> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("the resume file's {name} stream position `{v}` is not a number"))
}
