//! End-to-end tests of `fm classifier train` and `fm frechet` on a tiny
//! synthetic MNIST-format dataset the tests write.

use std::path::{Path, PathBuf};

mod common;
use common::{fails, last_json, ok, s, temp_in};

fn temp(name: &str) -> PathBuf {
    temp_in("frechet", name)
}

const SIDE: usize = 12;

/// `n` 12×12 images of 3 classes with their labels ([`common::square_images`]).
fn images(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    common::square_images(n, SIDE, seed)
}

/// Writes an MNIST-format directory of 12×12 images (240 training, 90 test).
fn mnist_dir(dir: &Path) {
    common::mnist_idx(dir, SIDE, 240, 90);
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

/// On the real MNIST (`FM_DATA_DIR/mnist`): a classifier trained for one epoch
/// scores 10,000 training images closer to the test set than noised test images.
#[test]
#[ignore = "a minute or more; run with --ignored with the datasets in FM_DATA_DIR (see docs/data.md)"]
fn real_mnist_reference_figures_are_ordered() {
    let dir = common::data_dir().join("mnist");
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

/// Without `--classifier`, `fm frechet` scores with the classifier that ships
/// with fm: the SHA-256 it prints is the pinned one, whatever the machine,
/// and a set scored against itself is at distance 0.
#[test]
fn the_pinned_classifier_is_the_default_and_prints_its_checksum() {
    let root = temp("pinned");
    let data_dir = root.join("mnist");
    common::mnist_idx(&data_dir, 28, 40, 30);
    let data = format!("mnist:{}", s(&data_dir));
    let j = last_json(&ok(&["frechet", "--baseline", "test", "--n", "30", "--data", &data, "--json"]));
    assert_eq!(j["classifier_sha256"].as_str(), Some(fm_models::classifier::PINNED_MNIST_SHA256), "{j}");
    assert!(j["frechet_distance"].as_f64().is_some_and(|d| d.abs() < 1e-3), "{j}");
    assert!(j["classifier_test_accuracy"].as_f64().is_some_and(|a| a > 0.99), "{j}");
    // 12×12 images do not fit it: the message says so.
    let small = root.join("small");
    mnist_dir(&small);
    let e = fails(&["frechet", "--baseline", "test", "--data", &format!("mnist:{}", s(&small))]);
    assert!(e.contains("do not fit the classifier"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

/// On the real MNIST: the pinned classifier puts 10,000 training images at a
/// small distance from the test set, and noised test images farther.
#[test]
#[cfg_attr(not(fm_data), ignore = "needs the datasets: set FM_DATA_DIR (see docs/data.md)")]
fn the_pinned_classifier_orders_real_mnist_references() {
    let data = format!("mnist:{}", s(&common::data_dir().join("mnist")));
    let fd = |spec: &str| {
        let out = ok(&["frechet", "--baseline", spec, "--n", "5000", "--data", &data, "--json"]);
        last_json(&out)["frechet_distance"].as_f64().unwrap_or(-1.0)
    };
    let (train, noise) = (fd("train"), fd("noise:0.3"));
    assert!(0.0 < train && train < 5.0 && train < noise, "train {train}, noise {noise}");
}
