//! Files from the Hugging Face Hub: `hf://OWNER/REPO[@REVISION][/FILE]`
//! addresses, downloads into the standard Hub cache (with the `hf-hub`
//! crate), offline reuse, and a check of what was downloaded.
//!
//! - The cache is the one Python's `huggingface_hub` uses: `HF_HUB_CACHE`,
//!   else `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (or
//!   [`HubOptions::cache_dir`]). `HF_ENDPOINT` and `HF_TOKEN` are honoured
//!   the same way ([`HubOptions::endpoint`], [`HubOptions::token`] override them).
//! - Offline ([`HubOptions::offline`]) makes no request at all: the file must
//!   already be in the cache.
//! - A download lands atomically: `hf-hub` streams the body into
//!   `blobs/<etag>.incomplete` and renames it only when the body is complete,
//!   so a truncated transfer leaves nothing a later (offline) run would use.
//! - After fetching, [`HubClient::fetch_checkpoint`] checks that the weights
//!   parse as safetensors and the configuration as JSON; a file that does not
//!   is removed from the cache (snapshot link and blob) and the error names it.
//!
//! ```
//! use fm_data::hub::HubAddress;
//!
//! # fn main() -> fm_data::Result<()> {
//! let a = HubAddress::parse("hf://fm-rs/mnist-unet@v1/ema/model.safetensors")?;
//! assert_eq!(a.repo(), "fm-rs/mnist-unet");
//! assert_eq!(a.revision, "v1");
//! assert_eq!(a.checkpoint_files(), ("ema/model.safetensors".into(), "ema/config.json".into()));
//! assert!(HubAddress::parse("hf://just-a-name").is_err());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use hf_hub::{HFClient, HFClientSync, HFError};

use crate::{Error, Result};

/// The scheme of a Hub address.
pub const SCHEME: &str = "hf://";
/// The revision used when an address names none.
pub const DEFAULT_REVISION: &str = "main";
/// The weights file of a checkpoint repository (as `fm export --format hub` writes it).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The configuration file of a checkpoint repository.
pub const CONFIG_FILE: &str = "config.json";

/// A parsed `hf://OWNER/REPO[@REVISION][/FILE]` address (a model repository).
///
/// `FILE` may contain `/` (a file in a folder of the repository); `REVISION`
/// is a branch, a tag or a commit and may not contain `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    /// The owner (user or organisation).
    pub owner: String,
    /// The repository name.
    pub name: String,
    /// The revision ([`DEFAULT_REVISION`] when the address names none).
    pub revision: String,
    /// The path inside the repository, if the address names one.
    pub file: Option<String>,
}

impl HubAddress {
    /// Whether `s` is a Hub address (starts with `hf://`).
    pub fn is_hub(s: &str) -> bool {
        s.starts_with(SCHEME)
    }

    /// Parses `hf://OWNER/REPO[@REVISION][/FILE]`; the error says what is wrong.
    pub fn parse(address: &str) -> Result<Self> {
        let bad = |reason: &str| Error::HubAddress {
            address: address.to_string(),
            reason: format!("{reason}; expected hf://OWNER/REPO[@REVISION][/FILE]"),
        };
        let rest = address.strip_prefix(SCHEME).ok_or_else(|| bad("it does not start with hf://"))?;
        let mut parts = rest.splitn(3, '/');
        let owner = parts.next().unwrap_or_default();
        let repo = parts.next().ok_or_else(|| bad("no repository name"))?;
        let file = parts.next().filter(|f| !f.is_empty()).map(str::to_string);
        let (name, revision) = match repo.split_once('@') {
            Some((n, r)) => (n, r),
            None => (repo, DEFAULT_REVISION),
        };
        let valid =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid(owner) || !valid(name) {
            return Err(bad("the owner and the repository name must be non-empty [A-Za-z0-9-_.]"));
        }
        if revision.is_empty() {
            return Err(bad("an empty revision after @"));
        }
        if let Some(f) = &file {
            if f.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
                return Err(bad("the file path has an empty, `.` or `..` segment"));
            }
        }
        Ok(Self { owner: owner.into(), name: name.into(), revision: revision.into(), file })
    }

    /// The repository id, `OWNER/NAME`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The weights and configuration files of the checkpoint this address names:
    /// `FILE` ending in `.safetensors` is the weights file (the configuration
    /// beside it); another `FILE` is a folder holding both; no `FILE` is the
    /// repository's root.
    pub fn checkpoint_files(&self) -> (String, String) {
        let join = |dir: &str, f: &str| if dir.is_empty() { f.to_string() } else { format!("{dir}/{f}") };
        match self.file.as_deref() {
            Some(f) if f.ends_with(".safetensors") => {
                let dir = f.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                (f.to_string(), join(dir, CONFIG_FILE))
            }
            Some(dir) => (join(dir, WEIGHTS_FILE), join(dir, CONFIG_FILE)),
            None => (WEIGHTS_FILE.to_string(), CONFIG_FILE.to_string()),
        }
    }
}

impl fmt::Display for HubAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}@{}", self.repo(), self.revision)?;
        match &self.file {
            Some(file) => write!(f, "/{file}"),
            None => Ok(()),
        }
    }
}

/// How to reach the Hub. Every `None` falls back to hf-hub's environment
/// lookup (`HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN`).
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The Hub's base URL (default: `HF_ENDPOINT`, else `https://huggingface.co`).
    pub endpoint: Option<String>,
    /// The cache directory (default: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// An access token for private repositories (default: `HF_TOKEN`, else `$HF_HOME/token`).
    pub token: Option<String>,
    /// Use only the cache; make no request at all.
    pub offline: bool,
    /// Attempts per request on transient failures (hf-hub's default is 5).
    pub max_attempts: Option<usize>,
}

/// A checkpoint's two files in the local Hub cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCheckpoint {
    /// The weights (safetensors), `…/snapshots/<commit>/<file>`.
    pub weights: PathBuf,
    /// The configuration (JSON) beside it.
    pub config: PathBuf,
}

/// A blocking Hub client bound to one cache.
pub struct HubClient {
    client: HFClientSync,
    endpoint: String,
    cache_dir: PathBuf,
    offline: bool,
}

impl fmt::Debug for HubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubClient")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir())
            .field("offline", &self.offline)
            .finish()
    }
}

impl HubClient {
    /// A client with `options`; fails on an endpoint that is not a URL.
    pub fn new(options: &HubOptions) -> Result<Self> {
        let mut b = HFClient::builder();
        if let Some(e) = &options.endpoint {
            b = b.endpoint(e.clone());
        }
        if let Some(c) = &options.cache_dir {
            b = b.cache_dir(c.clone());
        }
        if let Some(t) = &options.token {
            b = b.token(t.clone());
        }
        if let Some(n) = options.max_attempts {
            b = b.retry_max_attempts(n.max(1));
        }
        let failed = |e: HFError| Error::HubAddress {
            address: options.endpoint.clone().unwrap_or_else(|| "HF_ENDPOINT".into()),
            reason: format!("cannot build a Hub client: {}", error_chain(&e)),
        };
        let inner = b.build().map_err(failed)?;
        let (endpoint, cache_dir) = (inner.endpoint().to_string(), inner.cache_dir().to_path_buf());
        let client = HFClientSync::from_inner(inner).map_err(failed)?;
        Ok(Self { client, endpoint, cache_dir, offline: options.offline })
    }

    /// The cache directory in use.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Fetches `file` of `address`'s repository and revision into the cache
    /// (or finds it there) and returns its path in the cache.
    pub fn fetch(&self, address: &HubAddress, file: &str) -> Result<PathBuf> {
        let repo = self.client.model(address.owner.clone(), address.name.clone());
        repo.download_file()
            .filename(file.to_string())
            .revision(address.revision.clone())
            .local_files_only(self.offline)
            .send()
            .map_err(|e| self.hub_error(&address.repo(), &address.revision, file, &e))
    }

    /// Fetches `file` of the dataset repository `repo` (`OWNER/NAME`) at
    /// `revision` into the cache (or finds it there) and returns its path.
    pub fn fetch_dataset_file(&self, repo: &str, revision: &str, file: &str) -> Result<PathBuf> {
        let (owner, name) = repo.split_once('/').ok_or_else(|| Error::HubAddress {
            address: repo.to_string(),
            reason: "a dataset repository is OWNER/NAME".into(),
        })?;
        self.client
            .dataset(owner.to_string(), name.to_string())
            .download_file()
            .filename(file.to_string())
            .revision(revision.to_string())
            .local_files_only(self.offline)
            .send()
            .map_err(|e| self.hub_error(&format!("datasets/{repo}"), revision, file, &e))
    }

    /// Fetches a checkpoint's weights and configuration (see
    /// [`HubAddress::checkpoint_files`]) and checks them: the weights must parse
    /// as safetensors and the configuration as JSON. A file that does not is
    /// removed from the cache, so the next run downloads it again.
    pub fn fetch_checkpoint(&self, address: &HubAddress) -> Result<HubCheckpoint> {
        let (weights_name, config_name) = address.checkpoint_files();
        let weights = self.fetch(address, &weights_name)?;
        let config = self.fetch(address, &config_name)?;
        let corrupt = |file: &str, path: &Path, reason: String| {
            evict(path);
            Error::Hub {
                repo: address.repo(),
                revision: address.revision.clone(),
                file: file.to_string(),
                reason: format!(
                    "{reason}; the file ({}) was removed from the cache, the next run downloads it again",
                    path.display()
                ),
            }
        };
        let read = |file: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|io| Error::Io { path: path.to_path_buf(), io })
                .map(|b| (file.to_string(), b))
        };
        let (_, bytes) = read(&weights_name, &weights)?;
        if let Err(e) = safetensors::SafeTensors::deserialize(&bytes) {
            return Err(corrupt(&weights_name, &weights, format!("not a valid safetensors file ({e})")));
        }
        let (_, json) = read(&config_name, &config)?;
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&json) {
            return Err(corrupt(&config_name, &config, format!("not valid JSON ({e})")));
        }
        Ok(HubCheckpoint { weights, config })
    }

    fn hub_error(&self, repo: &str, revision: &str, file: &str, e: &HFError) -> Error {
        let reason = match e {
            HFError::EntryNotFound { .. } => "no such file in the repository at this revision".to_string(),
            HFError::RepoNotFound { .. } => {
                "no such repository (a private one needs a token: set HF_TOKEN)".to_string()
            }
            HFError::RevisionNotFound { .. } => "no such revision in the repository".to_string(),
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => {
                format!("access denied; set HF_TOKEN to a token that may read it ({e})")
            }
            HFError::LocalEntryNotFound { .. } => format!(
                "not in the Hub cache {} (offline: no request made); run once without --offline to download it",
                self.cache_dir().display()
            ),
            _ => format!("download from {} failed: {}", self.endpoint(), error_chain(e)),
        };
        Error::Hub { repo: repo.to_string(), revision: revision.to_string(), file: file.to_string(), reason }
    }
}

/// An error and its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Removes a cached file: the snapshot entry and, if it is a link, the blob it points to.
fn evict(path: &Path) {
    if let Ok(target) = std::fs::read_link(path) {
        let blob =
            if target.is_absolute() { target } else { path.parent().unwrap_or(Path::new(".")).join(target) };
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() -> Result<()> {
        let a = HubAddress::parse("hf://me/net")?;
        assert_eq!(
            (a.owner.as_str(), a.name.as_str(), a.revision.as_str(), a.file.clone()),
            ("me", "net", "main", None)
        );
        assert_eq!(a.to_string(), "hf://me/net@main");
        assert_eq!(a.checkpoint_files(), ("model.safetensors".into(), "config.json".into()));
        let b = HubAddress::parse("hf://me/net@0123abc/runs/ema")?;
        assert_eq!(b.revision, "0123abc");
        assert_eq!(
            b.checkpoint_files(),
            ("runs/ema/model.safetensors".into(), "runs/ema/config.json".into())
        );
        assert_eq!(b.to_string(), "hf://me/net@0123abc/runs/ema");
        let c = HubAddress::parse("hf://me/net/w.safetensors")?;
        assert_eq!(c.checkpoint_files(), ("w.safetensors".into(), "config.json".into()));
        for bad in [
            "me/net",
            "hf://me",
            "hf:///net",
            "hf://me/",
            "hf://me/net@",
            "hf://m e/net",
            "hf://me/net/a//b",
            "hf://me/net/../x",
        ] {
            let err = HubAddress::parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("hf://OWNER/REPO"), "{bad}: {err}");
        }
        assert!(HubAddress::is_hub("hf://a/b") && !HubAddress::is_hub("runs/a"));
        Ok(())
    }
}
