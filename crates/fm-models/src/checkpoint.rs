//! Checkpoints: a directory holding `model.safetensors` and `config.json`.
//!
//! The configuration (model, training record) is stored twice: inside the
//! safetensors header (`__metadata__["fm"]`, authoritative) and as a readable
//! `config.json` beside it. Each file is written atomically (temporary file,
//! fsync, rename), and the weights file carries its own configuration, so a
//! run killed at any moment leaves either the previous checkpoint or the new
//! one, never a mixture that loads.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::flows::{PlanarConfig, RealNvpConfig};
use crate::unet::UNetConfig;
use crate::{Error, MlpConfig, Result};

/// The weights file inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The human-readable configuration inside a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// The safetensors metadata key holding the configuration.
pub const METADATA_KEY: &str = "fm";
/// The checkpoint format version this crate writes.
pub const FORMAT_VERSION: u32 = 1;

/// Which network a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ModelConfig {
    /// A [`crate::VelocityMlp`].
    Mlp(MlpConfig),
    /// A planar [`crate::flows::NormalizingFlow`] (`"kind": "planar"`).
    Planar(PlanarConfig),
    /// A RealNVP [`crate::flows::NormalizingFlow`] (`"kind": "real-nvp"`).
    RealNvp(RealNvpConfig),
    /// A [`crate::unet::UNet`] velocity field on images (`"kind": "u-net"`).
    UNet(UNetConfig),
    /// A [`crate::MeanFlowMlp`] average-velocity network (`"kind": "mean-flow"`).
    MeanFlow(crate::MeanFlowConfig),
    /// A [`crate::DiscreteMlp`] posterior of discrete flow matching (`"kind": "discrete-mlp"`).
    DiscreteMlp(crate::DiscreteMlpConfig),
    /// A [`crate::unet::DiscreteUNet`] posterior on image tokens (`"kind": "discrete-u-net"`).
    DiscreteUNet(crate::unet::DiscreteUNetConfig),
    /// A [`crate::VelocityMlp`] on a manifold's embedding coordinates
    /// (`"kind": "riemannian-mlp"`), its output projected onto the tangent space.
    RiemannianMlp(crate::RiemannianMlpConfig),
}

impl ModelConfig {
    /// Checks the configuration (each kind's `validate`: consistency and
    /// sizes, bounded by [`crate::limits`]); the error names the field.
    /// [`parse_weights`] and [`crate::resume::load`] call it on every
    /// configuration they read, before anything else uses it.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Mlp(c) => c.validate(),
            ModelConfig::Planar(c) => c.validate(),
            ModelConfig::RealNvp(c) => c.validate(),
            ModelConfig::UNet(c) => c.validate(),
            ModelConfig::MeanFlow(c) => c.validate(),
            ModelConfig::DiscreteMlp(c) => c.validate(),
            ModelConfig::DiscreteUNet(c) => c.validate(),
            ModelConfig::RiemannianMlp(c) => c.validate(),
        }
    }

    /// Names and shapes of the parameters this model expects (call
    /// [`ModelConfig::validate`] first: on an unchecked configuration the
    /// list can be arbitrarily long).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            ModelConfig::Mlp(c) => c.parameter_shapes(),
            ModelConfig::Planar(c) => c.parameter_shapes(),
            ModelConfig::RealNvp(c) => c.parameter_shapes(),
            ModelConfig::UNet(c) => c.parameter_shapes(),
            ModelConfig::MeanFlow(c) => c.parameter_shapes(),
            ModelConfig::DiscreteMlp(c) => c.parameter_shapes(),
            ModelConfig::DiscreteUNet(c) => c.parameter_shapes(),
            ModelConfig::RiemannianMlp(c) => c.mlp.parameter_shapes(),
        }
    }

    /// The data dimension the model takes.
    pub fn dim(&self) -> usize {
        match self {
            ModelConfig::Mlp(c) => c.dim,
            ModelConfig::Planar(c) => c.dim,
            ModelConfig::RealNvp(c) => c.dim,
            ModelConfig::UNet(c) => c.dim(),
            ModelConfig::MeanFlow(c) => c.dim,
            ModelConfig::DiscreteMlp(c) => c.seq_len,
            ModelConfig::DiscreteUNet(c) => c.seq_len(),
            ModelConfig::RiemannianMlp(c) => c.mlp.dim,
        }
    }
}

/// Everything a checkpoint records besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// The checkpoint format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The fm version that wrote it.
    pub fm_version: String,
    /// The network.
    pub model: ModelConfig,
    /// The training record (data, path, seed, step, transform, command), as
    /// written by the trainer; free-form JSON so each front end can extend it.
    #[serde(default)]
    pub training: serde_json::Value,
}

impl CheckpointConfig {
    /// A configuration for `model` with an empty training record.
    pub fn new(model: ModelConfig) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            fm_version: env!("CARGO_PKG_VERSION").to_string(),
            model,
            training: serde_json::Value::Null,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |io| Error::Io { path: path.to_path_buf(), io }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, then rename over `path`.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The named tensors of a [`VarMap`], sorted by name.
pub fn varmap_tensors(varmap: &VarMap) -> Result<Vec<(String, Tensor)>> {
    let data = varmap.data().lock().map_err(|_| Error::Config {
        field: "varmap",
        reason: "the variable map's lock is poisoned".into(),
    })?;
    let mut out: Vec<(String, Tensor)> =
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Saves a checkpoint into directory `dir` (created if needed).
pub fn save(dir: &Path, config: &CheckpointConfig, tensors: &[(String, Tensor)]) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let json = serde_json::to_string_pretty(config).map_err(|e| Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!("cannot serialize the configuration: {e}"),
    })?;
    let meta = HashMap::from([(METADATA_KEY.to_string(), json.clone())]);
    let bytes =
        safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta)).map_err(|e| {
            Error::Checkpoint {
                path: dir.join(WEIGHTS_FILE),
                reason: format!("cannot serialize the weights: {e}"),
            }
        })?;
    atomic_write(&dir.join(WEIGHTS_FILE), &bytes)?;
    atomic_write(&dir.join(CONFIG_FILE), format!("{json}\n").as_bytes())?;
    Ok(())
}

/// A loaded checkpoint: its configuration and its tensors by name.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: CheckpointConfig,
    /// The weights.
    pub tensors: HashMap<String, Tensor>,
}

/// Loads the checkpoint in directory `dir` (or the weights file itself) onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let (dir, weights) = if dir.is_file() {
        (dir.parent().unwrap_or(Path::new(".")).to_path_buf(), dir.to_path_buf())
    } else {
        (dir.to_path_buf(), dir.join(WEIGHTS_FILE))
    };
    if !dir.exists() {
        return Err(Error::Checkpoint { path: dir, reason: "no such directory".into() });
    }
    if !weights.exists() {
        return Err(Error::Checkpoint {
            path: dir,
            reason: format!("no {WEIGHTS_FILE} in it; is this a directory written by `fm train`?"),
        });
    }
    let bytes = fs::read(&weights).map_err(io_err(&weights))?;
    let fallback = || {
        let cfg = dir.join(CONFIG_FILE);
        fs::read_to_string(&cfg).map_err(|e| Error::Checkpoint {
            path: weights.clone(),
            reason: format!(
                "no fm configuration in the weights' header and none readable in {}: {e}",
                cfg.display()
            ),
        })
    };
    let (config, tensors) = parse_weights(&bytes, &weights, fallback, device)?;
    check_config_file(&dir.join(CONFIG_FILE), &config)?;
    Ok(Checkpoint { dir, config, tensors })
}

/// Checks that the `config.json` at `path`, if there is one, describes the same
/// model as the weights' own configuration `config` (a hand-edited or
/// mismatched pair of files is an error naming both).
pub fn check_config_file(path: &Path, config: &CheckpointConfig) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else { return Ok(()) };
    let beside: CheckpointConfig = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("invalid configuration: {e}"),
    })?;
    if beside.model != config.model {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "describes another model than the configuration inside {WEIGHTS_FILE}: {:?} vs {:?}",
                beside.model, config.model
            ),
        });
    }
    Ok(())
}

/// Parses the bytes of a weights file: its configuration (from the header's
/// `fm` metadata, else from `fallback`), the format version and the tensors,
/// checked against the model's expected parameters. `weights` only names the
/// file in errors. Never panics on malformed input (fuzzed).
pub fn parse_weights(
    bytes: &[u8],
    weights: &Path,
    fallback: impl FnOnce() -> Result<String>,
    device: &Device,
) -> Result<(CheckpointConfig, HashMap<String, Tensor>)> {
    let corrupt = |e: &dyn std::fmt::Display| Error::Checkpoint {
        path: weights.to_path_buf(),
        reason: format!("not a valid safetensors file ({e})"),
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| corrupt(&e))?;
    let json = match meta.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
        Some(j) => j.clone(),
        None => fallback()?,
    };
    let config = parse_config(&json, weights)?;
    let tensors = candle::safetensors::load_buffer(bytes, device).map_err(|e| corrupt(&e))?;
    check_parameters(weights, &config.model.parameter_shapes(), &tensors)?;
    Ok((config, tensors))
}

/// Parses the configuration a file carries (`weights` names the file in
/// errors): the JSON, the format version, and the model configuration, which
/// is validated ([`ModelConfig::validate`]) before anything uses it, so that
/// no configuration a file supplies can panic or allocate without bound
/// further on. Every reader of a checkpoint's or resume file's configuration
/// goes through here; an invalid model is [`Error::Config`] naming the field
/// (and the file).
pub fn parse_config(json: &str, weights: &Path) -> Result<CheckpointConfig> {
    let config: CheckpointConfig = serde_json::from_str(json).map_err(|e| Error::Checkpoint {
        path: weights.to_path_buf(),
        reason: format!("invalid configuration: {e}"),
    })?;
    if config.format_version > FORMAT_VERSION {
        return Err(Error::Checkpoint {
            path: weights.to_path_buf(),
            reason: format!(
                "written in format {} by fm {}; this fm reads format {FORMAT_VERSION} and older",
                config.format_version, config.fm_version
            ),
        });
    }
    config.model.validate().map_err(|e| match e {
        Error::Config { field, reason } => {
            Error::Config { field, reason: format!("{reason} (in {})", weights.display()) }
        }
        other => other,
    })?;
    Ok(config)
}

/// A parameter whose stored shape differs from the model's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShapeMismatch {
    /// The parameter's name.
    pub name: String,
    /// The shape the model needs.
    pub expected: Vec<usize>,
    /// The shape in the file.
    pub found: Vec<usize>,
}

/// How a set of named tensors fits a model's parameters (see [`check_keys`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Parameters present with the right shape (loaded), in model order.
    pub loaded: Vec<String>,
    /// Parameters of the model absent from the file, in model order.
    pub missing: Vec<String>,
    /// Tensors in the file the model has no parameter for, sorted.
    pub unexpected: Vec<String>,
    /// Parameters present with another shape, in model order.
    pub shape_mismatch: Vec<ShapeMismatch>,
}

impl LoadReport {
    /// Whether the file holds exactly the model's parameters.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape_mismatch.is_empty()
    }

    /// The parameters a partial load leaves at their initial values: the
    /// missing and the mis-shaped ones, in model order.
    pub fn left_initialised(&self, expected: &[(String, Vec<usize>)]) -> Vec<String> {
        let left: HashSet<&str> = self
            .missing
            .iter()
            .map(String::as_str)
            .chain(self.shape_mismatch.iter().map(|m| m.name.as_str()))
            .collect();
        expected.iter().filter(|(n, _)| left.contains(n.as_str())).map(|(n, _)| n.clone()).collect()
    }

    /// Every problem by name: `missing `a` [2, 3]; `b` has shape …; unexpected `c``.
    pub fn problems(&self, expected: &[(String, Vec<usize>)]) -> Vec<String> {
        let shapes: HashMap<&str, &Vec<usize>> = expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let shape_of = |n: &str| shapes.get(n).map(|s| s.to_vec()).unwrap_or_default();
        let mut out: Vec<String> =
            self.missing.iter().map(|n| format!("missing `{n}` {:?}", shape_of(n))).collect();
        out.extend(
            self.shape_mismatch
                .iter()
                .map(|m| format!("`{}` has shape {:?}, the model needs {:?}", m.name, m.found, m.expected)),
        );
        out.extend(self.unexpected.iter().map(|n| format!("unexpected `{n}`")));
        out
    }
}

/// Compares the tensors `found` with the model's `expected` parameters
/// (names and shapes): what loads, what is missing, unexpected or mis-shaped.
pub fn check_keys(expected: &[(String, Vec<usize>)], found: &HashMap<String, Tensor>) -> LoadReport {
    let names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut report = LoadReport::default();
    for (name, shape) in expected {
        match found.get(name) {
            None => report.missing.push(name.clone()),
            Some(t) if t.dims() != shape.as_slice() => report.shape_mismatch.push(ShapeMismatch {
                name: name.clone(),
                expected: shape.clone(),
                found: t.dims().to_vec(),
            }),
            Some(_) => report.loaded.push(name.clone()),
        }
    }
    report.unexpected = found.keys().filter(|k| !names.contains(k.as_str())).cloned().collect();
    report.unexpected.sort();
    report
}

/// Checks that `found` holds exactly the expected parameters with the expected
/// shapes; the error lists every missing, unexpected and mis-shaped name.
pub fn check_parameters(
    path: &Path,
    expected: &[(String, Vec<usize>)],
    found: &HashMap<String, Tensor>,
) -> Result<()> {
    let report = check_keys(expected, found);
    if report.is_exact() {
        Ok(())
    } else {
        Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("the weights do not fit the model: {}", report.problems(expected).join("; ")),
        })
    }
}

/// Loads `tensors` into the model variables of `varmap` (named as in
/// `expected`) and reports what fitted. Unless `allow_partial`, anything but an
/// exact fit is an error listing every problem by name; with it, the matching
/// subset is loaded and the rest keeps its initial values
/// ([`LoadReport::left_initialised`]). `path` names the file in errors.
pub fn load_into(
    varmap: &VarMap,
    expected: &[(String, Vec<usize>)],
    tensors: &HashMap<String, Tensor>,
    allow_partial: bool,
    path: &Path,
) -> Result<LoadReport> {
    let report = check_keys(expected, tensors);
    if !report.is_exact() && !allow_partial {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "the weights do not fit the model: {} (load the matching subset on purpose with --allow-partial)",
                report.problems(expected).join("; ")
            ),
        });
    }
    if report.loaded.is_empty() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "not one of the model's parameters is in the file with the right shape".into(),
        });
    }
    let data = varmap.data().lock().map_err(|_| Error::Config {
        field: "varmap",
        reason: "the variable map's lock is poisoned".into(),
    })?;
    for name in &report.loaded {
        let (Some(var), Some(t)) = (data.get(name), tensors.get(name)) else {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("the model has no variable `{name}`"),
            });
        };
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(report)
}
