//! `fm export --format hub CHECKPOINT --out DIR`: a folder ready to upload to
//! the Hugging Face Hub (weights, configuration, a model card).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::Device;
use clap::Args;
use fm_models::checkpoint::{self, atomic_write, CONFIG_FILE, WEIGHTS_FILE};
use fm_models::ModelConfig;
use serde_json::{json, Value};

use crate::cli::HubArgs;
use crate::io::print_json;

/// The model card's file name.
pub const MODEL_CARD: &str = "README.md";
/// Metrics written by `fm train`, copied when present.
const METRICS: &str = "metrics.json";

#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// The checkpoint: a directory written by `fm train` (or an hf:// address).
    pub checkpoint: PathBuf,
    /// Export format: hub (model.safetensors, config.json, README.md model card, metrics.json).
    #[arg(long, value_parser = ["hub"], default_value = "hub")]
    pub format: String,
    /// Output directory (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Repository id shown in the model card's usage lines [default: OWNER/<out's name>].
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo_id: Option<String>,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print one JSON object with the written files as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let source = super::hub::resolve_checkpoint(&a.checkpoint, &a.hub, "CHECKPOINT")?;
    let ckpt =
        checkpoint::load(&source, &Device::Cpu).with_context(|| format!("{}", a.checkpoint.display()))?;
    let weights = if source.is_file() { source.clone() } else { source.join(WEIGHTS_FILE) };
    let same = |p: &Path| std::fs::canonicalize(p).ok();
    if same(&a.out).is_some() && same(&a.out) == same(&ckpt.dir) {
        bail!("--out {}: is the checkpoint itself; choose another directory", a.out.display());
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("--out {}: cannot create it", a.out.display()))?;
    let copy = |from: &Path, name: &str| -> Result<PathBuf> {
        let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
        let to = a.out.join(name);
        atomic_write(&to, &bytes).with_context(|| format!("--out {}", a.out.display()))?;
        Ok(to)
    };
    let mut files = vec![copy(&weights, WEIGHTS_FILE)?];
    let config_json = format!("{}\n", serde_json::to_string_pretty(&ckpt.config)?);
    atomic_write(&a.out.join(CONFIG_FILE), config_json.as_bytes())?;
    files.push(a.out.join(CONFIG_FILE));
    let metrics_path = ckpt.dir.join(METRICS);
    let metrics: Option<Value> = match std::fs::read_to_string(&metrics_path) {
        Ok(text) => {
            let v = serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", metrics_path.display()))?;
            files.push(copy(&metrics_path, METRICS)?);
            Some(v)
        }
        Err(_) => None,
    };
    let repo_id = a.repo_id.clone().unwrap_or_else(|| {
        let name = a.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or("model".into());
        format!("OWNER/{name}")
    });
    let card = model_card(&ckpt.config, metrics.as_ref(), &repo_id);
    atomic_write(&a.out.join(MODEL_CARD), card.as_bytes())?;
    files.push(a.out.join(MODEL_CARD));
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    log(format!(
        "exported {} for the Hub to {} ({}); upload with: huggingface-cli upload {repo_id} {}",
        a.checkpoint.display(),
        a.out.display(),
        files
            .iter()
            .filter_map(|f| f.file_name())
            .map(|n| n.to_string_lossy())
            .collect::<Vec<_>>()
            .join(", "),
        a.out.display()
    ));
    if a.json {
        print_json(&json!({ "out": a.out, "files": files, "repo_id": repo_id }))?;
    }
    Ok(())
}

/// A shell-quoted command line.
fn shell_line(args: &[Value]) -> String {
    args.iter()
        .filter_map(Value::as_str)
        .map(|s| {
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c)) {
                s.to_string()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The model card: YAML metadata, the model, how it was trained (command and
/// settings), its metrics, and how to use it from fm and PyTorch.
pub fn model_card(config: &fm_models::CheckpointConfig, metrics: Option<&Value>, repo_id: &str) -> String {
    let t = &config.training;
    let (kind, tag, torch) = match &config.model {
        ModelConfig::UNet(_) => ("U-Net velocity field", "u-net", Some("torchcfm-unet")),
        ModelConfig::Mlp(_) => ("MLP velocity field", "mlp", Some("torchcfm-mlp")),
        _ => ("normalizing flow", "normalizing-flow", None),
    };
    let params: usize =
        config.model.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let mut s = String::new();
    let _ = writeln!(s, "---\nlibrary_name: fm\ntags:\n- flow-matching\n- generative-model\n- {tag}\n---\n");
    let name = repo_id.rsplit('/').next().unwrap_or(repo_id);
    let _ = writeln!(s, "# {name}\n");
    let _ = writeln!(
        s,
        "A {kind} ({params} parameters) trained by flow matching with [fm](https://github.com/fm-rs/fm) {}. \
         Time convention: t = 0 is noise, t = 1 is data.\n",
        config.fm_version
    );
    let _ = writeln!(
        s,
        "## Model\n\n```json\n{}\n```\n",
        serde_json::to_string_pretty(&config.model).unwrap_or_default()
    );
    let _ = writeln!(s, "## Training\n");
    match t.get("command").and_then(Value::as_array) {
        Some(cmd) if !cmd.is_empty() => {
            let mut cmd = cmd.clone();
            cmd[0] = Value::String("fm".into());
            let _ = writeln!(s, "```sh\n{}\n```\n", shell_line(&cmd));
        }
        _ => {
            let _ = writeln!(s, "(no training command recorded)\n");
        }
    }
    let keys = [
        "data",
        "steps",
        "step",
        "batch_size",
        "lr",
        "seed",
        "scheduler",
        "objective",
        "matcher",
        "ema_decay",
        "init",
    ];
    let rows: Vec<String> = keys
        .iter()
        .filter_map(|k| t.get(*k).filter(|v| !v.is_null()).map(|v| format!("| {k} | {} |", plain(v))))
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(s, "| setting | value |\n|---|---|\n{}\n", rows.join("\n"));
    }
    let _ = writeln!(s, "## Metrics\n");
    let mut metric_rows = Vec::new();
    if let Some(Value::Object(m)) = metrics {
        for (k, v) in m {
            if v.is_number() || v.is_string() {
                metric_rows.push(format!("| {k} | {} |", plain(v)));
            }
        }
    } else if let Some(loss) = t.get("loss").filter(|v| v.is_number()) {
        metric_rows.push(format!("| loss | {} |", plain(loss)));
    }
    if metric_rows.is_empty() {
        let _ = writeln!(s, "(none recorded)\n");
    } else {
        let _ = writeln!(s, "| metric | value |\n|---|---|\n{}\n", metric_rows.join("\n"));
    }
    let _ = writeln!(s, "## Usage\n\n```sh\nfm sample --checkpoint hf://{repo_id} --out samples.npy");
    let _ = writeln!(
        s,
        "fm train --init hf://{repo_id} ...   # fine-tune (add --allow-partial for a changed head)"
    );
    if let Some(fmt) = torch {
        let _ = writeln!(s, "fm convert --to {fmt} hf://{repo_id} --out torch.safetensors   # a PyTorch (torchcfm) state dict");
    }
    let _ = writeln!(s, "```");
    s
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
