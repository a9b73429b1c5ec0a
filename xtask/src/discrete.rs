//! `cargo xtask discrete`: fm against Meta's `flow_matching` on its 2-D
//! discrete example, in one run on one machine.
//!
//! `xtask/python/discrete_peer.py` (in the bench's venv, with
//! `flow_matching` installed when missing) trains the notebook's model with
//! the library's path, loss and Euler sampler, writes held-out points of its
//! own generator and its samples, and prints its ELBO and speeds; `fm-bench
//! discrete` trains fm's model in the same setting through the library calls
//! `fm train` makes, samples it, computes its ELBO on the same points, and the
//! energy distance of both sample sets to the exact target (every cell of
//! the data's squares, equally likely; the held-out points scored the same
//! way give the floor). Both ELBOs are the same estimator (stratified over
//! `τ = −log(1 − κ)`, 64 strata).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub const USAGE: &str = "usage: cargo xtask discrete [--steps N] [--source mask|uniform] [--objective generalized-kl|cross-entropy] [--threads N]

Trains flow_matching's 2-D discrete example (checkerboard, 128 values per coordinate, κ = t², MLP of
width 128, Adam 1e-3, batch 4096) with flow_matching in PyTorch and with fm, the same number of
steps each (default 3000; the notebook's 30001 on 2 cores takes about an hour for PyTorch), and
prints one table: training steps/s, the ELBO on 20,000 held-out points (nats per point and bits
per token, stratified over 64 cells of τ), sampling time with 64 CTMC steps, and the energy
distance of 20,000 samples to the exact target (the held-out points' own distance is the floor of a
perfect sampler at this size). Defaults: the notebook's uniform source and
generalized-KL loss. Files go to target/discrete-compare/.";

pub(crate) fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// The value of `"key": <number>` in a one-line JSON object.
pub(crate) fn number(line: &str, key: &str) -> Option<f64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

pub(crate) fn last_line(out: &[u8]) -> String {
    String::from_utf8_lossy(out).lines().last().unwrap_or_default().to_string()
}

/// The bench environment's Python with `flow_matching` (installed when
/// missing, with `tqdm`, which it imports without declaring it).
pub(crate) fn flow_matching_python() -> Result<std::path::PathBuf> {
    let python = crate::bench::peer_python()?;
    let has_fm = Command::new(&python)
        .args(["-c", "import flow_matching, flow_matching.solver"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_fm {
        eprintln!("installing flow_matching into the bench environment");
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "flow_matching==1.0.10", "tqdm"])
            .status()
            .map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            bail!("could not install flow_matching");
        }
    }
    Ok(python)
}

pub fn run(args: &[String]) -> Result<()> {
    let known = ["--steps", "--source", "--objective", "--threads"];
    if let Some(a) = args.iter().find(|a| a.starts_with("--") && !known.contains(&a.as_str())) {
        bail!("unknown option {a}\n\n{USAGE}");
    }
    let steps = value(args, "--steps").unwrap_or("3000");
    let source = value(args, "--source").unwrap_or("uniform");
    let objective = value(args, "--objective").unwrap_or("generalized-kl");
    let threads = value(args, "--threads").unwrap_or("2");
    let loss = match objective {
        "generalized-kl" | "kl" => "kl",
        "cross-entropy" | "ce" => "ce",
        other => bail!("--objective: unknown `{other}`; valid: generalized-kl, cross-entropy"),
    };
    let python = flow_matching_python()?;
    crate::cargo(&["build", "--release", "-p", "fm-bench"], &[])?;
    let root = crate::bench::target_dir().join("discrete-compare");
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let test = root.join("test.csv");
    let peer_samples = root.join("peer-samples.npy");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join("discrete_peer.py");
    eprintln!("$ python discrete_peer.py --steps {steps} --source {source} --loss {loss}");
    let peer = Command::new(&python)
        .arg(&script)
        .args(["--steps", steps, "--source", source, "--loss", loss, "--threads", threads])
        .args(["--n-samples", "20000", "--sample-steps", "64", "--elbo-nodes", "64", "--n-test", "20000"])
        .arg("--write-test-csv")
        .arg(&test)
        .arg("--samples-out")
        .arg(&peer_samples)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run discrete_peer.py")?;
    if !peer.status.success() {
        bail!("discrete_peer.py failed ({})", peer.status);
    }
    let peer = last_line(&peer.stdout);
    let bench = crate::bench::target_dir().join("release").join("fm-bench");
    eprintln!("$ fm-bench discrete --steps {steps} --source {source} --objective {objective}");
    let fm = Command::new(&bench)
        .args(["discrete", "--steps", steps, "--source", source, "--objective", objective])
        .args(["--n-samples", "20000", "--sample-steps", "64", "--elbo-nodes", "64", "--energy-n", "20000"])
        .arg("--out")
        .arg(root.join("fm"))
        .arg("--test")
        .arg(&test)
        .arg("--peer-samples")
        .arg(&peer_samples)
        .env("RAYON_NUM_THREADS", threads)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run fm-bench discrete")?;
    if !fm.status.success() {
        bail!("fm-bench discrete failed ({})", fm.status);
    }
    let fm = last_line(&fm.stdout);
    let get = |line: &str, key: &str| number(line, key).with_context(|| format!("no `{key}` in {line}"));
    println!(
        "\n2-D discrete checkerboard (128 × 128), {steps} steps of batch 4096, source {source}, loss {objective}, {threads} threads"
    );
    println!(
        "| | training steps/s | ELBO (nats/point) | bits/token | sampling 20,000 (64 steps) | energy distance to the target |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| flow_matching (PyTorch) | {:.2} | {:.4} ± {:.4} | {:.4} | {:.2} s | {:.5} |",
        get(&peer, "steps_per_s")?,
        get(&peer, "elbo_nats")?,
        get(&peer, "elbo_stderr_nats")?,
        get(&peer, "elbo_bits_per_token")?,
        get(&peer, "sample_seconds")?,
        get(&fm, "energy_peer")?,
    );
    println!(
        "| fm | {:.2} | {:.4} ± {:.4} | {:.4} | {:.2} s | {:.5} |",
        get(&fm, "steps_per_s")?,
        get(&fm, "elbo_nats")?,
        get(&fm, "elbo_stderr_nats")?,
        get(&fm, "elbo_bits_per_token")?,
        get(&fm, "sample_seconds")?,
        get(&fm, "energy_fm")?,
    );
    println!(
        "\nthe data's entropy: {:.4} nats (uniform on 8192 cells); the 20,000 held-out points' energy distance \
         to the target (the floor of a perfect sampler): {:.5}; fm's energy distance is the mean over sampling \
         seeds 1–5 (each in energy_fm_seeds), flow_matching's one sample set",
        (8192f64).ln(),
        get(&fm, "energy_held_out")?
    );
    println!("peer: {peer}\nfm:   {fm}");
    Ok(())
}
