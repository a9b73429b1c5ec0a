//! `fm convert`: weights between fm checkpoints and torchcfm's PyTorch state
//! dicts (safetensors), both ways; the name map is fm-models' `torchcfm` module.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor};
use clap::Args;
use fm_models::checkpoint;
use fm_models::torchcfm::{self, ImportNotes, TorchFormat, MODEL_METADATA_KEY};
use fm_models::unet::UNetConfig;
use fm_models::{CheckpointConfig, ModelConfig};
use serde_json::json;

use crate::cli::HubArgs;
use crate::io::print_json;
use fm_pipeline::RunRecord;

/// Metadata key of the training record carried by exported files.
const TRAINING_METADATA_KEY: &str = "fm-training";

#[derive(Debug, Args, Clone)]
pub struct ConvertArgs {
    /// Read a PyTorch state dict (.safetensors) in this layout: torchcfm-unet or torchcfm-mlp;
    /// writes an fm checkpoint directory.
    #[arg(long, value_name = "FORMAT", conflicts_with = "to", required_unless_present = "to")]
    pub from: Option<String>,
    /// Write an fm checkpoint's weights as a PyTorch state dict (.safetensors) in this layout:
    /// torchcfm-unet or torchcfm-mlp.
    #[arg(long, value_name = "FORMAT")]
    pub to: Option<String>,
    /// The input: a .safetensors state dict (--from) or an fm checkpoint (--to; also hf://).
    pub input: PathBuf,
    /// --from torchcfm-unet: the U-Net's configuration, a JSON file (an fm config.json, a
    /// {"kind": "u-net", ...} model, or the bare U-Net fields). Not needed for files fm exported.
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// --from torchcfm-unet: a U-Net preset (tiny, mnist, cifar10) with --shape.
    #[arg(long, requires = "shape")]
    pub preset: Option<String>,
    /// Image shape CxHxW for --preset, e.g. 1x28x28 or 3x32x32.
    #[arg(long, value_name = "CxHxW")]
    pub shape: Option<String>,
    /// Classes of a class-conditional U-Net with --preset.
    #[arg(long, value_name = "K")]
    pub num_classes: Option<usize>,
    /// Output: a checkpoint directory (--from) or a .safetensors file (--to).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    match (&a.from, &a.to) {
        (Some(f), None) => from_torch(&a, f.parse().context("--from")?),
        (None, Some(t)) => to_torch(&a, t.parse().context("--to")?),
        _ => bail!("give exactly one of --from FORMAT or --to FORMAT"),
    }
}

fn log(a: &ConvertArgs, s: String) {
    if a.json {
        eprintln!("{s}")
    } else {
        println!("{s}")
    }
}

/// `--preset NAME --shape CxHxW [--num-classes K]` or `--config FILE` as a U-Net configuration.
fn unet_config(a: &ConvertArgs, metadata: &HashMap<String, String>) -> Result<UNetConfig> {
    if let (Some(p), Some(shape)) = (&a.preset, &a.shape) {
        let dims: Vec<usize> = shape
            .split(['x', 'X', ','])
            .map(|d| d.trim().parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .ok()
            .filter(|d: &Vec<usize>| d.len() == 3)
            .with_context(|| format!("--shape {shape}: expected CxHxW, e.g. 1x28x28"))?;
        let c = UNetConfig::preset(p, dims[0], dims[1], dims[2]).context("--preset")?;
        let c = UNetConfig { num_classes: a.num_classes, ..c };
        c.validate().context("--num-classes")?;
        return Ok(c);
    }
    if let Some(path) = &a.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read it", path.display()))?;
        let model = serde_json::from_str::<CheckpointConfig>(&text)
            .map(|c| c.model)
            .or_else(|_| serde_json::from_str::<ModelConfig>(&text));
        return match model {
            Ok(ModelConfig::UNet(u)) => Ok(u),
            Ok(other) => bail!("--config {}: describes a {other:?}, not a U-Net", path.display()),
            Err(_) => serde_json::from_str::<UNetConfig>(&text)
                .with_context(|| format!("--config {}: not a U-Net configuration", path.display())),
        };
    }
    if let Some(json) = metadata.get(MODEL_METADATA_KEY) {
        if let Ok(ModelConfig::UNet(u)) = serde_json::from_str::<ModelConfig>(json) {
            return Ok(u);
        }
    }
    bail!(
        "--from torchcfm-unet needs the U-Net's configuration: --config FILE, or --preset NAME --shape CxHxW \
         [--num-classes K] (the file carries none)"
    )
}

fn from_torch(a: &ConvertArgs, format: TorchFormat) -> Result<()> {
    let device = Device::Cpu;
    let (tensors, metadata) =
        torchcfm::read_state_dict(&a.input, &device).with_context(|| format!("{}", a.input.display()))?;
    let (weights, model, notes): (HashMap<String, Tensor>, ModelConfig, ImportNotes) = match format {
        TorchFormat::TorchcfmUnet => {
            let config = unet_config(a, &metadata)?;
            let (w, notes) = torchcfm::from_torchcfm_unet(&tensors, &config)
                .with_context(|| format!("{} as torchcfm-unet", a.input.display()))?;
            (w, ModelConfig::UNet(config), notes)
        }
        TorchFormat::TorchcfmMlp => torchcfm::from_torchcfm_mlp(&tensors)
            .with_context(|| format!("{} as torchcfm-mlp", a.input.display()))?,
    };
    let mut config = CheckpointConfig::new(model.clone());
    let name = match format {
        TorchFormat::TorchcfmUnet => "torchcfm-unet",
        TorchFormat::TorchcfmMlp => "torchcfm-mlp",
    };
    config.training = match metadata.get(TRAINING_METADATA_KEY) {
        Some(record) => serde_json::from_str(record).context("the file's fm-training metadata")?,
        None => serde_json::to_value(RunRecord {
            data: format!("{name}:{}", a.input.display()),
            objective: "cfm".into(),
            optimizer: "none (converted from PyTorch)".into(),
            command: std::env::args().collect(),
            ..RunRecord::default()
        })?,
    };
    let mut sorted: Vec<(String, Tensor)> = weights.into_iter().collect();
    sorted.sort_by(|x, y| x.0.cmp(&y.0));
    checkpoint::save(&a.out, &config, &sorted).with_context(|| format!("--out {}", a.out.display()))?;
    let mut extra = Vec::new();
    if let Some(p) = &notes.stripped_prefix {
        extra.push(format!("stripped the `{p}` prefix"));
    }
    if notes.added_null_class_row {
        extra.push(
            "appended a zero null-class row to label_emb.weight (classifier-free guidance needs fine-tuning)"
                .into(),
        );
    }
    log(
        a,
        format!(
            "converted {} ({name}, {} tensors) to the fm checkpoint {}{}",
            a.input.display(),
            sorted.len(),
            a.out.display(),
            if extra.is_empty() { String::new() } else { format!("; {}", extra.join("; ")) }
        ),
    );
    if a.json {
        print_json(&json!({
            "out": a.out,
            "from": name,
            "tensors": sorted.len(),
            "model": model,
            "stripped_prefix": notes.stripped_prefix,
            "added_null_class_row": notes.added_null_class_row,
        }))?;
    }
    Ok(())
}

fn to_torch(a: &ConvertArgs, format: TorchFormat) -> Result<()> {
    let source = super::hub::resolve_checkpoint(&a.input, &a.hub, "CHECKPOINT")?;
    let ckpt = checkpoint::load(&source, &Device::Cpu).with_context(|| format!("{}", a.input.display()))?;
    let name = match (format, &ckpt.config.model) {
        (TorchFormat::TorchcfmUnet, ModelConfig::UNet(_)) => "torchcfm-unet",
        (TorchFormat::TorchcfmMlp, ModelConfig::Mlp(_)) => "torchcfm-mlp",
        (_, other) => bail!(
            "--to: checkpoint {} holds a {}, not what {} expects",
            a.input.display(),
            match other {
                ModelConfig::UNet(_) => "U-Net (use --to torchcfm-unet)",
                ModelConfig::Mlp(_) => "MLP (use --to torchcfm-mlp)",
                _ => "normalizing flow (no torchcfm counterpart)",
            },
            format_name(format)
        ),
    };
    if a.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "--out {}: the PyTorch state dict is written as safetensors; give a path ending in .safetensors",
            a.out.display()
        );
    }
    let torch = torchcfm::to_torchcfm(&ckpt.config.model, &ckpt.tensors)?;
    let mut metadata = torchcfm::export_metadata(&ckpt.config.model)?;
    metadata.insert(TRAINING_METADATA_KEY.into(), serde_json::to_string(&ckpt.config.training)?);
    if let Some(dir) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--out {}: cannot create {}", a.out.display(), dir.display()))?;
    }
    torchcfm::write_state_dict(&a.out, &torch, metadata)
        .with_context(|| format!("--out {}", a.out.display()))?;
    let hint = match &ckpt.config.model {
        ModelConfig::UNet(u) => match u.num_classes {
            Some(k) => format!(
                "; load it into torchcfm's UNetModelWrapper(..., num_classes={}, class_cond=True): class {k} is the null class ∅",
                k + 1
            ),
            None => "; load it into torchcfm's UNetModelWrapper with the same sizes".into(),
        },
        ModelConfig::Mlp(c) => format!(
            "; load it into torchcfm.models.MLP(dim={}, w={}, time_varying=True), input cat([x, t])",
            c.dim,
            c.hidden.first().copied().unwrap_or(0)
        ),
        _ => String::new(),
    };
    log(a, format!("wrote {} ({name}, {} tensors){hint}", a.out.display(), torch.len()));
    if a.json {
        print_json(&json!({ "out": a.out, "to": name, "tensors": torch.len() }))?;
    }
    Ok(())
}

fn format_name(f: TorchFormat) -> &'static str {
    match f {
        TorchFormat::TorchcfmUnet => "torchcfm-unet",
        TorchFormat::TorchcfmMlp => "torchcfm-mlp",
    }
}
