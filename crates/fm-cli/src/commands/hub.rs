//! `hf://OWNER/REPO[@REVISION][/FILE]` checkpoints: fetched into the Hugging
//! Face Hub cache (fm-data's `hub` module) and used from there.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::HubArgs;

/// Whether a `--checkpoint`/`--init` argument is a Hub address.
pub fn is_hub(arg: &Path) -> bool {
    arg.to_str().is_some_and(|s| s.starts_with("hf://"))
}

/// `--offline`, or `HF_HUB_OFFLINE` set to 1/true/yes/on (as Python's huggingface_hub reads it).
pub fn offline(args: &HubArgs) -> bool {
    args.offline
        || std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// A local path for the checkpoint `arg`: itself, or for an `hf://` address the
/// weights file in the Hub cache (its `config.json` beside it), downloaded if
/// needed (never with `--offline`) and checked (safetensors, JSON).
pub fn resolve_checkpoint(arg: &Path, hub: &HubArgs, flag: &str) -> Result<PathBuf> {
    if !is_hub(arg) {
        return Ok(arg.to_path_buf());
    }
    fetch(arg, hub, flag)
}

#[cfg(feature = "hub")]
fn fetch(arg: &Path, hub: &HubArgs, flag: &str) -> Result<PathBuf> {
    use anyhow::Context;
    use fm_data::hub::{HubAddress, HubClient, HubOptions};

    let text = arg.to_string_lossy();
    let address = HubAddress::parse(&text).with_context(|| flag.to_string())?;
    let client = HubClient::new(&HubOptions { offline: offline(hub), ..HubOptions::default() })
        .with_context(|| format!("{flag} {text}"))?;
    let files = client.fetch_checkpoint(&address).with_context(|| format!("{flag} {text}"))?;
    Ok(files.weights)
}

#[cfg(not(feature = "hub"))]
fn fetch(arg: &Path, _hub: &HubArgs, flag: &str) -> Result<PathBuf> {
    anyhow::bail!("{flag} {}: this fm was built without the `hub` feature (hf:// addresses)", arg.display())
}
