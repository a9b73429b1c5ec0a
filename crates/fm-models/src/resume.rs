//! The resume file of a checkpoint: everything needed to continue training.
//!
//! `resume.safetensors` sits beside `model.safetensors` and holds, in one
//! atomically written file, the weights, the optimiser state and a JSON
//! description of the loop's own state (step, RNG positions, recent losses).
//! Because it is one file, it is always self-consistent: a run killed while
//! writing leaves the previous resume point intact.
//!
//! ```
//! use candle::{DType, Device, Tensor};
//! use fm_core::SeededRng;
//! use fm_models::checkpoint::varmap_tensors;
//! use fm_models::{resume, CheckpointConfig, MlpConfig, ModelConfig, VelocityMlp};
//!
//! # fn main() -> anyhow::Result<()> {
//! let dir = std::env::temp_dir().join(format!("fm-resume-doc-{}", std::process::id()));
//! let cfg = MlpConfig::guide(2);
//! let (_model, varmap) = VelocityMlp::init(&cfg, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
//! let config = CheckpointConfig::new(ModelConfig::Mlp(cfg));
//! let opt = vec![("adam.step".to_string(), Tensor::new(&[3i64], &Device::Cpu)?)];
//! resume::save(&dir, &config, &varmap_tensors(&varmap)?, &opt, r#"{"step": 3}"#)?;
//! let point = resume::load(&dir, &Device::Cpu)?;
//! assert_eq!(point.state, r#"{"step": 3}"#);
//! assert!(point.weights.contains_key("net.0.weight") && point.optimizer.contains_key("adam.step"));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use candle::{Device, Tensor};

use crate::checkpoint::{atomic_write, CheckpointConfig, METADATA_KEY};
use crate::{Error, Result};

/// The resume file inside a checkpoint directory.
pub const RESUME_FILE: &str = "resume.safetensors";
/// The safetensors metadata key holding the training loop's state (JSON).
pub const STATE_KEY: &str = "fm_state";
/// Prefix of optimiser tensors in the resume file.
const OPTIMIZER_PREFIX: &str = "optimizer/";

/// A loaded resume point.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    /// The checkpoint configuration at that point.
    pub config: CheckpointConfig,
    /// Model weights by name.
    pub weights: HashMap<String, Tensor>,
    /// Optimiser tensors by name (as given to [`save`]).
    pub optimizer: BTreeMap<String, Tensor>,
    /// The training loop's state, as the JSON string given to [`save`].
    pub state: String,
}

/// Writes `dir/resume.safetensors` atomically.
///
/// Optimiser tensor names must not collide with weight names; they are stored
/// under an `optimizer/` prefix.
pub fn save(
    dir: &Path,
    config: &CheckpointConfig,
    weights: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    state: &str,
) -> Result<()> {
    let path = dir.join(RESUME_FILE);
    fs::create_dir_all(dir).map_err(|io| Error::Io { path: dir.to_path_buf(), io })?;
    let bad = |reason: String| Error::Checkpoint { path: path.clone(), reason };
    let json =
        serde_json::to_string(config).map_err(|e| bad(format!("cannot serialize the configuration: {e}")))?;
    let meta = HashMap::from([(METADATA_KEY.to_string(), json), (STATE_KEY.to_string(), state.to_string())]);
    let prefixed: Vec<(String, &Tensor)> = weights
        .iter()
        .map(|(k, t)| (k.clone(), t))
        .chain(optimizer.iter().map(|(k, t)| (format!("{OPTIMIZER_PREFIX}{k}"), t)))
        .collect();
    let bytes = safetensors::serialize(prefixed.iter().map(|(k, t)| (k.as_str(), *t)), Some(meta))
        .map_err(|e| bad(format!("cannot serialize the training state: {e}")))?;
    atomic_write(&path, &bytes)
}

/// Reads `dir/resume.safetensors` onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<ResumePoint> {
    let path = dir.join(RESUME_FILE);
    if !path.is_file() {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("no {RESUME_FILE} in it; only directories written by `fm train` can be resumed"),
        });
    }
    let bytes = fs::read(&path).map_err(|io| Error::Io { path: path.clone(), io })?;
    let bad = |reason: String| Error::Checkpoint { path: path.clone(), reason };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let config_json =
        meta.get(METADATA_KEY).ok_or_else(|| bad(format!("no `{METADATA_KEY}` configuration")))?;
    let config = crate::checkpoint::parse_config(config_json, &path)?;
    let state = meta.get(STATE_KEY).ok_or_else(|| bad(format!("no `{STATE_KEY}` training state")))?.clone();
    let all = candle::safetensors::load_buffer(&bytes, device)
        .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
    let mut weights = HashMap::new();
    let mut optimizer = BTreeMap::new();
    for (k, t) in all {
        match k.strip_prefix(OPTIMIZER_PREFIX) {
            Some(name) => {
                optimizer.insert(name.to_string(), t);
            }
            None => {
                weights.insert(k, t);
            }
        }
    }
    crate::checkpoint::check_parameters(&path, &config.model.parameter_shapes(), &weights)?;
    Ok(ResumePoint { config, weights, optimizer, state })
}
