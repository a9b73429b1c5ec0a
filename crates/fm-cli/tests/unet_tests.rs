//! `fm train --model unet` and `fm sample` on images, end to end (tiny U-Net,
//! 8×8 digits written by the test): class-conditional training with EMA,
//! clipping and warm-up, bit-identical resume, grids, `.npy`, guidance and
//! the trajectory strip.

mod common;

use std::path::PathBuf;

use common::{fails, ok, s, temp_in, tensor_bytes};

fn temp(name: &str) -> PathBuf {
    let d = temp_in("unet", name);
    std::fs::create_dir_all(&d).ok();
    d
}

fn train_args<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--model",
        "unet",
        "--preset",
        "tiny",
        "--class-cond",
        "--label-dropout",
        "0.2",
        "--ema-decay",
        "0.9",
        "--grad-clip",
        "1",
        "--warmup",
        "2",
        "--batch-size",
        "8",
        "--steps",
        steps,
        "--sample-n",
        "10",
        "--sample-steps",
        "2",
        "--sample-solver",
        "euler",
        "--out",
        out,
        "--quiet",
    ]
}

#[test]
fn unet_trains_resumes_bit_identically_and_samples_images() {
    let dir = temp("run");
    let data = common::digits_csv(&dir, 60, 7);
    let (full, part) = (dir.join("full"), dir.join("part"));
    let log = ok(&train_args(&data, s(&full), "4"));
    assert!(log.contains("U-Net") && log.contains("EMA 0.9") && log.contains("10 classes"), "{log}");
    for f in ["model.safetensors", "config.json", "resume.safetensors", "samples.png", "samples.npy"] {
        assert!(full.join(f).is_file(), "missing {f}");
    }
    let config = std::fs::read_to_string(full.join("config.json")).unwrap_or_default();
    assert!(config.contains("\"kind\": \"u-net\"") && config.contains("\"ema_decay\": 0.9"), "{config}");

    // Two steps, then resume to four: the same bytes as the uninterrupted run.
    ok(&train_args(&data, s(&part), "2"));
    ok(&[
        "train",
        "--resume",
        s(&part),
        "--steps",
        "4",
        "--quiet",
        "--sample-n",
        "10",
        "--sample-steps",
        "2",
        "--sample-solver",
        "euler",
    ]);
    for f in ["model.safetensors", "resume.safetensors"] {
        // The headers record the command lines, which differ; the tensors must not.
        let (a, b) = (tensor_bytes(&full.join(f)), tensor_bytes(&part.join(f)));
        assert!(!a.is_empty() && a == b, "{f} differs after resume");
    }

    // fm sample: a PNG grid plus the .npy beside it, a class with guidance, a trajectory strip.
    let grid = dir.join("threes.png");
    let strip = dir.join("strip.png");
    let out = ok(&[
        "sample",
        "--checkpoint",
        s(&full),
        "--n",
        "12",
        "--solver",
        "euler",
        "--steps",
        "3",
        "--class",
        "3",
        "--cfg-scale",
        "1.5",
        "--out",
        s(&grid),
        "--trajectory",
        s(&strip),
        "--batch-size",
        "5",
        "--json",
    ]);
    assert!(out.contains("\"nfe\":3"), "{out}");
    for p in [&grid, &strip] {
        let png = std::fs::read(p).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", p.display());
    }
    let npy = std::fs::read(dir.join("threes.npy")).unwrap_or_default();
    assert!(npy.starts_with(b"\x93NUMPY"), "no .npy beside the grid");
    let header = String::from_utf8_lossy(&npy[..128]).into_owned();
    assert!(header.contains("'shape': (12, 64)"), "{header}");

    // Batching does not change the samples: same seed, one batch vs three.
    let a = dir.join("a.npy");
    let b = dir.join("b.npy");
    ok(&[
        "sample",
        "--checkpoint",
        s(&full),
        "--n",
        "6",
        "--steps",
        "2",
        "--solver",
        "euler",
        "--out",
        s(&a),
        "--batch-size",
        "6",
    ]);
    ok(&[
        "sample",
        "--checkpoint",
        s(&full),
        "--n",
        "6",
        "--steps",
        "2",
        "--solver",
        "euler",
        "--out",
        s(&b),
        "--batch-size",
        "2",
    ]);
    assert_eq!(std::fs::read(&a).unwrap_or_default(), std::fs::read(&b).unwrap_or_default());

    // Bad requests name the flag.
    let e = fails(&["sample", "--checkpoint", s(&full), "--class", "10", "--out", s(&a)]);
    assert!(e.contains("--class 10"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unet_flags_are_checked() {
    let dir = temp("flags");
    let data = common::digits_csv(&dir, 60, 7);
    let e = fails(&["train", "--model", "unet", "--steps", "1"]);
    assert!(e.contains("needs image data"), "{e}");
    let e = fails(&["train", "--data", &data, "--model", "unet", "--preset", "huge", "--steps", "1"]);
    assert!(e.contains("tiny, mnist, cifar10"), "{e}");
    let e = fails(&["train", "--channels", "8", "--steps", "1"]);
    assert!(e.contains("--channels only applies to --model unet"), "{e}");
    let e = fails(&["train", "--data", &data, "--model", "unet", "--preset", "tiny", "--ema-decay", "1.5"]);
    assert!(e.contains("--ema-decay"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--model meanflow-unet` from the command line: trains, names its sampler,
/// samples in one and two steps (NFE = steps), and `fm plot grid` lays the two
/// sample files out as two rows of a PNG of the expected size; what it cannot
/// do is refused by flag.
#[test]
fn meanflow_unet_trains_samples_in_few_steps_and_plots_rows() {
    let dir = temp("meanflow");
    let data = common::digits_csv(&dir, 60, 7);
    let run = dir.join("run");
    #[rustfmt::skip]
    let out = ok(&[
        "train", "--data", &data, "--model", "meanflow-unet", "--preset", "tiny", "--batch-size", "8",
        "--steps", "6", "--sample-n", "10", "--out", s(&run), "--quiet",
    ]);
    assert!(out.contains("MeanFlow U-Net") && out.contains("meanflow-1 step, NFE 1"), "{out}");
    let mut rows = Vec::new();
    for steps in ["1", "2"] {
        let file = dir.join(format!("{steps}.npy"));
        let j = common::last_json(&ok(&[
            "sample",
            "--checkpoint",
            s(&run),
            "--steps",
            steps,
            "--n",
            "12",
            "--out",
            s(&file),
            "--json",
        ]));
        assert_eq!(j["nfe"].as_u64(), Some(steps.parse().unwrap()), "{j}");
        rows.push(file);
    }
    let png = dir.join("rows.png");
    let list = format!("{},{}", s(&rows[0]), s(&rows[1]));
    ok(&["plot", "grid", "--samples", &list, "--cols", "5", "--zoom", "2", "--out", s(&png)]);
    let (w, h) = image::image_dimensions(&png).unwrap();
    // 5 columns and 2 rows of 8×8 images at zoom 2, 1-pixel borders.
    assert_eq!((w, h), (5 * 17 + 1, 2 * 17 + 1));
    let e = fails(&["plot", "grid", "--samples", &list, "--cols", "13", "--out", s(&png)]);
    assert!(e.contains("--cols") && e.contains("1.npy"), "{e}");
    let bad = dir.join("bad");
    for (flag, value) in [("--class-cond", None), ("--dropout", Some("0.1")), ("--matcher", Some("otcfm"))] {
        let mut args = vec!["train", "--data", &data, "--model", "meanflow-unet", "--preset", "tiny", flag];
        args.extend(value);
        args.extend(["--steps", "1", "--out", s(&bad)]);
        let e = fails(&args);
        assert!(e.contains(flag), "{flag}: {e}");
    }
}
