//! End-to-end tests of `fm classifier train` and `fm frechet` on a tiny
//! synthetic MNIST-format dataset the tests write.

use std::path::{Path, PathBuf};

mod common;
use common::{fails, last_json, ok, s, temp_in};

fn temp(name: &str) -> PathBuf {
    temp_in("frechet", name)
}

const SIDE: usize = 12;

/// Deterministic pseudo-random bytes (a 64-bit LCG), so the fixture needs no RNG crate.
fn lcg(state: &mut u64) -> u8 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (*state >> 56) as u8
}

/// `n` 12×12 images of 3 classes (a bright 4×4 square in one of three places on faint
/// noise) with their labels.
fn images(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut state = seed;
    let mut pixels = Vec::with_capacity(n * SIDE * SIDE);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % 3;
        labels.push(k as u8);
        let (r0, c0) = [(1, 1), (1, 7), (7, 4)][k];
        let jitter = (lcg(&mut state) % 2) as usize;
        for r in 0..SIDE {
            for c in 0..SIDE {
                let inside = (r0 + jitter..r0 + jitter + 4).contains(&r) && (c0..c0 + 4).contains(&c);
                let noise = lcg(&mut state) / 4;
                pixels.push(if inside { 255 - noise } else { noise });
            }
        }
    }
    (pixels, labels)
}

/// Writes an MNIST-format directory (the four IDX files).
fn mnist_dir(dir: &Path) {
    std::fs::create_dir_all(dir).expect("temp dir");
    for (prefix, n, seed) in [("train", 240, 1), ("t10k", 90, 2)] {
        let (pixels, labels) = images(n, seed);
        let mut img = vec![0u8, 0, 8, 3];
        for d in [n, SIDE, SIDE] {
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

/// A float32 `.npy` of shape `(rows, cols)`.
fn npy(path: &Path, data: &[f32], rows: usize, cols: usize) {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut header = dict;
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    for v in data {
        b.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, b).expect("write npy");
}

#[test]
fn classifier_trains_and_the_frechet_distance_orders_references() {
    let root = temp("e2e");
    let data_dir = root.join("mnist");
    mnist_dir(&data_dir);
    let data = format!("mnist:{}", s(&data_dir));
    let clf = root.join("clf");
    let out = ok(&[
        "classifier",
        "train",
        "--data",
        &data,
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--out",
        s(&clf),
        "--json",
    ]);
    let j = last_json(&out);
    assert!(j["test_accuracy"].as_f64().is_some_and(|a| a >= 0.95), "{j}");
    let sha = j["sha256"].as_str().unwrap_or_default().to_string();
    assert!(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()), "{j}");
    assert!(clf.join("classifier.safetensors").is_file() && clf.join("classifier.json").is_file());

    let score = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["frechet", "--classifier", s(&clf), "--data", &data, "--json"];
        args.extend_from_slice(extra);
        last_json(&ok(&args))
    };
    // The reference itself is at distance 0; the JSON names the classifier by its checksum.
    let same = score(&["--baseline", "test", "--n", "90"]);
    assert_eq!(same["classifier_sha256"].as_str(), Some(sha.as_str()), "{same}");
    assert_eq!(same["n"].as_u64(), Some(90));
    assert!(same["frechet_distance"].as_f64().is_some_and(|f| (0.0..1e-6).contains(&f)), "{same}");

    // More noise, larger distance.
    let fd =
        |spec: &str| score(&["--baseline", spec, "--n", "90"])["frechet_distance"].as_f64().unwrap_or(-1.0);
    let (small, large) = (fd("noise:0.1"), fd("noise:0.6"));
    assert!(0.0 < small && small < large, "noise 0.1: {small}, noise 0.6: {large}");
    assert!(fd("blur:1.5") > 0.0);
    assert!(fd("train") > 0.0);

    // The test images written as a .npy score 0, in [-1, 1] or (with --zero-one) in [0, 1].
    let (pixels, _) = images(90, 2);
    let minus: Vec<f32> = pixels.iter().map(|&p| (p as f32 + 0.5) * 2.0 / 256.0 - 1.0).collect();
    let zero: Vec<f32> = minus.iter().map(|v| (v + 1.0) / 2.0).collect();
    let (a, b) = (root.join("minus.npy"), root.join("zero.npy"));
    npy(&a, &minus, 90, SIDE * SIDE);
    npy(&b, &zero, 90, SIDE * SIDE);
    let fa = score(&["--samples", s(&a), "--n", "90"]);
    assert!(fa["frechet_distance"].as_f64().is_some_and(|f| f < 1e-6), "{fa}");
    let fb = score(&["--samples", s(&b), "--n", "90", "--zero-one"]);
    assert!(fb["frechet_distance"].as_f64().is_some_and(|f| f < 1e-4), "{fb}");

    // Errors name the flag or file.
    let e = fails(&["frechet", "--samples", s(&a), "--n", "91", "--classifier", s(&clf), "--data", &data]);
    assert!(e.contains("--samples") && e.contains("fewer than --n 91"), "{e}");
    let wrong = root.join("wrong.npy");
    npy(&wrong, &minus[..90 * 10], 90, 10);
    let e =
        fails(&["frechet", "--samples", s(&wrong), "--n", "90", "--classifier", s(&clf), "--data", &data]);
    assert!(e.contains("wrong.npy") && e.contains("shape"), "{e}");
    let e = fails(&["frechet", "--baseline", "test", "--classifier", s(&root), "--data", &data]);
    assert!(e.contains("--classifier") && e.contains("classifier.safetensors"), "{e}");
    let e = fails(&["frechet", "--baseline", "fog:1", "--n", "90", "--classifier", s(&clf), "--data", &data]);
    assert!(e.contains("--baseline fog:1"), "{e}");
    let e = fails(&["frechet", "--classifier", s(&clf), "--data", &data]);
    assert!(e.contains("--samples") || e.contains("required"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

/// On the real MNIST (when `../shared/data/mnist` is present): a classifier trained
/// for one epoch scores 10,000 training images closer to the test set than noised
/// test images.
#[test]
#[ignore = "a minute or more; run with --ignored where ../shared/data/mnist exists"]
fn real_mnist_reference_figures_are_ordered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist");
    if !dir.join("t10k-images-idx3-ubyte").exists() && !dir.join("t10k-images-idx3-ubyte.gz").exists() {
        eprintln!("skipping: no MNIST at {}", dir.display());
        return;
    }
    let root = temp("real");
    let data = format!("mnist:{}", s(&dir));
    let clf = root.join("clf");
    let j = last_json(&ok(&[
        "classifier",
        "train",
        "--data",
        &data,
        "--epochs",
        "1",
        "--out",
        s(&clf),
        "--json",
    ]));
    assert!(j["test_accuracy"].as_f64().is_some_and(|a| a > 0.97), "{j}");
    let fd = |spec: &str| {
        let out = ok(&[
            "frechet",
            "--baseline",
            spec,
            "--n",
            "10000",
            "--classifier",
            s(&clf),
            "--data",
            &data,
            "--json",
        ]);
        last_json(&out)["frechet_distance"].as_f64().unwrap_or(-1.0)
    };
    let (train, noise) = (fd("train"), fd("noise:0.3"));
    assert!(0.0 < train && train < noise, "train {train}, noise {noise}");
    let _ = std::fs::remove_dir_all(&root);
}
