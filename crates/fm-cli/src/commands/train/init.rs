//! `fm train --init CHECKPOINT [--allow-partial]`: start from saved weights
//! (a checkpoint directory, a .safetensors file or an `hf://` address).

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle::Device;
use candle_nn::VarMap;
use fm_models::checkpoint::{self, ShapeMismatch};
use fm_models::ModelConfig;
use serde::Serialize;

use super::settings::InitFrom;
use crate::cli::HubArgs;

/// What `--init` loaded, for the log and the JSON report (`init`).
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The source as given.
    pub source: String,
    /// The weights file actually read.
    pub file: PathBuf,
    /// Parameters loaded.
    pub loaded: usize,
    /// Parameters of the model.
    pub total: usize,
    /// Parameters that kept their fresh initialisation (missing or mis-shaped in the file).
    pub left_initialised: Vec<String>,
    /// Missing from the file.
    pub missing: Vec<String>,
    /// In the file with another shape.
    pub shape_mismatch: Vec<ShapeMismatch>,
    /// In the file but not in the model (ignored).
    pub unexpected: Vec<String>,
}

impl InitReport {
    /// One line for the log.
    pub fn describe(&self) -> String {
        let mut s = format!("initialised {} of {} parameters from {}", self.loaded, self.total, self.source);
        if !self.left_initialised.is_empty() {
            s.push_str(&format!(
                "; left at their fresh initialisation: {}",
                self.left_initialised.join(", ")
            ));
        }
        if !self.unexpected.is_empty() {
            s.push_str(&format!("; ignored (not in the model): {}", self.unexpected.join(", ")));
        }
        s
    }
}

/// The weights file of `--init`'s source: `DIR/model.safetensors`, the file itself,
/// or the Hub cache's copy of an `hf://` checkpoint.
fn weights_file(init: &InitFrom) -> Result<PathBuf> {
    let hub = HubArgs { offline: init.offline };
    let path = super::super::hub::resolve_checkpoint(&init.source, &hub, "--init")?;
    Ok(if path.is_dir() { path.join(checkpoint::WEIGHTS_FILE) } else { path })
}

/// Loads `--init`'s weights into `varmap` (the fresh model of `config`): all of
/// them, or with `--allow-partial` those whose name and shape fit.
pub fn load_init(
    init: &InitFrom,
    config: &ModelConfig,
    varmap: &VarMap,
    device: &Device,
) -> Result<InitReport> {
    let file = weights_file(init)?;
    if !file.exists() {
        anyhow::bail!("--init {}: no such file {}", init.source.display(), file.display());
    }
    let (tensors, _) = fm_models::torchcfm::read_state_dict(&file, device)
        .with_context(|| format!("--init {}", init.source.display()))?;
    let expected = config.parameter_shapes();
    let report = checkpoint::load_into(varmap, &expected, &tensors, init.allow_partial, &file)
        .with_context(|| format!("--init {}", init.source.display()))?;
    Ok(InitReport {
        source: init.source.display().to_string(),
        file,
        loaded: report.loaded.len(),
        total: expected.len(),
        left_initialised: report.left_initialised(&expected),
        missing: report.missing,
        shape_mismatch: report.shape_mismatch,
        unexpected: report.unexpected,
    })
}
