//! Discrete flow matching from the command line: `fm train --model discrete`
//! on the checkerboard (the report's ELBO, the CTMC sampler's name and NFE),
//! `fm sample`, `fm likelihood` and `fm eval` on the checkpoint, `--model
//! discrete-unet` on binarized MNIST-format images with guidance and `fm
//! frechet --bins`, and what is refused by flag.

mod common;

use std::path::PathBuf;

use common::{fails, last_json, ok, s, temp_in};

fn temp(name: &str) -> PathBuf {
    let d = temp_in("discrete", name);
    std::fs::create_dir_all(&d).ok();
    d
}

/// The MLP on the checkerboard: the report names the model, the tokens, the
/// sampler and the ELBO; `fm sample` takes `--steps` as CTMC steps (NFE =
/// steps) and writes cell centres; `fm likelihood` reports a bound in nats and
/// bits per token; flags that do not apply are refused.
#[test]
fn discrete_mlp_trains_samples_and_bounds_its_likelihood() {
    let dir = temp("checkerboard");
    let run = dir.join("run");
    #[rustfmt::skip]
    let out = ok(&[
        "train", "--model", "discrete", "--data", "checkerboard", "--bins", "32", "--hidden", "32,32",
        "--steps", "20", "--batch-size", "256", "--sample-n", "300", "--out", s(&run), "--quiet",
    ]);
    assert!(out.contains("discrete MLP") && out.contains("2 tokens of 32 cells over [-4, 4]"), "{out}");
    assert!(out.contains("ctmc-euler-100, NFE 100") && out.contains("test NLL ≤"), "{out}");
    let samples = dir.join("s.npy");
    let j = last_json(&ok(&[
        "sample",
        "--checkpoint",
        s(&run),
        "--n",
        "50",
        "--steps",
        "7",
        "--out",
        s(&samples),
        "--json",
    ]));
    assert_eq!((j["nfe"].as_u64(), j["solver"].as_str()), (Some(7), Some("ctmc-euler-7")), "{j}");
    let text = ok(&["likelihood", "--checkpoint", s(&run), "--n", "200", "--steps", "8"]);
    assert!(
        text.contains("NLL ≤") && text.contains("bits per token") && text.contains("8 cells of τ"),
        "{text}"
    );
    let j = last_json(&ok(&["likelihood", "--checkpoint", s(&run), "--n", "200", "--steps", "8", "--json"]));
    assert_eq!((j["bound"].as_bool(), j["solver"].as_str()), (Some(true), Some("elbo-8")), "{j}");
    // The uniform guess over the 32 × 32 cells bounds a trained model's NLL only loosely; it must be finite.
    assert!(j["nll"].as_f64().is_some_and(f64::is_finite), "{j}");
    // fm eval's default solvers name the CTMC's steps; each sampler appears once.
    let j = last_json(&ok(&["eval", "--checkpoint", s(&run), "--n", "50", "--exact-n", "0", "--json"]));
    let solvers: Vec<&str> =
        j["results"].as_array().unwrap().iter().filter_map(|r| r["solver"].as_str()).collect();
    assert_eq!(solvers, ["ctmc-euler-8", "ctmc-euler-100", "ctmc-euler-25", "ctmc-euler-1"], "{j}");
    for (flag, value) in [("--matcher", "otcfm"), ("--source", "8gaussians"), ("--objective", "efm")] {
        let e = fails(&[
            "train",
            "--model",
            "discrete",
            flag,
            value,
            "--steps",
            "1",
            "--out",
            s(&dir.join("bad")),
        ]);
        assert!(e.contains(flag), "{flag}: {e}");
    }
    let e = fails(&["sample", "--checkpoint", s(&run), "--n", "5", "--sampler", "sde", "--out", s(&samples)]);
    assert!(e.contains("--sampler"), "{e}");
}

/// The U-Net on binarized MNIST-format images: class-conditional training,
/// guided samples as a PNG grid of black and white pixels, the ELBO in bits
/// per token, and the Fréchet distance against the binarized test split.
#[test]
fn discrete_unet_on_binarized_images_with_guidance() {
    let dir = temp("unet");
    let mnist = dir.join("mnist");
    common::mnist_idx(&mnist, 12, 60, 30);
    let data = format!("mnist:{}", s(&mnist));
    let run = dir.join("run");
    #[rustfmt::skip]
    let out = ok(&[
        "train", "--model", "discrete-unet", "--preset", "tiny", "--data", &data, "--bins", "2",
        "--class-cond", "--steps", "4", "--batch-size", "8", "--sample-n", "6", "--sample-steps", "4",
        "--out", s(&run), "--quiet",
    ]);
    assert!(out.contains("discrete U-Net") && out.contains("binarized"), "{out}");
    let png = dir.join("g.png");
    #[rustfmt::skip]
    let j = last_json(&ok(&[
        "sample", "--checkpoint", s(&run), "--n", "6", "--steps", "3", "--class", "1", "--cfg-scale", "2",
        "--out", s(&png), "--json",
    ]));
    assert_eq!(j["nfe"].as_u64(), Some(3), "{j}");
    assert!(png.exists() && png.with_extension("npy").exists(), "{j}");
    let text = ok(&["likelihood", "--checkpoint", s(&run), "--n", "10", "--steps", "4"]);
    assert!(text.contains("bits per token (the negative ELBO over 144 tokens)"), "{text}");
    let classifier = dir.join("classifier");
    #[rustfmt::skip]
    ok(&["classifier", "train", "--data", &data, "--epochs", "1", "--batch-size", "16", "--out", s(&classifier), "--quiet"]);
    #[rustfmt::skip]
    let j = last_json(&ok(&[
        "frechet", "--checkpoint", s(&run), "--classifier", s(&classifier), "--data", &data, "--n", "8",
        "--steps", "3", "--json", "--quiet",
    ]));
    assert_eq!(j["levels"].as_u64(), Some(2), "{j}");
    #[rustfmt::skip]
    let j = last_json(&ok(&[
        "frechet", "--baseline", "test", "--bins", "2", "--classifier", s(&classifier), "--data", &data,
        "--n", "8", "--json", "--quiet",
    ]));
    assert!(j["frechet_distance"].as_f64().is_some_and(|d| d.abs() < 1e-6), "binarized test vs itself: {j}");
}
