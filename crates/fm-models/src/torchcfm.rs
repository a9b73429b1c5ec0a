//! Conversion between fm's networks and torchcfm's PyTorch state dicts
//! (saved as safetensors), both ways.
//!
//! - **U-Net** (`torchcfm.models.unet.UNetModelWrapper`): fm's parameter names
//!   *are* torchcfm's state-dict names, so the map is the identity plus two
//!   explicit steps. A leading `module.` (DistributedDataParallel) or
//!   `_orig_mod.` (`torch.compile`) is stripped. The class embedding differs:
//!   fm's `label_emb.weight` has `K + 1` rows, the last being the null class
//!   `∅` of classifier-free guidance; torchcfm's has `K`. Importing a
//!   `K`-row table appends a **zero** null row (the network then sees no
//!   label offset for `∅`; fine-tune with label dropout before using
//!   guidance); a `K + 1`-row table is taken as is. Exporting keeps all
//!   `K + 1` rows, so the file loads into `UNetModelWrapper(num_classes=K + 1,
//!   class_cond=True)` whose class `K` is `∅`, and the round trip is exact.
//! - **MLP** (`torchcfm.models.MLP(dim, w=W, time_varying=True)`:
//!   `Linear(d + 1, W)`, SELU, `Linear(W, W)`, SELU, `Linear(W, W)`, SELU,
//!   `Linear(W, d)`, named `net.0`, `net.2`, `net.4`, `net.6` like fm's): the
//!   names match, the activation is SELU (fm's `selu`), and only the input
//!   order differs: torchcfm feeds `cat([x, t])` (time last), fm
//!   `concat(t, x)` (time first), so the first layer's weight columns are
//!   rotated by one.
//!
//! Exported files carry `format: pt` and fm's model configuration (JSON) in
//! the safetensors metadata under `fm-model`, so converting back needs no
//! `--config`.
//!
//! ```
//! use std::collections::HashMap;
//! use candle::{DType, Device, Tensor};
//! use fm_models::torchcfm;
//! use fm_models::{MlpConfig, ModelConfig, VelocityMlp};
//! use fm_core::SeededRng;
//! # fn main() -> anyhow::Result<()> {
//! let config = ModelConfig::Mlp(MlpConfig { activation: fm_models::Activation::Selu, ..MlpConfig::guide(2) });
//! let ModelConfig::Mlp(c) = &config else { unreachable!() };
//! let (_, varmap) = VelocityMlp::init(c, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
//! let ours: HashMap<String, Tensor> = fm_models::checkpoint::varmap_tensors(&varmap)?.into_iter().collect();
//! let torch = torchcfm::to_torchcfm(&config, &ours)?;
//! let (back, back_config, _) = torchcfm::from_torchcfm_mlp(&torch)?;
//! assert_eq!(back_config, config);
//! for (k, v) in &ours {
//!     assert_eq!(v.flatten_all()?.to_vec1::<f32>()?, back[k].flatten_all()?.to_vec1::<f32>()?);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use candle::{Device, Tensor};

use crate::checkpoint::{atomic_write, check_parameters};
use crate::unet::UNetConfig;
use crate::{Activation, Error, MlpConfig, ModelConfig, Result};

/// The safetensors metadata key under which exported files carry fm's model configuration.
pub const MODEL_METADATA_KEY: &str = "fm-model";

/// A PyTorch state-dict layout `fm convert` reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchFormat {
    /// torchcfm's `UNetModelWrapper` (`torchcfm-unet`).
    TorchcfmUnet,
    /// torchcfm's `MLP` with `time_varying=True` (`torchcfm-mlp`).
    TorchcfmMlp,
}

impl TorchFormat {
    /// The names [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &["torchcfm-unet", "torchcfm-mlp"];
}

impl FromStr for TorchFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "torchcfm-unet" => Ok(Self::TorchcfmUnet),
            "torchcfm-mlp" => Ok(Self::TorchcfmMlp),
            other => Err(Error::Config {
                field: "format",
                reason: format!("unknown PyTorch format `{other}`; valid: {}", Self::NAMES.join(", ")),
            }),
        }
    }
}

/// What an import changed beyond renaming.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportNotes {
    /// Prefixes stripped from the names (`module.`, `_orig_mod.`).
    pub stripped_prefix: Option<String>,
    /// Whether a zero null-class row was appended to `label_emb.weight`.
    pub added_null_class_row: bool,
}

/// Reads a safetensors file: its tensors and its metadata.
pub fn read_state_dict(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|io| Error::Io { path: path.to_path_buf(), io })?;
    let corrupt = |e: &dyn std::fmt::Display| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("not a valid safetensors file ({e})"),
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(&e))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle::safetensors::load_buffer(&bytes, device).map_err(|e| corrupt(&e))?;
    Ok((tensors, metadata))
}

/// Writes `tensors` (sorted by name) with `metadata` to `path` atomically.
pub fn write_state_dict(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(sorted.into_iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))
        .map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("cannot serialize the weights: {e}"),
        })?;
    atomic_write(path, &bytes)
}

/// The metadata of an exported file: `format: pt` and the model's configuration.
pub fn export_metadata(config: &ModelConfig) -> Result<HashMap<String, String>> {
    let json = serde_json::to_string(config)
        .map_err(|e| Error::Config { field: "model", reason: format!("cannot serialize: {e}") })?;
    Ok(HashMap::from([("format".to_string(), "pt".to_string()), (MODEL_METADATA_KEY.to_string(), json)]))
}

/// fm's weights as a torchcfm state dict (see the module docs for the mapping).
/// An MLP must be torchcfm's shape (three SELU hidden layers of one width).
pub fn to_torchcfm(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    check_parameters(Path::new("(fm weights)"), &config.parameter_shapes(), tensors)?;
    match config {
        // Identical names; label_emb keeps its K + 1 rows (torchcfm num_classes = K + 1).
        ModelConfig::UNet(_) => Ok(tensors.clone()),
        ModelConfig::Mlp(c) => {
            let w = c.hidden.first().copied().unwrap_or(0);
            if c.activation != Activation::Selu || c.hidden != [w, w, w] {
                return Err(Error::Config {
                    field: "model",
                    reason: format!(
                        "torchcfm's MLP is Linear-SELU ×3 with three hidden layers of one width; this MLP has \
                         {:?} hidden widths and {:?}, so PyTorch would compute another function",
                        c.hidden, c.activation
                    ),
                });
            }
            let mut out = tensors.clone();
            let w = &tensors["net.0.weight"]; // (h, 1 + d): [t, x]
            let moved = Tensor::cat(&[&w.narrow(1, 1, c.dim)?, &w.narrow(1, 0, 1)?], 1)?; // [x, t]
            out.insert("net.0.weight".into(), moved);
            Ok(out)
        }
        other => Err(Error::Config {
            field: "kind",
            reason: format!("{other:?} has no torchcfm counterpart (only the U-Net and the MLP)"),
        }),
    }
}

/// Strips a `module.` or `_orig_mod.` prefix shared by every name.
fn strip_prefix(tensors: &HashMap<String, Tensor>) -> (HashMap<String, Tensor>, Option<String>) {
    for prefix in ["module.", "_orig_mod.", "module._orig_mod."] {
        if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with(prefix)) {
            let stripped = tensors.iter().map(|(k, v)| (k[prefix.len()..].to_string(), v.clone())).collect();
            return (stripped, Some(prefix.to_string()));
        }
    }
    (tensors.clone(), None)
}

/// A torchcfm `UNetModelWrapper` state dict as fm U-Net weights for `config`,
/// checked name by name (every missing, unexpected or mis-shaped parameter is listed).
pub fn from_torchcfm_unet(
    tensors: &HashMap<String, Tensor>,
    config: &UNetConfig,
) -> Result<(HashMap<String, Tensor>, ImportNotes)> {
    config.validate()?;
    let (mut out, stripped_prefix) = strip_prefix(tensors);
    let mut notes = ImportNotes { stripped_prefix, added_null_class_row: false };
    if let (Some(k), Some(table)) = (config.num_classes, out.get("label_emb.weight").cloned()) {
        let rows = table.dim(0)?;
        if rows == k {
            let null = Tensor::zeros((1, table.dim(1)?), table.dtype(), table.device())?;
            out.insert("label_emb.weight".into(), Tensor::cat(&[&table, &null], 0)?);
            notes.added_null_class_row = true;
        } else if rows != k + 1 {
            return Err(Error::Config {
                field: "num_classes",
                reason: format!(
                    "`label_emb.weight` has {rows} rows; a model of {k} classes needs {k} (torchcfm) or {} (fm, with ∅)",
                    k + 1
                ),
            });
        }
    }
    check_parameters(Path::new("(torchcfm state dict)"), &config.parameter_shapes(), &out)?;
    Ok((out, notes))
}

/// A torchcfm `MLP(dim, w, time_varying=True)` state dict as fm MLP weights;
/// the configuration (`dim`, hidden widths, SELU) is read off the shapes.
pub fn from_torchcfm_mlp(
    tensors: &HashMap<String, Tensor>,
) -> Result<(HashMap<String, Tensor>, ModelConfig, ImportNotes)> {
    let (mut out, stripped_prefix) = strip_prefix(tensors);
    let bad = |reason: String| Error::Config { field: "torchcfm-mlp", reason };
    let mut layers: Vec<(usize, Vec<usize>)> = Vec::new();
    for (name, t) in &out {
        let Some(idx) = name.strip_prefix("net.").and_then(|r| r.strip_suffix(".weight")) else { continue };
        let idx: usize = idx.parse().map_err(|_| bad(format!("unexpected parameter `{name}`")))?;
        layers.push((idx, t.dims().to_vec()));
    }
    layers.sort();
    if layers.is_empty() {
        return Err(bad("no `net.N.weight` tensors: not a torchcfm MLP state dict".into()));
    }
    for (i, (idx, shape)) in layers.iter().enumerate() {
        if *idx != 2 * i || shape.len() != 2 {
            return Err(bad(format!(
                "expected Linear layers at net.0, net.2, …; found net.{idx}.weight with shape {shape:?}"
            )));
        }
    }
    let dim = layers[layers.len() - 1].1[0];
    let input = layers[0].1[1];
    if dim.checked_add(1) != Some(input) {
        return Err(bad(format!(
            "the first layer takes {input} inputs and the last gives {dim}: fm needs time_varying=True \
             (input d + 1) and out_dim = d"
        )));
    }
    if layers.len() < 2 {
        return Err(bad("fm's MLP needs at least one hidden layer".into()));
    }
    let hidden: Vec<usize> = layers[..layers.len() - 1].iter().map(|(_, s)| s[0]).collect();
    let config = MlpConfig { dim, hidden, activation: Activation::Selu };
    // The sizes come from the file's shapes: bounded and non-zero before use.
    config.validate()?;
    let model = ModelConfig::Mlp(config);
    check_parameters(Path::new("(torchcfm state dict)"), &model.parameter_shapes(), &out)?;
    let w = out["net.0.weight"].clone(); // (h, d + 1): [x, t]
    out.insert("net.0.weight".into(), Tensor::cat(&[&w.narrow(1, dim, 1)?, &w.narrow(1, 0, dim)?], 1)?);
    Ok((out, model, ImportNotes { stripped_prefix, added_null_class_row: false }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::DType;
    use fm_core::SeededRng;

    fn unet_weights(config: &UNetConfig) -> Result<HashMap<String, Tensor>> {
        let (_, varmap) = crate::unet::UNet::init(config, &mut SeededRng::new(3), DType::F32, &Device::Cpu)?;
        Ok(crate::checkpoint::varmap_tensors(&varmap)?.into_iter().collect())
    }

    #[test]
    fn unet_import_strips_module_and_adds_a_zero_null_row() -> Result<()> {
        let config = UNetConfig { num_classes: Some(3), ..UNetConfig::preset("tiny", 1, 8, 8)? };
        let ours = unet_weights(&config)?;
        let mut torch: HashMap<String, Tensor> =
            ours.iter().map(|(k, v)| (format!("module.{k}"), v.clone())).collect();
        let table = ours["label_emb.weight"].narrow(0, 0, 3)?;
        torch.insert("module.label_emb.weight".into(), table.clone());
        let (back, notes) = from_torchcfm_unet(&torch, &config)?;
        assert_eq!(notes.stripped_prefix.as_deref(), Some("module."));
        assert!(notes.added_null_class_row);
        let rows = back["label_emb.weight"].to_vec2::<f32>()?;
        assert_eq!(rows[..3], table.to_vec2::<f32>()?[..]);
        assert!(rows[3].iter().all(|&v| v == 0.0));
        // A wrong row count and a missing tensor are named.
        torch.insert("module.label_emb.weight".into(), ours["label_emb.weight"].narrow(0, 0, 2)?);
        let e = from_torchcfm_unet(&torch, &config).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("label_emb.weight") && e.contains("2 rows"), "{e}");
        torch.insert("module.label_emb.weight".into(), table);
        torch.remove("module.out.2.bias");
        let e = from_torchcfm_unet(&torch, &config).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("missing `out.2.bias`"), "{e}");
        Ok(())
    }

    #[test]
    fn mlp_moves_the_time_column_from_last_to_first() -> Result<()> {
        let config = MlpConfig { dim: 2, hidden: vec![4, 4, 4], activation: Activation::Selu };
        let (_, varmap) =
            crate::VelocityMlp::init(&config, &mut SeededRng::new(1), DType::F32, &Device::Cpu)?;
        let ours: HashMap<String, Tensor> = crate::checkpoint::varmap_tensors(&varmap)?.into_iter().collect();
        let torch = to_torchcfm(&ModelConfig::Mlp(config.clone()), &ours)?;
        let (o, t) = (ours["net.0.weight"].to_vec2::<f32>()?, torch["net.0.weight"].to_vec2::<f32>()?);
        for (ro, rt) in o.iter().zip(&t) {
            assert_eq!((ro[0], ro[1], ro[2]), (rt[2], rt[0], rt[1]));
        }
        let (_, back_config, _) = from_torchcfm_mlp(&torch)?;
        assert_eq!(back_config, ModelConfig::Mlp(config));
        Ok(())
    }
}
