//! Starting weights (`--init`): a checkpoint folder, a `.safetensors` file or
//! an `hf://` address, loaded whole or (`allow_partial`) where name and shape fit.

use std::path::{Path, PathBuf};

use candle::Device;
use candle_nn::VarMap;
use fm_models::checkpoint::{self, ShapeMismatch};
use fm_models::ModelConfig;
use serde::Serialize;

use crate::error::bail;
use crate::settings::InitFrom;
use crate::{Result, ResultExt};

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

/// Loads `init`'s weights into `varmap` (the fresh model of `config`): all of
/// them, or with `allow_partial` those whose name and shape fit.
pub(crate) fn load_init(
    init: &InitFrom,
    config: &ModelConfig,
    varmap: &VarMap,
    device: &Device,
) -> Result<InitReport> {
    let what = || format!("--init {}", init.source);
    let path = crate::location::resolve(Path::new(&init.source), init.offline).with_context(what)?;
    let file = if path.is_dir() { path.join(checkpoint::WEIGHTS_FILE) } else { path };
    if !file.exists() {
        bail!("--init {}: no such file {}", init.source, file.display());
    }
    let (tensors, _) = fm_models::torchcfm::read_state_dict(&file, device).with_context(what)?;
    let expected = config.parameter_shapes();
    let report =
        checkpoint::load_into(varmap, &expected, &tensors, init.allow_partial, &file).with_context(what)?;
    Ok(InitReport {
        source: init.source.clone(),
        file,
        loaded: report.loaded.len(),
        total: expected.len(),
        left_initialised: report.left_initialised(&expected),
        missing: report.missing,
        shape_mismatch: report.shape_mismatch,
        unexpected: report.unexpected,
    })
}
