//! What several subcommands share: loading a checkpoint (a folder or `hf://`).

use std::path::Path;

use anyhow::{Context, Result};
use candle::Device;
use fm_pipeline::Trained;

/// The checkpoint of `--checkpoint` (an `hf://` address from the Hub cache only when `offline`).
pub fn load(checkpoint: &Path, offline: bool, device: &Device) -> Result<Trained> {
    Trained::load(checkpoint, offline || fm_pipeline::location::offline_from_env(), device)
        .context("--checkpoint")
}
