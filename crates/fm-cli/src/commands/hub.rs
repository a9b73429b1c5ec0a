//! `hf://OWNER/REPO[@REVISION][/FILE]` arguments of the commands that read
//! checkpoint files themselves (`fm export`, `fm convert`), through the
//! pipeline's [`fm_pipeline::location`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::HubArgs;

/// A local path for the checkpoint `arg` (for `hf://`, the weights file in the Hub cache).
pub fn resolve_checkpoint(arg: &Path, hub: &HubArgs, flag: &str) -> Result<PathBuf> {
    let offline = hub.offline || fm_pipeline::location::offline_from_env();
    fm_pipeline::location::resolve(arg, offline).with_context(|| format!("{flag} {}", arg.display()))
}
