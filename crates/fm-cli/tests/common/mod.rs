//! Helpers shared by the CLI integration tests: run the `fm` binary, check its
//! outcome, read its JSON, and make per-process temporary directories.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The datasets folder of the tests: `FM_DATA_DIR`, else the development
/// layout (see `build.rs`; tests that need it are ignored when it is absent).
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("FM_TEST_DATA_DIR"))
}

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

/// Deterministic pseudo-random bytes (a 64-bit LCG), so fixtures need no RNG crate.
pub fn lcg(state: &mut u64) -> u8 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (*state >> 56) as u8
}

/// `n` `side × side` images of 3 classes (a bright square of a third of the
/// side in one of three places, jittered by a pixel, on faint noise) and their labels.
pub fn square_images(n: usize, side: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut state = seed;
    let q = side / 3;
    let mut pixels = Vec::with_capacity(n * side * side);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % 3;
        labels.push(k as u8);
        let (r0, c0) = [(q / 4, q / 4), (q / 4, side - q - q / 4), (side - q - q / 4, q)][k];
        let jitter = (lcg(&mut state) % 2) as usize;
        for r in 0..side {
            for c in 0..side {
                let inside = (r0 + jitter..r0 + jitter + q).contains(&r) && (c0..c0 + q).contains(&c);
                let noise = lcg(&mut state) / 4;
                pixels.push(if inside { 255 - noise } else { noise });
            }
        }
    }
    (pixels, labels)
}

/// Writes an MNIST-format folder (the four IDX files) of [`square_images`]:
/// `train` training and `test` test images of `side × side`.
pub fn mnist_idx(dir: &Path, side: usize, train: usize, test: usize) {
    std::fs::create_dir_all(dir).expect("temp dir");
    for (prefix, n, seed) in [("train", train, 1), ("t10k", test, 2)] {
        let (pixels, labels) = square_images(n, side, seed);
        let mut img = vec![0u8, 0, 8, 3];
        for d in [n, side, side] {
            img.extend_from_slice(&(d as u32).to_be_bytes());
        }
        img.extend_from_slice(&pixels);
        let mut lbl = vec![0u8, 0, 8, 1];
        lbl.extend_from_slice(&(n as u32).to_be_bytes());
        lbl.extend_from_slice(&labels);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).expect("write");
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lbl).expect("write");
    }
}
