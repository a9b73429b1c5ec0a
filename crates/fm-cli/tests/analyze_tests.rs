//! End-to-end tests of `fm analyze` and `fm sample --hybrid`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::{fails, last_json, ok, s, temp_in};

fn temp(name: &str) -> PathBuf {
    temp_in("analyze", name)
}

fn is_png(p: &Path) -> bool {
    std::fs::read(p).map(|b| b.starts_with(b"\x89PNG\r\n\x1a\n")).unwrap_or(false)
}

/// One small checkpoint trained on a fixed set of 200 moons, shared by the tests.
fn moons_200() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp("moons200");
        ok(&[
            "train",
            "--n-train",
            "200",
            "--steps",
            "300",
            "--out",
            s(&dir),
            "--quiet",
            "--sample-n",
            "200",
        ]);
        dir
    })
}

#[test]
fn closed_form_memorizes_and_the_model_does_not() {
    let ck = moons_200();
    let out = temp("mem");
    let j = last_json(&ok(&[
        "analyze",
        "memorization",
        "--checkpoint",
        s(ck),
        "--closed-form",
        "--n",
        "300",
        "--out",
        s(&out),
        "--json",
    ]));
    let model = j["median_nn_distance"].as_f64().expect("median_nn_distance");
    let closed = j["closed_form"]["median_nn_distance"].as_f64().expect("closed_form.median_nn_distance");
    assert!(closed < 1e-2, "{j}");
    assert!(model > closed, "{j}");
    assert!(j["closed_form"]["fraction_below_threshold"].as_f64().is_some_and(|f| f > 0.5), "{j}");
    assert!(j["fraction_below_threshold"].as_f64().is_some(), "{j}");
    assert_eq!(j["n_train"], 200);
    assert!(out.join("memorization.csv").is_file());
    assert!(is_png(&out.join("memorization.png")));
}

#[test]
fn hybrid_sweep_goes_to_the_training_set() {
    let ck = moons_200();
    let out = temp("hybrid");
    let j = last_json(&ok(&[
        "analyze",
        "hybrid",
        "--checkpoint",
        s(ck),
        "--taus",
        "0,0.5,1",
        "--n",
        "200",
        "--steps",
        "20",
        "--out",
        s(&out),
        "--json",
    ]));
    let med: Vec<f64> = j["median_nn_distance"]
        .as_array()
        .expect("median_nn_distance")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert_eq!(j["taus"].as_array().map(Vec::len), Some(3), "{j}");
    assert_eq!(med.len(), 3, "{j}");
    assert!(med[2] < med[0], "{j}");
    assert!(j.get("knee").is_some(), "{j}");
    assert!(out.join("hybrid.csv").is_file());
    assert!(is_png(&out.join("hybrid.png")));

    // `fm sample --hybrid 1` follows û* all the way: samples land on training points.
    let f = out.join("h.csv");
    let j = last_json(&ok(&[
        "sample",
        "--checkpoint",
        s(ck),
        "--hybrid",
        "1",
        "--n",
        "50",
        "--out",
        s(&f),
        "--json",
    ]));
    assert_eq!(j["hybrid"], 1.0);
    assert!(f.is_file());
}

#[test]
fn crossing_time_decreases_with_dimension() {
    let out = temp("align");
    let j = last_json(&ok(&[
        "analyze",
        "alignment",
        "--dims",
        "2,8,32",
        "--n",
        "300",
        "--pairs",
        "100",
        "--out",
        s(&out),
        "--json",
    ]));
    // A dataset that never crosses counts as crossing at t = 1.
    let tc = |k: &str| j["crossing_t"][k].as_f64().unwrap_or(1.0);
    assert!(j["crossing_t"].get("d2").is_some() && j["crossing_t"].get("d32").is_some(), "{j}");
    assert!(tc("d2") > tc("d8") && tc("d8") > tc("d32"), "{j}");
    assert!(j["collapse_t"].get("d8").is_some(), "{j}");
    assert!(out.join("alignment.csv").is_file());
    assert!(is_png(&out.join("alignment.png")));
}

#[test]
fn gaussian_w2_falls_with_steps_and_with_n() {
    let out = temp("gauss");
    let j = last_json(&ok(&[
        "analyze",
        "gaussian",
        "--dim",
        "4",
        "--n",
        "10,100,1000,10000",
        "--solvers",
        "euler,rk4",
        "--steps",
        "1,2,4,32",
        "--out",
        s(&out),
        "--json",
    ]));
    let rows = j["results"].as_array().expect("results");
    let w2 = |n: u64, solver: &str, steps: u64| -> f64 {
        rows.iter()
            .find(|r| r["n"] == n && r["solver"] == solver && r["steps"] == steps)
            .and_then(|r| r["w2"].as_f64())
            .unwrap_or_else(|| panic!("no row n={n} {solver} {steps}: {j}"))
    };
    assert!(w2(10000, "rk4", 1) > w2(10000, "rk4", 2) && w2(10000, "rk4", 2) > w2(10000, "rk4", 4), "{j}");
    assert!(w2(10000, "euler", 1) > w2(10000, "euler", 32), "{j}");
    for (a, b) in [(10, 100), (100, 1000), (1000, 10000)] {
        assert!(w2(a, "rk4", 32) > w2(b, "rk4", 32), "n = {a} vs {b}: {j}");
    }
    assert!(out.join("gaussian.csv").is_file());
    assert!(is_png(&out.join("gaussian.png")));
}

#[test]
fn bad_inputs_name_the_flag() {
    let ck = moons_200();
    let e = fails(&["sample", "--checkpoint", s(ck), "--hybrid", "1.5"]);
    assert!(e.contains("--hybrid"), "{e}");
    let e = fails(&["analyze", "hybrid", "--checkpoint", s(ck), "--taus", "0,1.5"]);
    assert!(e.contains("--taus"), "{e}");
    let e = fails(&["analyze", "memorization", "--checkpoint", s(ck), "--solver", "leapfrog"]);
    assert!(e.contains("--solver"), "{e}");
    let e = fails(&["analyze", "gaussian", "--solvers", "euler,leapfrog"]);
    assert!(e.contains("--solvers"), "{e}");
    let missing = temp("missing");
    let e = fails(&["analyze", "memorization", "--checkpoint", s(&missing)]);
    assert!(e.contains("--checkpoint"), "{e}");
    let e = fails(&["analyze", "hybrid", "--checkpoint", s(&missing)]);
    assert!(e.contains("--checkpoint"), "{e}");
    let e = fails(&["analyze", "gaussian", "--dim", "8", "--n", "5"]);
    assert!(e.contains("--n"), "{e}");
    let e = fails(&["analyze", "alignment", "--times", "0,1"]);
    assert!(e.contains("--times"), "{e}");
}

#[test]
fn fresh_data_checkpoint_needs_n_train() {
    let dir = temp("fresh");
    ok(&["train", "--steps", "50", "--out", s(&dir), "--quiet", "--sample-n", "100"]);
    let e = fails(&["analyze", "memorization", "--checkpoint", s(&dir), "--n", "50"]);
    assert!(e.contains("--n-train") && e.contains("fresh"), "{e}");
    let e = fails(&["sample", "--checkpoint", s(&dir), "--hybrid", "0.5", "--n", "10"]);
    assert!(e.contains("--hybrid"), "{e}");
    let j = last_json(&ok(&[
        "analyze",
        "memorization",
        "--checkpoint",
        s(&dir),
        "--n-train",
        "100",
        "--n",
        "50",
        "--steps",
        "10",
        "--out",
        s(&dir.join("mem")),
        "--json",
    ]));
    assert_eq!(j["n_train"], 100);
    for k in ["--help"] {
        for sub in ["memorization", "hybrid", "alignment", "gaussian"] {
            let h = ok(&["analyze", sub, k]);
            assert!(h.contains("Examples:"), "{sub}: {h}");
        }
    }
}

#[test]
fn gaussian_pipeline_errors_behave_along_each_axis_and_split_over_the_spectrum() {
    let out = temp("pipeline");
    let j = last_json(&ok(&[
        "analyze",
        "gaussian",
        "--sampler",
        "sde",
        "--dim",
        "6",
        "--alpha",
        "1",
        "--steps",
        "10,100,1000",
        "--n",
        "20,2000",
        "--train-steps",
        "1,100,100000",
        "--noise-floor",
        "0.001,0.1",
        "--out",
        s(&out),
        "--json",
        "--quiet",
    ]));
    let rows = j["results"].as_array().unwrap();
    let w2 = |axis: &str| -> Vec<f64> {
        rows.iter().filter(|r| r["axis"] == axis).map(|r| r["w2"].as_f64().unwrap()).collect()
    };
    for axis in ["samples", "train-steps", "steps"] {
        let v = w2(axis);
        assert!(v.windows(2).all(|p| p[1] < p[0]), "{axis}: {v:?}");
    }
    let delta = w2("noise-floor");
    assert!(delta[1] > delta[0], "{delta:?}");
    // Where the model's basis is the data's, the terms per eigenvalue sum to W2².
    for r in rows.iter().filter(|r| r["axis"] != "samples") {
        let terms: f64 = r["w2_squared_terms"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
        let w = r["w2"].as_f64().unwrap();
        assert!((terms - w * w).abs() < 1e-12 * (1.0 + w * w), "{r}");
    }
    assert!(out.join("pipeline.csv").is_file() && out.join("pipeline-spectrum.csv").is_file());
    assert!(is_png(&out.join("pipeline.png")));
    let e = fails(&["analyze", "gaussian", "--sampler", "sde", "--diffusion", "loud"]);
    assert!(e.contains("--diffusion"), "{e}");
    let e = fails(&["analyze", "gaussian", "--sampler", "sde", "--diffusion", "path"]);
    assert!(e.contains("diffusion") && e.contains("vp"), "{e}");
    let e = fails(&["analyze", "gaussian", "--sampler", "langevin", "--noise-floor", "0"]);
    assert!(e.contains("noise-floor"), "{e}");
}

#[test]
fn sample_by_sde_and_langevin_names_the_sampler_and_refuses_flows() {
    let ck = moons_200();
    let out = temp("sde-samples");
    std::fs::create_dir_all(&out).unwrap();
    let npy = out.join("s.npy");
    let j = last_json(&ok(&[
        "sample",
        "--checkpoint",
        s(ck),
        "--sampler",
        "sde",
        "--diffusion",
        "sigma:2",
        "--steps",
        "40",
        "--sde-solver",
        "heun",
        "--corrector-steps",
        "1",
        "--n",
        "30",
        "--out",
        s(&npy),
        "--json",
        "--quiet",
    ]));
    assert_eq!(j["nfe"], 40 * 2 + 40 + 1, "{j}");
    assert!(j["solver"].as_str().unwrap().contains("sigma:2"), "{j}");
    assert!(npy.is_file());
    let j = last_json(&ok(&[
        "sample",
        "--checkpoint",
        s(ck),
        "--sampler",
        "langevin",
        "--steps",
        "25",
        "--langevin-step",
        "0.001",
        "--noise-floor",
        "0.05",
        "--n",
        "30",
        "--out",
        s(&npy),
        "--json",
        "--quiet",
    ]));
    assert_eq!(j["nfe"], 26, "{j}");
    let e = fails(&[
        "sample",
        "--checkpoint",
        s(ck),
        "--sampler",
        "sde",
        "--diffusion",
        "constant:1",
        "--noise-floor",
        "0",
    ]);
    assert!(e.contains("noise-floor"), "{e}");
    let e = fails(&["sample", "--checkpoint", s(ck), "--sampler", "sde", "--sde-solver", "rk4"]);
    assert!(e.contains("--sde-solver"), "{e}");
    let flow = temp("sde-flow");
    ok(&["train", "--model", "realnvp", "--steps", "20", "--out", s(&flow), "--quiet", "--sample-n", "50"]);
    let e = fails(&["sample", "--checkpoint", s(&flow), "--sampler", "sde", "--n", "10"]);
    assert!(e.contains("--sampler"), "{e}");
    let j = last_json(&ok(&[
        "eval",
        "--checkpoint",
        s(ck),
        "--solvers",
        "euler:20,sde:20:sigma:1",
        "--n",
        "200",
        "--exact-n",
        "0",
        "--json",
        "--quiet",
    ]));
    assert_eq!(j["results"][1]["nfe"], 21, "{j}");
}
