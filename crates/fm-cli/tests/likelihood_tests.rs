//! `fm likelihood`, `fm plot density` and `fm train --objective likelihood`, end to end.

mod common;

use std::path::PathBuf;

use common::{fails, ok_json, s, temp_in};

fn temp(name: &str) -> PathBuf {
    temp_in("lik", name)
}

#[test]
fn likelihood_exact_and_hutchinson_agree_and_density_has_unit_mass() {
    let dir = temp("moons");
    ok_json(&["train", "--steps", "400", "--out", s(&dir), "--quiet", "--sample-n", "100", "--json"]);
    let exact = ok_json(&["likelihood", "--checkpoint", s(&dir), "--n", "400", "--steps", "20", "--json"]);
    let nll = exact["nll"].as_f64().unwrap_or(f64::NAN);
    let se = exact["nll_stderr"].as_f64().unwrap_or(f64::NAN);
    // Far better than a standard normal on moons (≈ 2.2 nats) and not below a sane floor.
    assert!(nll.is_finite() && nll < 2.0 && nll > -1.0, "{exact}");
    assert!(se > 0.0 && se < 0.2, "{exact}");
    let hutch = ok_json(&[
        "likelihood",
        "--checkpoint",
        s(&dir),
        "--n",
        "400",
        "--steps",
        "20",
        "--hutchinson",
        "4",
        "--json",
    ]);
    let h = hutch["nll"].as_f64().unwrap_or(f64::NAN);
    // The same points: the estimator is unbiased for log p, so the means agree within a few errors.
    assert!((h - nll).abs() < 4.0 * se + 0.05, "exact {nll} vs Hutchinson {h}");

    let d = ok_json(&[
        "plot",
        "density",
        "--checkpoint",
        s(&dir),
        "--grid",
        "60",
        "--range=-3,4,-3,3",
        "--steps",
        "10",
        "--json",
    ]);
    let mass = d["mass"].as_f64().unwrap_or(f64::NAN);
    assert!((mass - 1.0).abs() < 0.03, "the density integrates to ≈ 1 on a wide window: {d}");
    assert!(dir.join("density.png").is_file());

    // Wrong dimension: a 3-column CSV against a 2-D model.
    let csv = dir.join("three.csv");
    std::fs::write(&csv, "a,b,c\n1,2,3\n4,5,6\n7,8,9\n").ok();
    let data = format!("csv:{}", s(&csv));
    let e = fails(&["likelihood", "--checkpoint", s(&dir), "--data", &data, "--columns", "a,b,c"]);
    assert!(e.contains("3 dimensions") && e.contains("models 2"), "{e}");
    let e = fails(&["likelihood", "--checkpoint", s(&dir), "--hutchinson", "0"]);
    assert!(e.contains("--hutchinson"), "{e}");
    let e = fails(&["likelihood", "--checkpoint", s(&dir), "--solver", "dopri5", "--rtol=-1"]);
    assert!(e.contains("rtol"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn csv_likelihood_is_reported_in_data_units() {
    let dir = temp("csv");
    std::fs::create_dir_all(&dir).ok();
    // Two columns with very different scales: the standardization log-Jacobian matters.
    let mut text = String::from("a,b\n");
    for i in 0..300 {
        let u = (i as f64 * 0.618_033_988_75).fract();
        let v = (i as f64 * 0.414_213_562_37).fract();
        text.push_str(&format!("{},{}\n", 1000.0 + 100.0 * u, 0.01 * v));
    }
    let csv = dir.join("pts.csv");
    std::fs::write(&csv, text).ok();
    let ckpt = dir.join("ckpt");
    let data = format!("csv:{}", s(&csv));
    ok_json(&[
        "train",
        "--data",
        &data,
        "--columns",
        "a,b",
        "--steps",
        "200",
        "--out",
        s(&ckpt),
        "--quiet",
        "--sample-n",
        "100",
        "--json",
    ]);
    let j = ok_json(&["likelihood", "--checkpoint", s(&ckpt), "--steps", "10", "--json"]);
    let jac = j["log_det_jacobian"].as_f64().unwrap_or(f64::NAN);
    // −Σ log std: std(a) ≈ 100/√12, std(b) ≈ 0.01/√12.
    let expect = -((100.0f64 / 12f64.sqrt()).ln() + (0.01f64 / 12f64.sqrt()).ln());
    assert!((jac - expect).abs() < 0.1, "log-Jacobian {jac} vs {expect}");
    assert_eq!(j["n"].as_u64(), Some(300), "the whole file by default");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cnf_trained_by_likelihood_improves_its_likelihood_and_resumes() {
    let dir = temp("cnf");
    let j = ok_json(&[
        "train",
        "--objective",
        "likelihood",
        "--cnf-steps",
        "4",
        "--steps",
        "30",
        "--batch-size",
        "128",
        "--out",
        s(&dir),
        "--quiet",
        "--sample-n",
        "100",
        "--json",
    ]);
    let loss = j["loss"].as_f64().unwrap_or(f64::NAN);
    assert!(loss.is_finite() && loss < 2.6, "the NLL falls below the initial ≈ 2.8: {j}");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    assert!(
        config.contains("\"objective\": \"likelihood\"") && config.contains("\"cnf_steps\": 4"),
        "{config}"
    );
    let e = fails(&["train", "--objective", "nope", "--steps", "1"]);
    assert!(e.contains("cfm") && e.contains("likelihood"), "{e}");
    let e = fails(&["train", "--cnf-steps", "3", "--steps", "1"]);
    assert!(e.contains("--objective likelihood"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn image_data_trains_and_reports_bits_per_dim() {
    let dir = temp("digits");
    std::fs::create_dir_all(&dir).ok();
    let mut text = String::new();
    for i in 0..60u32 {
        let cells: Vec<String> =
            (0..64).map(|j| ((i * 7 + j * 3) % 17).to_string()).chain([(i % 10).to_string()]).collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    let csv = dir.join("digits.csv");
    std::fs::write(&csv, text).ok();
    let ckpt = dir.join("ckpt");
    let data = format!("digits:{}", s(&csv));
    ok_json(&[
        "train",
        "--data",
        &data,
        "--hidden",
        "32",
        "--steps",
        "30",
        "--out",
        s(&ckpt),
        "--quiet",
        "--sample-n",
        "20",
        "--json",
    ]);
    assert!(ckpt.join("samples.png").is_file(), "an image grid of samples");
    let j = ok_json(&["likelihood", "--checkpoint", s(&ckpt), "--steps", "4", "--json"]);
    let bpd = j["bits_per_dim"].as_f64().unwrap_or(f64::NAN);
    // 17 levels: a uniform model scores log2(17) ≈ 4.09 bits/dim; anything finite and positive is sane here.
    assert!(bpd.is_finite() && bpd > 0.0 && bpd < 20.0, "{j}");
    // bits/dim = (NLL − D ln(2/L)) / (D ln 2) with D = 64 pixels and L = 17 levels.
    let nll = j["nll"].as_f64().unwrap_or(f64::NAN);
    let expected = (nll - 64.0 * (2.0f64 / 17.0).ln()) / (64.0 * std::f64::consts::LN_2);
    assert!((bpd - expected).abs() < 1e-9, "{bpd} vs {expected}");

    // A RealNVP flow on the same images: the training report and `fm likelihood`
    // give the same exact bits/dim on the dequantized test split.
    let nvp = dir.join("nvp");
    let t = ok_json(&[
        "train",
        "--model",
        "realnvp",
        "--layers",
        "2",
        "--hidden",
        "16",
        "--data",
        &data,
        "--steps",
        "20",
        "--out",
        s(&nvp),
        "--quiet",
        "--sample-n",
        "20",
        "--json",
    ]);
    assert!(nvp.join("samples.png").is_file(), "an image grid of the flow's samples");
    let l = ok_json(&["likelihood", "--checkpoint", s(&nvp), "--json"]);
    let (bt, bl) =
        (t["bits_per_dim"].as_f64().unwrap_or(f64::NAN), l["bits_per_dim"].as_f64().unwrap_or(f64::NAN));
    assert!(bt.is_finite() && (bt - bl).abs() < 1e-9, "train {t}\nlikelihood {l}");
    let _ = std::fs::remove_dir_all(&dir);
}
