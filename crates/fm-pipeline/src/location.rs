//! Where a checkpoint is: a folder written by a run, its weights file, or
//! `hf://OWNER/REPO[@REVISION][/FILE]` — fetched into the Hugging Face Hub
//! cache (fm-data's `hub` feature) and used from there.

use std::path::{Path, PathBuf};

use crate::Result;

/// Whether a checkpoint argument is a Hub address.
pub fn is_hub(location: &Path) -> bool {
    location.to_str().is_some_and(|s| s.starts_with("hf://"))
}

/// Whether `HF_HUB_OFFLINE` asks for no network (1/true/yes/on, as Python's huggingface_hub reads it).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// A local path for the checkpoint at `location`: itself, or for an `hf://`
/// address the weights file in the Hub cache (its `config.json` beside it),
/// downloaded if needed (never when `offline`) and checked (safetensors, JSON).
pub fn resolve(location: &Path, offline: bool) -> Result<PathBuf> {
    if !is_hub(location) {
        return Ok(location.to_path_buf());
    }
    fetch(location, offline)
}

#[cfg(feature = "hub")]
fn fetch(location: &Path, offline: bool) -> Result<PathBuf> {
    use fm_data::hub::{HubAddress, HubClient, HubOptions};

    use crate::ResultExt;

    let text = location.to_string_lossy();
    let address = HubAddress::parse(&text)?;
    let client =
        HubClient::new(&HubOptions { offline: offline || offline_from_env(), ..HubOptions::default() })
            .with_context(|| text.to_string())?;
    let files = client.fetch_checkpoint(&address).with_context(|| text.to_string())?;
    Ok(files.weights)
}

#[cfg(not(feature = "hub"))]
fn fetch(location: &Path, _offline: bool) -> Result<PathBuf> {
    crate::error::bail!("{}: this build has no `hub` feature (hf:// addresses)", location.display())
}
