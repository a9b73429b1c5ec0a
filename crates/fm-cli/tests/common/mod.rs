//! Helpers shared by the CLI integration tests: run the `fm` binary, check its
//! outcome, read its JSON, and make per-process temporary directories.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fm")).args(args).output().expect("the fm binary runs")
}

pub fn ok(args: &[&str]) -> String {
    succeeded(args, fm(args))
}

pub fn fails(args: &[&str]) -> String {
    failed(args, fm(args))
}

/// The stdout of a run of `fm args` that must have succeeded.
pub fn succeeded(args: &[&str], out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fm {args:?} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The stderr of a run of `fm args` that must have failed cleanly (no panic).
pub fn failed(args: &[&str], out: Output) -> String {
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

/// The tensor data of a safetensors file (after its JSON header).
pub fn tensor_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let header = bytes.get(..8).map(|h| u64::from_le_bytes(h.try_into().unwrap_or([0; 8])));
    bytes.get(8 + header.unwrap_or(0) as usize..).map(<[u8]>::to_vec).unwrap_or_default()
}

/// `rows` labelled 8×8 "digits" with 17 levels (cell `j` of row `i` is
/// `(i·step + 3j) mod 17`), in sklearn's CSV layout, written to `dir`; returns `digits:PATH`.
pub fn digits_csv(dir: &Path, rows: u32, step: u32) -> String {
    std::fs::create_dir_all(dir).ok();
    let mut text = String::new();
    for i in 0..rows {
        let cells: Vec<String> =
            (0..64).map(|j| ((i * step + j * 3) % 17).to_string()).chain([(i % 10).to_string()]).collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    let csv = dir.join("digits.csv");
    std::fs::write(&csv, text).ok();
    format!("digits:{}", s(&csv))
}
