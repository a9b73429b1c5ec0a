//! Discrete flows in the CLI, end to end: `fm train --model planar|realnvp`,
//! `fm sample`/`fm likelihood`/`fm plot density` on a flow, and `fm energies`.

mod common;

use std::path::PathBuf;

use fm_core::SeededRng;
use fm_data::Toy2d;

use common::{fails, ok, ok_json, s, temp_in};

fn temp(name: &str) -> PathBuf {
    temp_in("flow", name)
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// The NLL of the maximum-likelihood Gaussian fitted to `n` fresh moons (noise 0.05), on other fresh moons.
fn gaussian_fit_nll(n: usize) -> f64 {
    let toy = Toy2d::Moons { noise: 0.05 };
    let fit = toy.sample(n, &mut SeededRng::new(1));
    let test = toy.sample(n, &mut SeededRng::new(2));
    let pts = |v: &[f32]| v.chunks_exact(2).map(|p| (p[0] as f64, p[1] as f64)).collect::<Vec<_>>();
    let (fit, test) = (pts(&fit), pts(&test));
    let m = fit.len() as f64;
    let (mx, my) = (fit.iter().map(|p| p.0).sum::<f64>() / m, fit.iter().map(|p| p.1).sum::<f64>() / m);
    let cov = |f: &dyn Fn(&(f64, f64)) -> f64| fit.iter().map(f).sum::<f64>() / m;
    let (a, b, c) =
        (cov(&|p| (p.0 - mx).powi(2)), cov(&|p| (p.0 - mx) * (p.1 - my)), cov(&|p| (p.1 - my).powi(2)));
    let det = a * c - b * b;
    let nll: f64 = test
        .iter()
        .map(|p| {
            let (dx, dy) = (p.0 - mx, p.1 - my);
            let q = (c * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / det;
            0.5 * q + 0.5 * det.ln() + (2.0 * std::f64::consts::PI).ln()
        })
        .sum();
    nll / test.len() as f64
}

#[test]
fn realnvp_on_moons_beats_a_gaussian_and_likelihood_agrees() {
    let dir = temp("nvp");
    let r = ok_json(&[
        "train",
        "--model",
        "realnvp",
        "--layers",
        "8",
        "--hidden",
        "64,64",
        "--steps",
        "500",
        "--out",
        s(&dir),
        "--quiet",
        "--sample-n",
        "500",
        "--json",
    ]);
    let (nll, se) = (num(&r, "nll"), num(&r, "nll_stderr"));
    let gauss = gaussian_fit_nll(5000);
    assert!((1.8..2.1).contains(&gauss), "Gaussian fit to moons: {gauss}");
    assert!(nll.is_finite() && nll < gauss - 0.15, "RealNVP NLL {nll} vs Gaussian fit {gauss}: {r}");
    assert!(se > 0.0 && se < 0.1, "{r}");
    assert!(num(&r, "loss").is_finite() && num(&r, "steps_per_s") > 0.0, "{r}");
    for f in
        ["model.safetensors", "config.json", "samples.npy", "plot.png", "metrics.json", "resume.safetensors"]
    {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    // The report's test NLL is `fm likelihood`'s default evaluation: the same number.
    let l = ok_json(&["likelihood", "--checkpoint", s(&dir), "--json"]);
    assert!((num(&l, "nll") - nll).abs() < 1e-6, "likelihood {l} vs training report {r}");
    assert_eq!(l["nfe"], 0);
    // The exact density integrates to ≈ 1 on a wide window.
    let d =
        ok_json(&["plot", "density", "--checkpoint", s(&dir), "--grid", "80", "--range=-4,4,-4,4", "--json"]);
    assert!((num(&d, "mass") - 1.0).abs() < 0.02, "{d}");
    assert!(dir.join("density.png").is_file());
    // `fm eval` explains itself rather than failing obscurely.
    let e = fails(&["eval", "--checkpoint", s(&dir)]);
    assert!(e.contains("flow"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn planar_trains_samples_and_resumes_bit_identically() {
    let dir = temp("planar");
    let r = ok_json(&[
        "train",
        "--model",
        "planar",
        "--layers",
        "2",
        "--steps",
        "200",
        "--lr",
        "0.01",
        "--out",
        s(&dir),
        "--quiet",
        "--sample-n",
        "300",
        "--json",
    ]);
    assert!(num(&r, "nll").is_finite() && num(&r, "nll") < 3.5, "{r}");
    let out = dir.join("s.csv");
    let plot = dir.join("s.png");
    let j = ok_json(&[
        "sample",
        "--checkpoint",
        s(&dir),
        "--n",
        "100",
        "--out",
        s(&out),
        "--plot",
        s(&plot),
        "--solver",
        "rk4",
        "--json",
    ]);
    assert_eq!(j["n"], 100);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(text.lines().count(), 101, "header + 100 rows");
    assert!(plot.is_file());
    let stdout = ok(&["sample", "--checkpoint", s(&dir), "--n", "10", "--out", s(&dir.join("t.npy"))]);
    assert!(stdout.contains("no ODE"), "{stdout}");

    // 100 + 100 resumed steps give the same weights as 200 straight.
    let half = temp("planar-half");
    ok_json(&[
        "train",
        "--model",
        "planar",
        "--layers",
        "2",
        "--steps",
        "100",
        "--lr",
        "0.01",
        "--out",
        s(&half),
        "--quiet",
        "--sample-n",
        "50",
        "--json",
    ]);
    let resumed =
        ok_json(&["train", "--resume", s(&half), "--steps", "200", "--quiet", "--sample-n", "300", "--json"]);
    let a = std::fs::read(dir.join("model.safetensors")).unwrap_or_default();
    let b = std::fs::read(half.join("model.safetensors")).unwrap_or_default();
    let tensors = |bytes: &[u8]| {
        let st = safetensors_names(bytes);
        assert!(!st.is_empty());
        st
    };
    assert_eq!(tensors(&a), tensors(&b));
    assert_eq!(num(&resumed, "nll"), num(&r, "nll"), "resumed {resumed} vs straight {r}");
    let e = fails(&["train", "--resume", s(&half), "--lr", "0.1"]);
    assert!(e.contains("--lr"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&half);
}

/// The tensor bytes of a safetensors file (its header also holds the command line, which differs).
fn safetensors_names(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() < 8 {
        return vec![];
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])) as usize;
    bytes.get(8 + n..).map(|v| v.to_vec()).unwrap_or_default()
}

#[test]
fn energies_fit_u1_and_deeper_flows_fit_better() {
    let dir = temp("energies");
    let j = ok_json(&[
        "energies",
        "--layers",
        "2,8",
        "--energies",
        "u1",
        "--steps",
        "600",
        "--eval-n",
        "5000",
        "--grid",
        "30",
        "--out",
        s(&dir),
        "--quiet",
        "--json",
    ]);
    let res = j["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(res.len(), 2, "{j}");
    let kl = |i: usize| num(&res[i], "kl");
    assert_eq!((res[0]["energy"].as_str(), res[0]["layers"].as_u64()), (Some("u1"), Some(2)));
    assert!(kl(0).is_finite() && kl(1).is_finite() && kl(1) > -0.05, "{j}");
    assert!(kl(1) < kl(0), "KL(K=8) {} should be below KL(K=2) {}: {j}", kl(1), kl(0));
    assert!(num(&res[1], "mass_outside_box") < 0.01, "{j}");
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap_or_default();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(dir.join("densities.png").is_file());

    // A boxed energy reports its KL on the box and the mass outside it.
    let j = ok_json(&[
        "energies",
        "--layers",
        "4",
        "--energies",
        "u2",
        "--steps",
        "200",
        "--eval-n",
        "2000",
        "--grid",
        "20",
        "--out",
        s(&dir),
        "--quiet",
        "--json",
    ]);
    let r = &j["results"][0];
    assert!(num(r, "kl").is_finite() && (0.0..=1.0).contains(&num(r, "mass_outside_box")), "{j}");
    assert!(r["target"].as_str().unwrap_or("").contains("[-4,4]"), "{j}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flow_inputs_name_the_flag() {
    let e = fails(&["train", "--model", "nope", "--steps", "1"]);
    assert!(
        e.contains("--model") && e.contains("planar") && e.contains("realnvp") && e.contains("mlp"),
        "{e}"
    );
    let e = fails(&["train", "--model", "planar", "--layers", "0", "--steps", "1"]);
    assert!(e.contains("--layers"), "{e}");
    let e = fails(&["train", "--layers", "4", "--steps", "1"]);
    assert!(e.contains("--layers") && e.contains("planar"), "{e}");
    let e = fails(&["train", "--model", "planar", "--scheduler", "cosine", "--steps", "1"]);
    assert!(e.contains("--scheduler"), "{e}");
    let e = fails(&["energies", "--layers", "0"]);
    assert!(e.contains("--layers"), "{e}");
    let e = fails(&["energies", "--energies", "u9"]);
    assert!(e.contains("--energies") && e.contains("u4"), "{e}");
}

#[test]
fn realnvp_on_csv_reports_the_nll_in_data_units() {
    let dir = temp("csv");
    std::fs::create_dir_all(&dir).ok();
    // x ~ N(100, 10²), y = 50 + 0.3 (x − 100) + N(0, 1): the entropy is log(2πe · 10 · 1) ≈ 5.14 nats.
    let mut rng = SeededRng::new(5);
    let z = rng.normal_vec(800);
    let mut text = String::from("a,b\n");
    for p in z.chunks_exact(2) {
        text.push_str(&format!("{},{}\n", 100.0 + 10.0 * p[0], 50.0 + 3.0 * p[0] + p[1]));
    }
    let csv = dir.join("d.csv");
    std::fs::write(&csv, text).ok();
    let data = format!("csv:{}", s(&csv));
    let out = dir.join("run");
    let r = ok_json(&[
        "train",
        "--model",
        "realnvp",
        "--layers",
        "4",
        "--data",
        &data,
        "--columns",
        "a,b",
        "--steps",
        "200",
        "--out",
        s(&out),
        "--quiet",
        "--sample-n",
        "200",
        "--json",
    ]);
    assert!(num(&r, "log_det_jacobian") < -2.0, "the standardization's log-Jacobian is included: {r}");
    assert!((num(&r, "nll") - 5.14).abs() < 0.5, "{r}");
    let l = ok_json(&["likelihood", "--checkpoint", s(&out), "--json"]);
    assert!((num(&l, "nll") - num(&r, "nll")).abs() < 1e-6, "{l} vs {r}");
    let _ = std::fs::remove_dir_all(&dir);
}
