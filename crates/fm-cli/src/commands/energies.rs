//! `fm energies`: planar flows fitted by reverse KL to the test energies U1–U4
//! (Rezende & Mohamed 2015, Fig. 3; docs/reference/flows.md).
//!
//! # What is trained
//! A K-layer planar flow `q` minimises `E_q[log q + β_t U_train]` with Adam and
//! the annealing `β_t = min(1, 0.01 + t/N)` (`--anneal-steps N`; the paper's
//! `N = 10⁴`). For U1, `U_train = U₁`. U2–U4 do not confine `z₁` (their `e^{−U}`
//! is not integrable on ℝ²), so their target is `p` restricted to the box
//! `B = [−4, 4]²` and `U_train = U + Σ_i ½ (max(|z_i| − 4, 0) / 0.1)²`, a soft
//! wall outside the box.
//!
//! # What is reported (from `--eval-n` fresh samples of `q`)
//! - U1: `KL(q‖p) = E_q[log q + U₁] + log Z₁`, `log Z₁ = 1.8775`.
//! - U2–U4: `KL(q_B‖p_B) = E_q[log q + U | z ∈ B] − log q(B) + log Z_B` with
//!   `log Z_B` = 2.0821 / 2.6417 / 2.6846 (docs/reference/flows.md), where `q_B` is `q`
//!   conditioned on the box and `p_B` is `p` restricted to it, together with
//!   the mass of `q` outside the box, `mass_outside_box = 1 − q(B)`.
//! - `free_energy = E_q[log q + U]` over all samples (no wall), for every energy.
//!
//! The figure shows `exp(log q)` on a grid, with the exact planar log-density
//! (the numerical inverse of [`fm_models::flows::PlanarLayer`]), beside the target `e^{−U}/Z_B`.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle::{DType, Device, Tensor};
use fm_core::energy::{EnergyBox, TestEnergy};
use fm_core::SeededRng;
use fm_models::flows::{annealed_beta, NormalizingFlow};
use fm_models::optim::{Adam, AdamParams};
use plotters::prelude::*;
use serde_json::json;

use crate::cli::EnergiesArgs;
use crate::io::print_json;
use crate::plot::ensure_font;
use crate::plot_density::heat_panel;

/// Half-width of the box `[−L, L]²` of U2–U4's target.
const BOX: f64 = 4.0;
/// Width of the soft wall outside the box.
const WALL_WIDTH: f64 = 0.1;
/// Samples per chunk of the final estimate.
const EVAL_CHUNK: usize = 5000;

/// The training energy: `U`, plus the soft wall outside the box for U2–U4.
fn train_energy(e: TestEnergy, z: &Tensor) -> fm_models::Result<Tensor> {
    let u = e.energy(z)?;
    if e == TestEnergy::U1 {
        return Ok(u);
    }
    let excess = z.abs()?.affine(1.0 / WALL_WIDTH, -BOX / WALL_WIDTH)?.relu()?;
    Ok((u + excess.sqr()?.sum(1)?.affine(0.5, 0.0)?)?)
}

/// The numbers of one fit.
struct Fit {
    energy: TestEnergy,
    layers: usize,
    kl: Option<f64>,
    kl_stderr: Option<f64>,
    free_energy: f64,
    mass_outside_box: f64,
    log_z: f64,
    loss_first: f64,
    loss_last: f64,
    seconds: f64,
    density: Vec<f64>,
}

fn target_name(e: TestEnergy) -> &'static str {
    if e == TestEnergy::U1 {
        "p on R^2"
    } else {
        "p restricted to [-4,4]^2"
    }
}

/// Mean and standard error of `v` (NaN for no values).
fn mean_se(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, (var / n).sqrt())
}

/// The final estimates from `n` fresh samples.
fn evaluate(
    flow: &NormalizingFlow,
    e: TestEnergy,
    n: usize,
    rng: &mut SeededRng,
) -> Result<(Option<f64>, Option<f64>, f64, f64)> {
    let (mut all, mut inside) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut left = n;
    while left > 0 {
        let b = left.min(EVAL_CHUNK);
        left -= b;
        let (x, log_q) = flow.sample_with_log_prob(b, rng)?;
        let f = (log_q + e.energy(&x)?)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let pts = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        for (v, p) in f.into_iter().zip(pts) {
            all.push(v);
            if p.iter().all(|c| c.abs() <= BOX) {
                inside.push(v);
            }
        }
    }
    let mass_in = inside.len() as f64 / n as f64;
    let (free_energy, f_se) = mean_se(&all);
    let log_z = e.log_z(EnergyBox::Four);
    let (kl, se) = if e == TestEnergy::U1 {
        (Some(free_energy + log_z), Some(f_se))
    } else if inside.is_empty() {
        (None, None)
    } else {
        let (m, s) = mean_se(&inside);
        (Some(m - mass_in.ln() + log_z), Some(s))
    };
    Ok((kl.filter(|v| v.is_finite()), se, free_energy, 1.0 - mass_in))
}

/// The grid's cell centres over the box, row-major with `y` outer.
fn grid_points(g: usize) -> Vec<f32> {
    let h = 2.0 * BOX / g as f64;
    let mut v = Vec::with_capacity(2 * g * g);
    for i in 0..g {
        for j in 0..g {
            v.push((-BOX + (j as f64 + 0.5) * h) as f32);
            v.push((-BOX + (i as f64 + 0.5) * h) as f32);
        }
    }
    v
}

/// `exp(log q)` at `points` (exact, through the numerical inverse).
fn flow_density(flow: &NormalizingFlow, points: &[f32], device: &Device) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(points.len() / 2);
    for chunk in points.chunks(2 * 2500) {
        let x = Tensor::from_vec(chunk.to_vec(), (chunk.len() / 2, 2), device)?;
        out.extend(flow.log_prob(&x)?.to_dtype(DType::F64)?.to_vec1::<f64>()?.into_iter().map(f64::exp));
    }
    Ok(out)
}

fn target_density(e: TestEnergy, points: &[f32], device: &Device) -> Result<Vec<f64>> {
    let x = Tensor::from_vec(points.to_vec(), (points.len() / 2, 2), device)?;
    let log_z = e.log_z(EnergyBox::Four);
    Ok(e.energy(&x)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|u| (-u - log_z).exp())
        .collect())
}

fn check_args(a: &EnergiesArgs) -> Result<Vec<TestEnergy>> {
    if a.layers.is_empty() {
        bail!("--layers needs at least one number of layers, e.g. 2,8,32");
    }
    if let Some(k) = a.layers.iter().find(|&&k| k == 0) {
        bail!("--layers must be at least 1, got {k}");
    }
    let energies = a
        .energies
        .iter()
        .map(|s| {
            s.parse::<TestEnergy>()
                .map_err(|_| anyhow!("--energies: unknown energy `{s}`; valid: u1, u2, u3, u4"))
        })
        .collect::<Result<Vec<_>>>()?;
    if energies.is_empty() {
        bail!("--energies needs at least one of u1, u2, u3, u4");
    }
    if a.steps == 0 {
        bail!("--steps must be at least 1, got 0");
    }
    if a.anneal_steps == Some(0) {
        bail!("--anneal-steps must be at least 1, got 0");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    if a.eval_n == 0 {
        bail!("--eval-n must be at least 1, got 0");
    }
    if a.grid < 2 {
        bail!("--grid must be at least 2, got {}", a.grid);
    }
    Ok(energies)
}

pub fn run(a: EnergiesArgs) -> Result<()> {
    let device = crate::device::selected();
    let energies = check_args(&a)?;
    let anneal = a.anneal_steps.unwrap_or(if a.steps >= 20_000 { 10_000 } else { (a.steps / 2).max(1) });
    let cannot = || format!("--out {}: cannot write there", a.out.display());
    std::fs::create_dir_all(&a.out).with_context(cannot)?;
    std::fs::write(a.out.join(".fm-write-test"), b"").with_context(cannot)?;
    let _ = std::fs::remove_file(a.out.join(".fm-write-test"));
    let log = |t: String| if a.json { eprintln!("{t}") } else { println!("{t}") };
    log(format!(
        "planar flows by reverse KL: energies {}, K = {}; {} Adam steps (lr {}), batch {}, β_t = min(1, 0.01 + t/{anneal}), seed {}",
        energies.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(","),
        a.layers.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(","),
        a.steps,
        a.lr,
        a.batch_size,
        a.seed
    ));
    log("U1: KL(q||p) on R^2 (log Z = 1.8775). U2-U4: target p restricted to [-4,4]^2 (soft wall outside the box \
         in training); KL(q_box||p_box) with q_box = q conditioned on the box and the box's log Z, plus the mass of \
         q outside the box."
        .to_string());
    let grid = grid_points(a.grid);
    let total = energies.len() * a.layers.len() * a.steps;
    let pb = crate::progress::bar(total, a.quiet, "{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}");
    let mut fits = Vec::new();
    for &e in &energies {
        for &k in &a.layers {
            let start = Instant::now();
            let stream = format!("energies-{e}-{k}");
            let mut init_rng = SeededRng::for_stream(a.seed, &format!("{stream}-init"));
            let mut rng = SeededRng::for_stream(a.seed, &format!("{stream}-noise"));
            let (flow, varmap) = NormalizingFlow::planar(2, k, &mut init_rng, DType::F32, &device)?;
            let mut opt = Adam::new(&varmap, AdamParams::with_lr(a.lr))?;
            let window = (a.steps / 10).clamp(1, 200);
            let (mut first, mut last) = (Vec::new(), std::collections::VecDeque::with_capacity(window));
            for step in 0..a.steps {
                let beta = annealed_beta(step, anneal);
                let loss = flow.reverse_kl_loss(|z| train_energy(e, z), a.batch_size, beta, &mut rng)?;
                let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !v.is_finite() {
                    pb.finish_and_clear();
                    bail!("{e}, K = {k}: the loss became {v} at step {}; lower --lr", step + 1);
                }
                opt.backward_step(&loss)?;
                if first.len() < window {
                    first.push(v);
                }
                if last.len() == window {
                    last.pop_front();
                }
                last.push_back(v);
                if step % 50 == 0 {
                    pb.set_message(format!("{e} K={k} loss {v:.3} β {beta:.2}"));
                    pb.set_position((fits.len() * a.steps + step) as u64);
                }
            }
            let mut eval_rng = SeededRng::for_stream(a.seed, &format!("{stream}-eval"));
            let (kl, kl_stderr, free_energy, mass_outside_box) = evaluate(&flow, e, a.eval_n, &mut eval_rng)?;
            let density = flow_density(&flow, &grid, &device)?;
            let fit = Fit {
                energy: e,
                layers: k,
                kl,
                kl_stderr,
                free_energy,
                mass_outside_box,
                log_z: e.log_z(EnergyBox::Four),
                loss_first: first.iter().sum::<f64>() / first.len().max(1) as f64,
                loss_last: last.iter().sum::<f64>() / last.len().max(1) as f64,
                seconds: start.elapsed().as_secs_f64(),
                density,
            };
            pb.suspend(|| {
                log(format!(
                    "{e} K={k:<3} KL {} ± {}  F {:.4}  mass outside box {:.4}  ({:.1} s)",
                    fit.kl.map_or("n/a".into(), |v| format!("{v:.4}")),
                    fit.kl_stderr.map_or("n/a".into(), |v| format!("{v:.4}")),
                    fit.free_energy,
                    fit.mass_outside_box,
                    fit.seconds
                ))
            });
            fits.push(fit);
        }
    }
    pb.finish_and_clear();

    let csv_path = a.out.join("results.csv");
    let mut csv = String::from(
        "energy,layers,steps,anneal_steps,kl,kl_stderr,free_energy,log_z,target,mass_outside_box,loss_first,loss_last,seconds\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
    for f in &fits {
        csv.push_str(&format!(
            "{},{},{},{anneal},{},{},{},{},{},{},{},{},{:.2}\n",
            f.energy,
            f.layers,
            a.steps,
            opt(f.kl),
            opt(f.kl_stderr),
            f.free_energy,
            f.log_z,
            target_name(f.energy),
            f.mass_outside_box,
            f.loss_first,
            f.loss_last,
            f.seconds
        ));
    }
    fm_models::checkpoint::atomic_write(&csv_path, csv.as_bytes())
        .with_context(|| format!("--out: cannot write {}", csv_path.display()))?;
    let plot_path = a.out.join("densities.png");
    let mut targets = Vec::new();
    for &e in &energies {
        targets.push(target_density(e, &grid, &device)?);
    }
    densities_figure(&plot_path, &energies, &a.layers, &targets, &fits, a.grid, a.steps)?;
    log(format!("results: {}; figure: {}", csv_path.display(), plot_path.display()));
    if a.json {
        let results: Vec<_> = fits
            .iter()
            .map(|f| {
                json!({
                    "energy": f.energy.to_string(),
                    "layers": f.layers,
                    "kl": f.kl,
                    "kl_stderr": f.kl_stderr,
                    "mass_outside_box": f.mass_outside_box,
                    "free_energy": f.free_energy,
                    "log_z": f.log_z,
                    "target": target_name(f.energy),
                    "loss_first": f.loss_first,
                    "loss_last": f.loss_last,
                    "seconds": f.seconds,
                })
            })
            .collect();
        print_json(&json!({
            "results": results,
            "steps": a.steps,
            "anneal_steps": anneal,
            "batch_size": a.batch_size,
            "lr": a.lr,
            "eval_n": a.eval_n,
            "box": [-BOX, BOX],
            "reported": "u1: KL(q||p) = E_q[log q + U] + log Z1; u2-u4: KL(q_box||p_box) = E_q[log q + U | box] - log q(box) + log Z_box on [-4,4]^2, with mass_outside_box = 1 - q(box)",
            "csv": csv_path,
            "plot": plot_path,
        }))?;
    }
    Ok(())
}

/// Rows: energies; columns: the target `e^{−U}/Z` on the box, then `q` for each K.
fn densities_figure(
    path: &Path,
    energies: &[TestEnergy],
    layers: &[usize],
    targets: &[Vec<f64>],
    fits: &[Fit],
    g: usize,
    steps: usize,
) -> Result<()> {
    ensure_font();
    let (rows, cols) = (energies.len(), layers.len() + 1);
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let root = BitMapBackend::new(path, (cols as u32 * 320, rows as u32 * 320 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(
            &format!(
                "planar flows by reverse KL, {steps} steps: exact density exp(log q) on [-4,4]^2 (KL: U1 on R^2; U2-U4 on the box)"
            ),
            ("sans-serif", 18),
        )
        .map_err(|e| err(&e))?;
    let panels = root.split_evenly((rows, cols));
    let r = -BOX..BOX;
    for (i, &e) in energies.iter().enumerate() {
        heat_panel(&panels[i * cols], &format!("{e} target"), &r, &r, g, &targets[i], &err)?;
        for (j, &k) in layers.iter().enumerate() {
            let f = &fits[i * layers.len() + j];
            let caption = format!("{e} K={k}: KL {}", f.kl.map_or("n/a".into(), |v| format!("{v:.3}")));
            heat_panel(&panels[i * cols + j + 1], &caption, &r, &r, g, &f.density, &err)?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
