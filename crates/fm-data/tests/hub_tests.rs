//! The Hub client against a loopback HTTP server: real hf-hub downloads into a
//! temporary cache, offline reuse with the server gone, and the failure cases
//! (404, truncated body, corrupt safetensors) leaving nothing a later run trusts.

#[path = "support/hub_server.rs"]
mod hub_server;

use std::path::{Path, PathBuf};

use fm_data::hub::{HubAddress, HubClient, HubOptions};
use hub_server::{HubServer, COMMIT};

const REPO: &str = "fm-test/tiny";

/// A valid safetensors file: one f32 tensor `w = [1, 2]`.
fn safetensors_bytes() -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_vec();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(&header);
    for v in [1.0f32, 2.0] {
        out.extend(v.to_le_bytes());
    }
    out
}

const CONFIG: &[u8] = br#"{"format_version":1,"fm_version":"0.1.0","model":{"kind":"mlp"}}"#;

fn temp_cache(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fm-hub-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn client(endpoint: &str, cache: &Path, offline: bool) -> anyhow::Result<HubClient> {
    Ok(HubClient::new(&HubOptions {
        endpoint: Some(endpoint.to_string()),
        cache_dir: Some(cache.to_path_buf()),
        token: None,
        offline,
        max_attempts: Some(1),
    })?)
}

fn address() -> anyhow::Result<HubAddress> {
    Ok(HubAddress::parse(&format!("hf://{REPO}"))?)
}

/// Every regular file under `dir` (recursively), as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn downloads_into_the_cache_then_reuses_it_offline_with_the_server_gone() -> anyhow::Result<()> {
    let cache = temp_cache("roundtrip");
    let mut server = HubServer::start()?;
    server.put(REPO, "main", "model.safetensors", safetensors_bytes(), None);
    server.put(REPO, "main", "config.json", CONFIG.to_vec(), None);

    let online = client(&server.endpoint, &cache, false)?;
    let got = online.fetch_checkpoint(&address()?)?;
    assert_eq!(std::fs::read(&got.weights)?, safetensors_bytes());
    assert_eq!(std::fs::read(&got.config)?, CONFIG);
    // The standard cache layout: snapshots/<commit>/<file>, refs/main = commit.
    let repo_dir = cache.join("models--fm-test--tiny");
    assert_eq!(got.weights, repo_dir.join("snapshots").join(COMMIT).join("model.safetensors"));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main"))?.trim(), COMMIT);
    let requests = server.requests();
    for r in [
        "HEAD /fm-test/tiny/resolve/main/model.safetensors",
        "GET /fm-test/tiny/resolve/main/model.safetensors",
        "HEAD /fm-test/tiny/resolve/main/config.json",
        "GET /fm-test/tiny/resolve/main/config.json",
    ] {
        assert!(requests.iter().any(|q| q == r), "{r} not in {requests:?}");
    }

    // Offline: no request at all, same files.
    let seen = server.requests().len();
    let offline = client(&server.endpoint, &cache, true)?;
    assert_eq!(offline.fetch_checkpoint(&address()?)?, got);
    assert_eq!(server.requests().len(), seen, "offline made a request");

    // Server gone: offline still works, and so does an online client (it falls back to the cache).
    let endpoint = server.endpoint.clone();
    server.stop();
    assert_eq!(client(&endpoint, &cache, true)?.fetch_checkpoint(&address()?)?, got);
    assert_eq!(client(&endpoint, &cache, false)?.fetch_checkpoint(&address()?)?, got);
    // A commit-pinned address resolves from the cache too.
    let pinned = HubAddress::parse(&format!("hf://{REPO}@{COMMIT}"))?;
    assert_eq!(client(&endpoint, &cache, true)?.fetch_checkpoint(&pinned)?.weights, got.weights);
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

#[test]
fn offline_with_an_empty_cache_fails_clearly_and_makes_no_request() -> anyhow::Result<()> {
    let cache = temp_cache("offline-empty");
    let server = HubServer::start()?;
    server.put(REPO, "main", "model.safetensors", safetensors_bytes(), None);
    let err = client(&server.endpoint, &cache, true)?.fetch_checkpoint(&address()?).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("model.safetensors") && msg.contains("not in the Hub cache"), "{msg}");
    assert!(msg.contains("--offline"), "{msg}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

#[test]
fn a_missing_file_is_a_clear_404_error() -> anyhow::Result<()> {
    let cache = temp_cache("404");
    let server = HubServer::start()?;
    server.put(REPO, "main", "model.safetensors", safetensors_bytes(), None);
    // No config.json on the server.
    let err = client(&server.endpoint, &cache, false)?.fetch_checkpoint(&address()?).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("hf://fm-test/tiny@main/config.json"), "{msg}");
    assert!(msg.contains("no such file in the repository"), "{msg}");
    // Nothing for config.json under snapshots/.
    assert!(!cache.join("models--fm-test--tiny/snapshots").join(COMMIT).join("config.json").exists());
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

#[test]
fn a_truncated_body_leaves_nothing_a_later_run_trusts() -> anyhow::Result<()> {
    let cache = temp_cache("truncated");
    let server = HubServer::start()?;
    let full = safetensors_bytes();
    server.put(REPO, "main", "model.safetensors", full.clone(), Some(full.len() / 2));
    server.put(REPO, "main", "config.json", CONFIG.to_vec(), None);
    let err = client(&server.endpoint, &cache, false)?.fetch_checkpoint(&address()?).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("model.safetensors") && msg.contains("download from"), "{msg}");
    // No snapshot entry and no complete blob: at most a `.incomplete` file.
    let files = files_under(&cache);
    assert!(!files.iter().any(|f| f.contains("snapshots")), "{files:?}");
    assert!(files.iter().filter(|f| f.contains("blobs")).all(|f| f.ends_with(".incomplete")), "{files:?}");
    // A later offline run does not find it.
    let offline = client(&server.endpoint, &cache, true)?.fetch_checkpoint(&address()?).err();
    assert!(offline.map(|e| e.to_string()).unwrap_or_default().contains("not in the Hub cache"));
    // Once the server sends the whole body, the download succeeds.
    server.put(REPO, "main", "model.safetensors", full.clone(), None);
    let got = client(&server.endpoint, &cache, false)?.fetch_checkpoint(&address()?)?;
    assert_eq!(std::fs::read(got.weights)?, full);
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

#[test]
fn a_corrupt_safetensors_file_is_named_and_evicted_from_the_cache() -> anyhow::Result<()> {
    let cache = temp_cache("corrupt");
    let server = HubServer::start()?;
    let mut bad = safetensors_bytes();
    bad[0] = 0xff; // header length far beyond the file
    server.put(REPO, "main", "model.safetensors", bad, None);
    server.put(REPO, "main", "config.json", CONFIG.to_vec(), None);
    let err = client(&server.endpoint, &cache, false)?.fetch_checkpoint(&address()?).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("model.safetensors") && msg.contains("not a valid safetensors file"), "{msg}");
    let snapshot = cache.join("models--fm-test--tiny/snapshots").join(COMMIT);
    assert!(!snapshot.join("model.safetensors").exists());
    let files = files_under(&cache.join("models--fm-test--tiny/blobs"));
    assert_eq!(files.len(), 1, "only config.json's blob stays: {files:?}");
    let offline = client(&server.endpoint, &cache, true)?.fetch_checkpoint(&address()?).err();
    assert!(offline.map(|e| e.to_string()).unwrap_or_default().contains("not in the Hub cache"));

    // A corrupt config.json is named the same way.
    server.put(REPO, "main", "model.safetensors", safetensors_bytes(), None);
    server.put(REPO, "main", "config.json", b"{\"model\": ".to_vec(), None);
    let err = client(&server.endpoint, &cache, false)?.fetch_checkpoint(&address()?).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("config.json") && msg.contains("not valid JSON"), "{msg}");
    assert!(!snapshot.join("config.json").exists());
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
