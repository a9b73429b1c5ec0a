//! Helpers shared by the CLI integration tests: run the `fm` binary, check its
//! outcome, read its JSON, and make per-process temporary directories.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fm")).args(args).output().expect("the fm binary runs")
}

pub fn ok(args: &[&str]) -> String {
    let out = fm(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fm {args:?} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn fails(args: &[&str]) -> String {
    let out = fm(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "fm {args:?} should fail");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "fm {args:?} panicked: {stderr}"
    );
    stderr
}

pub fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {line}"))
}

/// Runs `fm` (which must succeed) and parses its last stdout line as JSON.
pub fn ok_json(args: &[&str]) -> serde_json::Value {
    last_json(&ok(args))
}

pub fn temp_in(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fm-{prefix}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}
