//! End-to-end tests of the training objectives: `--objective efm --efm-m`,
//! `--parametrization`, `--weighting`, `--jacobian-reg`.

use std::path::PathBuf;

mod common;
use common::{fails, last_json, ok, s, temp_in};

fn temp(name: &str) -> PathBuf {
    temp_in("objective", name)
}

/// EFM with a data-predicting network, the FM weighting and a Jacobian
/// penalty: trains, records every option, samples (through the conversion to a
/// velocity), computes exact likelihoods, and resumes.
#[test]
fn efm_data_prediction_with_jacobian_penalty_trains_samples_and_resumes() {
    let dir = temp("efm");
    let common = ["--data", "8gaussians", "--n-train", "300", "--hidden", "32,32", "--quiet"];
    let mut args = vec!["train"];
    args.extend(common);
    args.extend([
        "--objective",
        "efm",
        "--efm-m",
        "32",
        "--parametrization",
        "data",
        "--weighting",
        "velocity",
        "--jacobian-reg",
        "0.01",
        "--steps",
        "150",
        "--checkpoint-every",
        "100",
        "--lr",
        "0.003",
        "--sample-n",
        "200",
        "--out",
        s(&dir),
        "--json",
    ]);
    let j = last_json(&ok(&args));
    assert!(j["loss"].as_f64().is_some_and(f64::is_finite), "{j}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config.json"))
            .expect("config.json is JSON");
    let t = &config["training"];
    assert_eq!(t["objective"], "efm", "{t}");
    assert_eq!(t["efm_m"], 32, "{t}");
    assert_eq!(t["parametrization"], "data", "{t}");
    assert_eq!(t["weighting"], "velocity", "{t}");
    assert_eq!(t["jacobian_reg"], 0.01, "{t}");
    // Sampling converts x̂₁ to a velocity, with t = 1 clamped: rk4 evaluates there.
    let samples = dir.join("s.csv");
    ok(&[
        "sample",
        "--checkpoint",
        s(&dir),
        "--solver",
        "rk4",
        "--steps",
        "10",
        "--n",
        "50",
        "--out",
        s(&samples),
    ]);
    let text = std::fs::read_to_string(&samples).expect("samples");
    let values: Vec<f64> = text
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').filter_map(|v| v.trim().parse::<f64>().ok()))
        .collect();
    assert_eq!(values.len(), 100, "{text}");
    assert!(values.iter().all(|v| v.is_finite() && v.abs() < 50.0), "{values:?}");
    let l = last_json(&ok(&[
        "likelihood",
        "--checkpoint",
        s(&dir),
        "--exact",
        "--steps",
        "10",
        "--n",
        "100",
        "--json",
    ]));
    assert!(l["nll"].as_f64().is_some_and(f64::is_finite), "{l}");
    // Resume from the step-100 checkpoint is refused with changed options and works without.
    let e = fails(&["train", "--resume", s(&dir), "--weighting", "noise"]);
    assert!(e.contains("--weighting"), "{e}");
    ok(&["train", "--resume", s(&dir), "--steps", "160", "--quiet", "--sample-n", "50"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// Bad objective options fail with a message naming the flag.
#[test]
fn bad_objective_options_name_the_flag() {
    let out = temp("bad");
    let o = s(&out);
    let e = fails(&["train", "--data", "8gaussians", "--objective", "efm", "--steps", "5", "--out", o]);
    assert!(e.contains("--n-train"), "{e}");
    let e = fails(&["train", "--efm-m", "8", "--steps", "5", "--out", o]);
    assert!(e.contains("--efm-m"), "{e}");
    let e = fails(&["train", "--parametrization", "score", "--steps", "5", "--out", o]);
    assert!(e.contains("--parametrization") && e.contains("noise"), "{e}");
    let e = fails(&["train", "--weighting", "snr", "--steps", "5", "--out", o]);
    assert!(e.contains("--weighting"), "{e}");
    let e = fails(&["train", "--jacobian-reg", "0", "--steps", "5", "--out", o]);
    assert!(e.contains("--jacobian-reg"), "{e}");
    let e = fails(&["train", "--matcher", "otcfm", "--parametrization", "noise", "--steps", "5", "--out", o]);
    assert!(e.contains("--matcher"), "{e}");
    let e =
        fails(&["train", "--objective", "likelihood", "--weighting", "noise", "--steps", "5", "--out", o]);
    assert!(e.contains("likelihood"), "{e}");
}

/// 28×28 images in MNIST's files, average-pooled to 14×14 (`--data
/// mnist14:DIR`) with `--n-train`: EFM draws its references from those images,
/// and `fm analyze hybrid` finds them as the training set (û* alone, τ = 1,
/// lands on them). A fixture in MNIST's format (the real MNIST behaves alike).
#[test]
fn mnist14_efm_and_hybrid_use_the_training_images() {
    let dir = temp("mnist14");
    let mnist = dir.join("mnist");
    common::mnist_idx(&mnist, 28, 150, 30);
    let data = format!("mnist14:{}", mnist.display());
    ok(&[
        "train",
        "--data",
        &data,
        "--n-train",
        "100",
        "--objective",
        "efm",
        "--efm-m",
        "8",
        "--hidden",
        "64",
        "--steps",
        "20",
        "--sample-n",
        "16",
        "--sample-steps",
        "4",
        "--out",
        s(&dir),
        "--quiet",
    ]);
    let out = dir.join("hybrid");
    let j = last_json(&ok(&[
        "analyze",
        "hybrid",
        "--checkpoint",
        s(&dir),
        "--taus",
        "0,1",
        "--n",
        "16",
        "--steps",
        "50",
        "--out",
        s(&out),
        "--json",
    ]));
    assert_eq!(j["n_train"], 100, "{j}");
    let med: Vec<f64> = j["median_nn_distance"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    assert_eq!(med.len(), 2, "{j}");
    // 196 pixels in [−1, 1]: û* ends on a training image, the barely trained model does not.
    assert!(med[1] < 0.05 && med[0] > 1.0, "{j}");
    let e = fails(&[
        "train",
        "--data",
        &format!("mnist13:{}", mnist.display()),
        "--steps",
        "1",
        "--out",
        s(&dir),
    ]);
    assert!(e.contains("13×13"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
