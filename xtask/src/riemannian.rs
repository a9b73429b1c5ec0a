//! `cargo xtask riemannian`: fm against Meta's `flow_matching` on the US
//! airports on the sphere, in one run on one machine.
//!
//! `fm-bench riemannian --split-only` splits the airports by row (every fifth
//! held out) and writes the split; `xtask/python/riemannian_peer.py` (in the
//! bench's venv, `flow_matching` installed when missing) trains the same MLP
//! with the library's sphere, geodesic path and Riemannian ODE solver, and
//! reports its test NLL by the same estimator (exact Riemannian divergence,
//! RK4 backwards, projected steps); `fm-bench riemannian` trains fm's model
//! through the library calls `fm train --manifold sphere` makes, scores it,
//! fits the baselines (uniform; von Mises–Fisher mixtures by EM) and scores
//! both sample sets by the energy distance to the held-out airports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::discrete::{flow_matching_python, last_line, number, value};

pub const USAGE: &str = "usage: cargo xtask riemannian [--steps N] [--threads N] [--data AIRPORTS_CSV]

Trains a velocity field on the US airports on S² (longitude, latitude from the vega airports file;
rows with index ≡ 4 mod 5 held out) with flow_matching in PyTorch and with fm: an MLP 4-256-256-256-3
SiLU on (t, x), its output projected onto the tangent space, the geodesic path with κ = t, Adam 1e-3,
batch 512, the same number of steps each (default 3000). Prints one table: training steps/s, the
test NLL in nats (exact Riemannian divergence, 100 RK4 steps backwards), sampling time (5000
samples, 100 midpoint steps), the energy distance of the samples to the held-out airports, and the
baselines fitted on the same training rows (uniform density; von Mises–Fisher mixtures of 5–100
components by EM). The data: --data, else $FM_DATA_DIR/us-airports-2d/airports.csv. Files go to
target/riemannian-compare/.";

pub fn run(args: &[String]) -> Result<()> {
    let known = ["--steps", "--threads", "--data"];
    if let Some(a) = args.iter().find(|a| a.starts_with("--") && !known.contains(&a.as_str())) {
        bail!("unknown option {a}\n\n{USAGE}");
    }
    let steps = value(args, "--steps").unwrap_or("3000");
    let threads = value(args, "--threads").unwrap_or("2");
    let data = match value(args, "--data") {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("FM_DATA_DIR") {
            Some(dir) => Path::new(&dir).join("us-airports-2d").join("airports.csv"),
            None => bail!("give --data AIRPORTS_CSV or set FM_DATA_DIR (the folder holding us-airports-2d/)"),
        },
    };
    if !data.is_file() {
        bail!("{}: no such file (the vega airports CSV)", data.display());
    }
    let python = flow_matching_python()?;
    crate::cargo(&["build", "--release", "-p", "fm-bench"], &[])?;
    let root = crate::bench::target_dir().join("riemannian-compare");
    let bench = crate::bench::target_dir().join("release").join("fm-bench");
    let fm_bench = |extra: &[&str]| -> Result<String> {
        let out = Command::new(&bench)
            .args(["riemannian", "--steps", steps, "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&root)
            .args(extra)
            .env("RAYON_NUM_THREADS", threads)
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run fm-bench riemannian")?;
        if !out.status.success() {
            bail!("fm-bench riemannian failed ({})", out.status);
        }
        Ok(last_line(&out.stdout))
    };
    fm_bench(&["--split-only"])?;
    let peer_samples = root.join("peer-samples.csv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join("riemannian_peer.py");
    eprintln!("$ python riemannian_peer.py --steps {steps} --threads {threads}");
    let peer = Command::new(&python)
        .arg(&script)
        .arg("--train")
        .arg(root.join("train-xyz.csv"))
        .arg("--test")
        .arg(root.join("test-xyz.csv"))
        .args(["--steps", steps, "--threads", threads, "--n-samples", "5000", "--sample-steps", "100"])
        .args(["--likelihood-steps", "100", "--samples-out"])
        .arg(&peer_samples)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run riemannian_peer.py")?;
    if !peer.status.success() {
        bail!("riemannian_peer.py failed ({})", peer.status);
    }
    let peer = last_line(&peer.stdout);
    eprintln!("$ fm-bench riemannian --steps {steps}");
    let peer_arg = peer_samples.display().to_string();
    let fm = fm_bench(&["--peer-samples", &peer_arg])?;
    let get = |line: &str, key: &str| number(line, key).with_context(|| format!("no `{key}` in {line}"));
    println!(
        "\nUS airports on S² ({} training, {} held-out rows), {steps} steps of batch 512, {threads} threads",
        get(&fm, "n_train")?,
        get(&fm, "n_test")?
    );
    println!("| | training steps/s | test NLL (nats) | likelihood time | sampling 5000 (100 midpoint steps) | energy distance to the test set |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| flow_matching (PyTorch) | {:.1} | {:.3} ± {:.3} | {:.1} s | {:.2} s | {:.5} |",
        get(&peer, "steps_per_s")?,
        get(&peer, "nll_nats")?,
        get(&peer, "nll_se")?,
        get(&peer, "likelihood_seconds")?,
        get(&peer, "sample_seconds")?,
        get(&fm, "energy_peer")?,
    );
    println!(
        "| fm | {:.1} | {:.3} ± {:.3} | {:.1} s | {:.2} s | {:.5} |",
        get(&fm, "steps_per_s")?,
        get(&fm, "nll_nats")?,
        get(&fm, "nll_se")?,
        get(&fm, "likelihood_seconds")?,
        get(&fm, "sample_seconds")?,
        get(&fm, "energy_fm")?,
    );
    println!("| uniform density | | {:.3} | | | |", get(&fm, "uniform_nll")?);
    for k in [5, 10, 25, 50, 100] {
        println!(
            "| von Mises–Fisher mixture, {k} components (EM) | | {:.3} ± {:.3} | | | |",
            get(&fm, &format!("vmf_{k}_nll"))?,
            get(&fm, &format!("vmf_{k}_se"))?
        );
    }
    println!(
        "\nthe energy distance of the {} training airports to the test set (a sampler of the data's own distribution): {:.5}",
        get(&fm, "n_train")?,
        get(&fm, "energy_train_floor")?
    );
    println!("peer: {peer}\nfm:   {fm}");
    Ok(())
}
